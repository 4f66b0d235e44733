// Shared plumbing of the `moin` subcommands: the common flags, option resolution, the deferred action.
// The CLI stays thin: each command parses flags into its stage's options struct and calls the library.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
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
  cmd->footer(cmd->get_footer() + "\nConfig keys (in --config FILE.json, or --set key=value; explicit flags override the file,\n"
              "--set overrides both):\n" +
              config::format_reference(config::describe(defaults)));
}

// The flags of an options struct, one per config key, made from T::visit(): key `a.b_c` is the flag
// `--a-b-c`, described by the key's doc. `names` gives some keys other names as well (the short ones users
// know: {"kmeans.k", "--clusters"}), listed first. A name the command already has (--config, --set, ...)
// is left out. Adding a field to an options struct therefore adds its flag; nothing here changes.
class Flags {
 public:
  using Names = std::vector<std::pair<std::string, std::string>>;  // config key -> "--name[,-n]"
  enum class Kind { kBool, kInt, kNumber, kString, kIntList, kNumberList, kStringList };

  // The config keys the user gave on the command line, as a nested JSON object (what resolve() takes).
  // UserError naming the flag when a value does not parse.
  json given() const;

  void add(CLI::App* cmd, const std::string& key, const std::string& doc, Kind kind, const Names& names);

 private:
  struct Entry {
    std::string key, flag;
    Kind kind;
    std::string text;
    std::vector<std::string> texts;
    bool on = false;
    CLI::Option* opt = nullptr;
  };
  std::deque<Entry> entries_;  // stable addresses: CLI11 writes into them
};

namespace detail {
template <class T> struct is_vector : std::false_type {};
template <class T, class A> struct is_vector<std::vector<T, A>> : std::true_type {};

template <class F> bool flag_kind(Flags::Kind& kind) {
  if constexpr (std::is_same_v<F, bool>) kind = Flags::Kind::kBool;
  else if constexpr (std::is_integral_v<F>) kind = Flags::Kind::kInt;
  else if constexpr (std::is_floating_point_v<F>) kind = Flags::Kind::kNumber;
  else if constexpr (std::is_same_v<F, std::string>) kind = Flags::Kind::kString;
  else if constexpr (is_vector<F>::value) {
    using E = typename F::value_type;
    if constexpr (std::is_same_v<E, std::string>) kind = Flags::Kind::kStringList;
    else if constexpr (std::is_integral_v<E> && !std::is_same_v<E, bool>) kind = Flags::Kind::kIntList;
    else if constexpr (std::is_floating_point_v<E>) kind = Flags::Kind::kNumberList;
    else return false;
  } else {
    return false;  // maps and the like: config file or --set only
  }
  return true;
}

struct FlagMaker {
  CLI::App* cmd;
  Flags& flags;
  const Flags::Names& names;
  std::string prefix;
  template <class F> void operator()(const char* key, F& field, const char* doc) {
    if constexpr (config::is_options_v<F>) {
      FlagMaker inner{cmd, flags, names, prefix + key + "."};
      field.visit(inner);
    } else {
      Flags::Kind kind{};
      if (flag_kind<F>(kind)) flags.add(cmd, prefix + key, doc, kind, names);
    }
  }
};
}  // namespace detail

// Declares T's flags on `cmd` (and appends T's config reference to its help).
Flags& new_flags();
template <class T> Flags& add_flags(CLI::App* cmd, const Flags::Names& names = {}) {
  Flags& flags = new_flags();
  T defaults{};
  detail::FlagMaker maker{cmd, flags, names, ""};
  defaults.visit(maker);
  add_reference<T>(cmd);
  return flags;
}

// Resolves the options: defaults <- --config <- explicit flags <- --set.
template <class T> T resolve(const Common& c, const json& flags = json::object(), const T& defaults = T{}) {
  return config::load<T>(c.config, c.sets, flags, defaults);
}

// Writes `<dir>/<name>.config.json` (the effective config) so any run can be reproduced.
template <class T> void save_effective_config(const std::string& dir, const std::string& name, const T& opts) {
  fs::write_json_atomic(std::filesystem::path(dir) / (name + ".config.json"), config::to_json(opts));
}
// The same, in the folder of a report file (`file`'s parent, "." for a bare name).
template <class T> void save_config_beside(const std::string& file, const std::string& name, const T& opts) {
  auto dir = std::filesystem::path(file).parent_path();
  save_effective_config(dir.empty() ? "." : dir.string(), name, opts);
}

// A command's report (`json`, else `markdown`; none when both are empty), locked while the command runs: one
// writer per report (other reports in the same folder may be written at once), and the temporary files a
// killed run left in its folder are removed.
inline std::unique_ptr<fs::FolderLock> lock_report(const std::string& json, const std::string& markdown) {
  const std::filesystem::path file = !json.empty() ? json : markdown;
  if (file.empty()) return nullptr;
  auto dir = file.parent_path();
  return std::make_unique<fs::FolderLock>(dir.empty() ? std::filesystem::path(".") : dir,
                                          "." + file.filename().string() + ".lock");
}

// Before CLI11 parses: every "--name" in argv must be a flag of the command it follows, else UserError
// naming it and the closest valid flag. (CLI11 would read an unknown flag's value as a positional: `moin
// partition --clusterz 4` reported "step: 4 not in {...}".)
void check_flags(CLI::App& app, int argc, char** argv);

// Each command file registers itself here; main() calls them in order.
void register_tokenizer(CLI::App& app);
void register_config(CLI::App& app);
void register_route(CLI::App& app);
void register_eval(CLI::App& app);       // `eval`, with its subcommands:
void register_eval_ppl(CLI::App* eval);      // eval ppl
void register_eval_routing(CLI::App* eval);  // eval routing
void register_eval_metrics(CLI::App* eval);  // eval nmi
void register_run(CLI::App& app);
void register_partition(CLI::App& app);
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
