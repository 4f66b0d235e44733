// moin convert llama2c: import a llama2.c checkpoint into the Hugging Face layout.
#include "cli.h"
#include "moin/model/llama2c.h"

namespace moin::cli {

void register_convert(CLI::App& app) {
  auto* conv = app.add_subcommand("convert", "Convert checkpoints of other programs to the Hugging Face layout");
  conv->require_subcommand(1);
  auto* cmd = conv->add_subcommand("llama2c", "Import a llama2.c .bin (legacy or version 1, float32)");
  auto& common = add_common(cmd);
  auto& flags = add_flags<Llama2cConvertOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    auto opts = resolve<Llama2cConvertOptions>(common, flags.given());
    convert_llama2c(opts);
    save_effective_config(opts.output, "convert", opts);
    spdlog::info("wrote {}", opts.output);
  });
}

}  // namespace moin::cli
