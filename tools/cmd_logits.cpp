// moin logits: debugging tool, writes a checkpoint's logits on given tokens to a safetensors file.
#include "cli.h"
#include "moin/model/inspect.h"

namespace moin::cli {

void register_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Debugging: write a model's logits on given token ids (safetensors)");
  auto& common = add_common(cmd);
  // --tokens takes the ids as separate arguments or in one ("1 2 3").
  auto& flags = add_flags<LogitsDumpOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    dump_logits(resolve<LogitsDumpOptions>(common, flags.given()));
  });
}

}  // namespace moin::cli
