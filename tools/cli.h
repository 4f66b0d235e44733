// Shared plumbing of the `moin` subcommands: the common flags, option resolution, the deferred action.
// The CLI stays thin: each command parses flags into its stage's options struct and calls the library.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "moin/core/config.h"
#include "moin/core/fs.h"
#include "moin/core/log.h"

namespace moin::cli {

using json = nlohmann::json;

// --config, --set, --log-level, --quiet: every command has them.
struct Common {
  std::string config;
  std::vector<std::string> sets;
  std::string log_level = "info";
  bool quiet = false;
};

Common& add_common(CLI::App* cmd);

// The command's action runs after parsing, inside main's error handling (UserError -> exit 2, other
// exceptions -> exit 1), with logging initialised from the common flags.
void set_action(CLI::App* cmd, const Common& common, std::function<void()> action);

// Appends the reference of every config key of T to the command's --help.
template <class T> void add_reference(CLI::App* cmd, const T& defaults = T{}) {
  cmd->footer("\nConfig keys (in --config FILE.json, or --set key=value; explicit flags override the file,\n"
              "--set overrides both):\n" +
              config::format_reference(config::describe(defaults)));
}

// Records `value` under the dotted `key` of `flags` when the user gave option `opt`.
template <class T> void flag(json& flags, const CLI::Option* opt, const std::string& key, const T& value) {
  if (!opt || opt->count() == 0) return;
  json* node = &flags;
  std::size_t start = 0, dot;
  while ((dot = key.find('.', start)) != std::string::npos) {
    node = &(*node)[key.substr(start, dot - start)];
    start = dot + 1;
  }
  (*node)[key.substr(start)] = value;
}

// Resolves the options: defaults <- --config <- explicit flags <- --set.
template <class T> T resolve(const Common& c, const json& flags = json::object(), const T& defaults = T{}) {
  return config::load<T>(c.config, c.sets, flags, defaults);
}

// Writes `<dir>/<name>.config.json` (the effective config) so any run can be reproduced.
template <class T> void save_effective_config(const std::string& dir, const std::string& name, const T& opts) {
  fs::write_json_atomic(std::filesystem::path(dir) / (name + ".config.json"), config::to_json(opts));
}

// Each command file registers itself here; main() calls them in order.
void register_tokenizer(CLI::App& app);
void register_config(CLI::App& app);
void register_route(CLI::App& app);
void register_eval(CLI::App& app);
void register_eval_ppl(CLI::App* eval);  // under `eval`, called by register_eval
void register_run(CLI::App& app);
void register_partition(CLI::App& app);
void register_eval_metrics(CLI::App& app);
void register_train(CLI::App& app);
void register_launch(CLI::App& app);
void register_convert(CLI::App& app);
void register_init_model(CLI::App& app);
void register_generate(CLI::App& app);
void register_logits(CLI::App& app);
void register_lora(CLI::App& app);
void register_embed(CLI::App& app);
void register_inspect(CLI::App& app);

}  // namespace moin::cli
