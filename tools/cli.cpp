#include "cli.h"

#include "moin/core/strings.h"

#include <algorithm>
#include <deque>
#include <sstream>

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

void check_flags(CLI::App& app, int argc, char** argv) {
  CLI::App* cmd = &app;
  std::string where = "moin";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") return;  // the rest are values
    if (arg.rfind("--", 0) != 0) {
      CLI::App* sub = nullptr;
      for (CLI::App* c : cmd->get_subcommands(std::function<bool(CLI::App*)>{}))
        if (c->get_name() == arg) sub = c;
      if (sub) {
        cmd = sub;
        where += " " + arg;
      }
      continue;
    }
    const std::string name = arg.substr(2, arg.find('=') == std::string::npos ? std::string::npos : arg.find('=') - 2);
    if (name == "help" || (cmd == &app && name == "version")) continue;
    std::vector<std::string> known;
    bool found = false;
    for (const CLI::Option* opt : cmd->get_options()) {
      for (const auto& l : opt->get_lnames()) {
        known.push_back("--" + l);
        found = found || l == name;
      }
    }
    if (found) continue;
    const std::string best = closest_match("--" + name, known);
    throw UserError("unknown flag --" + name + " for `" + where + "`" +
                    (best.empty() ? std::string() : " (did you mean " + best + "?)") + "; see `" + where + " --help`");
  }
}

Flags& new_flags() {
  static std::deque<Flags> storage;  // one per command; stable addresses
  return storage.emplace_back();
}

namespace {

std::string flag_name(const std::string& key) {
  std::string s = "--" + key;
  for (char& c : s)
    if (c == '.' || c == '_') c = '-';
  return s;
}

// One value of a numeric flag, checked to be a JSON number (an integer for kInt).
json parse_number(const std::string& flag, const std::string& text, bool integer) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_number() || (integer && !j.is_number_integer()))
    throw UserError(flag + ": \"" + text + "\" is not " + (integer ? "an integer" : "a number"));
  return j;
}

void set_dotted(json& root, const std::string& key, json value) {
  json* node = &root;
  std::size_t start = 0, dot;
  while ((dot = key.find('.', start)) != std::string::npos) {
    node = &(*node)[key.substr(start, dot - start)];
    start = dot + 1;
  }
  (*node)[key.substr(start)] = std::move(value);
}

}  // namespace

void Flags::add(CLI::App* cmd, const std::string& key, const std::string& doc, Kind kind, const Names& names) {
  std::vector<std::string> wanted;
  for (const auto& [k, n] : names)
    if (k == key) {
      std::stringstream ss(n);
      std::string one;
      while (std::getline(ss, one, ',')) wanted.push_back(one);
    }
  wanted.push_back(flag_name(key));
  std::vector<std::string> chosen;  // less those the command has already (or that were listed twice)
  for (const auto& n : wanted)
    if (cmd->get_option_no_throw(n) == nullptr && std::find(chosen.begin(), chosen.end(), n) == chosen.end())
      chosen.push_back(n);
  if (chosen.empty()) return;
  std::string spec;
  for (const auto& n : chosen) spec += (spec.empty() ? "" : ",") + n;
  Entry& e = entries_.emplace_back();
  e.key = key;
  e.flag = chosen.front();
  e.kind = kind;
  const std::string help = doc + " [" + key + "]";
  switch (kind) {
    case Kind::kBool:
      e.opt = cmd->add_flag(spec, e.on, help);
      break;
    case Kind::kInt:
    case Kind::kNumber:
    case Kind::kString:
      e.opt = cmd->add_option(spec, e.text, help);
      e.opt->type_name(kind == Kind::kString ? "TEXT" : kind == Kind::kInt ? "INT" : "NUMBER");
      break;
    default:
      e.opt = cmd->add_option(spec, e.texts, help);
      e.opt->type_name(kind == Kind::kStringList ? "TEXT" : kind == Kind::kIntList ? "INT" : "NUMBER");
      break;
  }
}

json Flags::given() const {
  json out = json::object();
  for (const auto& e : entries_) {
    if (e.opt->count() == 0) continue;
    json v;
    switch (e.kind) {
      case Kind::kBool: v = e.on; break;
      case Kind::kInt: v = parse_number(e.flag, e.text, true); break;
      case Kind::kNumber: v = parse_number(e.flag, e.text, false); break;
      case Kind::kString: v = e.text; break;
      case Kind::kStringList: v = e.texts; break;
      default: {
        // Numbers may come as separate arguments (--clusters 0 1 2), in one ("--tokens '1 2 3'"), or
        // comma-separated (--clusters 3,4,5, as moin launch writes a pack).
        v = json::array();
        for (auto t : e.texts) {
          std::replace(t.begin(), t.end(), ',', ' ');
          std::istringstream ss(t);
          std::string word;
          while (ss >> word) v.push_back(parse_number(e.flag, word, e.kind == Kind::kIntList));
        }
      }
    }
    set_dotted(out, e.key, std::move(v));
  }
  return out;
}

}  // namespace moin::cli
