// moin generate: continue a prompt with a checkpoint (optionally with a LoRA adapter); prints only the
// generated text on stdout.
#include <iostream>

#include "cli.h"
#include "moin/model/generate.h"
#include "moin/route/routed_model.h"

namespace moin::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (greedy or temperature/top-p sampling)");
  auto& common = add_common(cmd);
  static std::string model, tokenizer, adapter, prompt, dtype, device;
  static int max_new = 0;
  static double temperature = 0, top_p = 1;
  static std::uint64_t seed = 0;
  auto* o_model = cmd->add_option("--model", model, "checkpoint folder");
  auto* o_tok = cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (default MODEL/tokenizer.model, else MODEL/tokenizer.json)");
  auto* o_ad = cmd->add_option("--adapter", adapter, "LoRA adapter folder (PEFT layout)");
  auto* o_prompt = cmd->add_option("--prompt", prompt, "text to continue (may be empty: BOS only)");
  auto* o_max = cmd->add_option("--max-new-tokens", max_new, "tokens to generate at most");
  auto* o_t = cmd->add_option("--temperature", temperature, "0 = greedy");
  auto* o_p = cmd->add_option("--top-p", top_p, "nucleus sampling threshold");
  auto* o_seed = cmd->add_option("--seed", seed, "sampler seed");
  auto* o_dt = cmd->add_option("--dtype", dtype, "float32, bfloat16 or float16");
  auto* o_dev = cmd->add_option("--device", device, "cpu, cuda, cuda:N or auto");
  // Routed generation (MoIN): the router picks the expert from the prompt, its adapter is attached.
  static std::string route, experts;
  static int route_prefix = 0;
  cmd->add_option("--route", route, "partition directory: route the prompt to its nearest expert");
  cmd->add_option("--experts", experts, "with --route: folder of the experts' adapters (EXPERTS/<k>/)");
  cmd->add_option("--route-prefix-tokens", route_prefix, "with --route: route on the prompt's first P tokens (0 = all)");
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
    auto opts = resolve<GenerateRunOptions>(common, flags);
    if (!route.empty()) {
      require(!experts.empty(), "generate: --route needs --experts");
      require(opts.adapter.empty(), "generate: --route picks the adapter; do not give --adapter too");
      std::cout << run_generate_routed(opts, route, experts, route_prefix) << std::endl;
      return;
    }
    std::cout << run_generate(opts) << std::endl;
  });
}

}  // namespace moin::cli
