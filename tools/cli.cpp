#include "cli.h"

#include <deque>

namespace moin::cli {

std::function<void()>& pending_action() {
  static std::function<void()> action;
  return action;
}

Common& add_common(CLI::App* cmd) {
  static std::deque<Common> storage;  // one per command; stable addresses
  Common& c = storage.emplace_back();
  cmd->add_option("--config", c.config, "JSON config file (keys listed below)")->check(CLI::ExistingFile);
  cmd->add_option("--set", c.sets, "override one config key: --set dotted.key=value (repeatable)");
  cmd->add_option("--log-level", c.log_level, "trace, debug, info, warn, error or off")->capture_default_str();
  cmd->add_flag("--quiet,-q", c.quiet, "only warnings and errors");
  return c;
}

void set_action(CLI::App* cmd, const Common& common, std::function<void()> action) {
  cmd->callback([&common, action = std::move(action)] {
    pending_action() = [&common, action] {
      log::init(common.log_level, common.quiet);
      action();
    };
  });
}

}  // namespace moin::cli
