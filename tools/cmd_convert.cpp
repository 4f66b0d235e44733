// moin convert llama2c: import a llama2.c checkpoint into the Hugging Face layout.
#include "cli.h"
#include "moin/model/llama2c.h"

namespace moin::cli {

void register_convert(CLI::App& app) {
  auto* conv = app.add_subcommand("convert", "Convert checkpoints of other programs to the Hugging Face layout");
  conv->require_subcommand(1);
  auto* cmd = conv->add_subcommand("llama2c", "Import a llama2.c .bin (legacy or version 1, float32)");
  auto& common = add_common(cmd);
  static std::string input, output, tokenizer, dtype;
  auto* o_in = cmd->add_option("--input", input, "llama2.c checkpoint (.bin)");
  auto* o_out = cmd->add_option("--output", output, "folder to write (config.json, model.safetensors)");
  auto* o_tok = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model to copy in as tokenizer.model");
  auto* o_dt = cmd->add_option("--dtype", dtype, "float32, bfloat16 or float16");
  add_reference<Llama2cConvertOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flag(flags, o_in, "input", input);
    flag(flags, o_out, "output", output);
    flag(flags, o_tok, "tokenizer", tokenizer);
    flag(flags, o_dt, "dtype", dtype);
    auto opts = resolve<Llama2cConvertOptions>(common, flags);
    convert_llama2c(opts);
    save_effective_config(opts.output, "convert", opts);
    spdlog::info("wrote {}", opts.output);
  });
}

}  // namespace moin::cli
