#include "moin/core/config.h"

#include <fstream>
#include <sstream>

#include "moin/core/json.h"
#include "moin/core/strings.h"

namespace moin::config {

namespace detail {

static std::string preview(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + s;
}

void type_error(const std::string& path, const char* expected, const json& got) {
  throw UserError("config: '" + path + "' must be " + expected + ", got " + preview(got));
}

void unknown_key(const std::string& prefix, const std::string& key, const std::vector<std::string>& valid) {
  std::string msg = "config: unknown key '" + prefix + key + "'";
  std::string best = closest_match(key, valid);
  if (!best.empty()) msg += " (did you mean '" + prefix + best + "'?)";
  else msg += "; valid keys" + (prefix.empty() ? std::string() : " under '" + prefix + "'") + ": " + join(valid, ", ");
  throw UserError(msg);
}

}  // namespace detail

json read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError("config: cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_json(ss.str(), "config: " + path);
}

void merge(json& base, const json& patch) {
  if (patch.is_null()) return;
  if (!patch.is_object() || !base.is_object()) {
    base = patch;
    return;
  }
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.value().is_object() && base.contains(it.key()) && base[it.key()].is_object())
      merge(base[it.key()], it.value());
    else
      base[it.key()] = it.value();
  }
}

void apply_override(json& cfg, const std::string& assignment, const json& defaults) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError("--set expects dotted.key=value, got '" + assignment + "'");
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  auto parts = split(key, '.');
  const json* def = &defaults;
  for (const auto& p : parts) {
    if (p.empty()) throw UserError("--set: empty component in key '" + key + "'");
    def = (def && def->is_object() && def->contains(p)) ? &(*def)[p] : nullptr;
  }
  json value;
  if (def && def->is_string()) {
    value = text;
  } else {
    if (json_depth(text) > kMaxJsonDepth)
      throw UserError("--set " + key + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    value = json::parse(text, nullptr, false);
    if (value.is_discarded()) value = text;  // a bare word: let the type check report it against the field's type
  }
  json* node = &cfg;
  std::string walked;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    walked += (walked.empty() ? "" : ".") + parts[i];
    json& child = (*node)[parts[i]];
    if (child.is_null()) child = json::object();
    // A scalar cannot take a sub-key: name the key rather than let the JSON library fail deep inside.
    if (!child.is_object())
      throw UserError("--set " + key + ": '" + walked + "' holds " + detail::preview(child) +
                      ", which has no key '" + parts[i + 1] + "'");
    node = &child;
  }
  (*node)[parts.back()] = value;
}

std::string format_reference(const std::vector<FieldDoc>& docs) {
  std::string out;
  for (const auto& d : docs) {
    out += "  " + d.key + " (" + d.type + ", default " + d.default_value.dump() + ")";
    if (!d.doc.empty()) out += ": " + d.doc;
    out += "\n";
  }
  return out;
}

}  // namespace moin::config
