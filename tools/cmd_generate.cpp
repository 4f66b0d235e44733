// moin generate: continue a prompt with a checkpoint (optionally with a LoRA adapter); prints only the
// generated text on stdout.
#include <iostream>

#include "cli.h"
#include "moin/model/generate.h"

namespace moin::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (greedy or temperature/top-p sampling)");
  auto& common = add_common(cmd);
  static std::string model, tokenizer, adapter, prompt, dtype, device;
  static int max_new = 0;
  static double temperature = 0, top_p = 1;
  static std::uint64_t seed = 0;
  auto* o_model = cmd->add_option("--model", model, "checkpoint folder");
  auto* o_tok = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model (default MODEL/tokenizer.model)");
  auto* o_ad = cmd->add_option("--adapter", adapter, "LoRA adapter folder (PEFT layout)");
  auto* o_prompt = cmd->add_option("--prompt", prompt, "text to continue (may be empty: BOS only)");
  auto* o_max = cmd->add_option("--max-new-tokens", max_new, "tokens to generate at most");
  auto* o_t = cmd->add_option("--temperature", temperature, "0 = greedy");
  auto* o_p = cmd->add_option("--top-p", top_p, "nucleus sampling threshold");
  auto* o_seed = cmd->add_option("--seed", seed, "sampler seed");
  auto* o_dt = cmd->add_option("--dtype", dtype, "float32, bfloat16 or float16");
  auto* o_dev = cmd->add_option("--device", device, "cpu, cuda, cuda:N or auto");
  add_reference<GenerateRunOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flag(flags, o_model, "model", model);
    flag(flags, o_tok, "tokenizer", tokenizer);
    flag(flags, o_ad, "adapter", adapter);
    flag(flags, o_prompt, "prompt", prompt);
    flag(flags, o_max, "generation.max_new_tokens", max_new);
    flag(flags, o_t, "generation.temperature", temperature);
    flag(flags, o_p, "generation.top_p", top_p);
    flag(flags, o_seed, "generation.seed", seed);
    flag(flags, o_dt, "dtype", dtype);
    flag(flags, o_dev, "device", device);
    std::cout << run_generate(resolve<GenerateRunOptions>(common, flags)) << std::endl;
  });
}

}  // namespace moin::cli
