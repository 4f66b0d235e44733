// moin logits: debugging tool, writes a checkpoint's logits on given tokens to a safetensors file.
#include <sstream>

#include "cli.h"
#include "moin/model/inspect.h"

namespace moin::cli {

void register_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Debugging: write a model's logits on given token ids (safetensors)");
  auto& common = add_common(cmd);
  static std::string model, adapter, tokens, output, dtype, device;
  static std::int64_t layer = 0;
  auto* o_model = cmd->add_option("--model", model, "checkpoint folder");
  auto* o_ad = cmd->add_option("--adapter", adapter, "LoRA adapter folder (PEFT layout) to attach");
  auto* o_tokens = cmd->add_option("--tokens", tokens, "space-separated token ids, e.g. \"1 2 3\"");
  auto* o_out = cmd->add_option("--output", output, "safetensors file to write (tensors logits, tokens)");
  auto* o_dt = cmd->add_option("--dtype", dtype, "float32, bfloat16 or float16");
  auto* o_dev = cmd->add_option("--device", device, "cpu, cuda, cuda:N or auto");
  auto* o_layer = cmd->add_option("--hidden-layer", layer, "also write hidden_states of this layer (HF indexing)");
  add_reference<LogitsDumpOptions>(cmd);
  set_action(cmd, common, [=, &common] {
    json flags;
    flag(flags, o_model, "model", model);
    flag(flags, o_ad, "adapter", adapter);
    if (o_tokens->count()) {
      std::vector<std::int64_t> ids;
      std::istringstream ss(tokens);
      std::string word;
      while (ss >> word) {
        try {
          std::size_t used = 0;
          ids.push_back(std::stoll(word, &used));
          if (used != word.size()) throw std::invalid_argument(word);
        } catch (const std::exception&) {
          throw UserError("logits: --tokens holds \"" + word + "\", not a token id");
        }
      }
      flags["tokens"] = ids;
    }
    flag(flags, o_out, "output", output);
    flag(flags, o_dt, "dtype", dtype);
    flag(flags, o_dev, "device", device);
    flag(flags, o_layer, "hidden_layer", layer);
    dump_logits(resolve<LogitsDumpOptions>(common, flags));
  });
}

}  // namespace moin::cli
