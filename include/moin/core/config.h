// Options structs and their JSON configuration, in one place.
//
// Every stage has one `...Options` struct whose fields carry their defaults. The struct lists its fields
// once, in a visit() member, with a one-line doc each (faiss's ClusteringParameters in spirit):
//
//   struct KMeansOptions {
//     int k = 8;            // documented in visit()
//     template <class V> void visit(V& v) { v("k", k, "number of clusters"); }
//     void validate() const { require(k > 0, "k must be positive"); }   // optional
//   };
//
// From that one list come: reading JSON with precise errors (unknown key with the closest valid one,
// wrong type with the expected one), writing the effective config, and the reference printed by --help.
// Nested options structs become nested JSON objects and dotted keys ("lora.rank").
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "moin/core/error.h"

namespace moin::config {

using json = nlohmann::json;

namespace detail {
struct ProbeVisitor {
  template <class F> void operator()(const char*, F&, const char*) {}
};
template <class T, class = void> struct is_options : std::false_type {};
template <class T>
struct is_options<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<ProbeVisitor&>()))>>
    : std::true_type {};
template <class T, class = void> struct has_validate : std::false_type {};
template <class T>
struct has_validate<T, std::void_t<decltype(std::declval<const T&>().validate())>> : std::true_type {};
template <class T> struct is_vector : std::false_type {};
template <class T, class A> struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T> struct is_string_map : std::false_type {};
template <class T> struct is_string_map<std::map<std::string, T>> : std::true_type {};

[[noreturn]] void type_error(const std::string& path, const char* expected, const json& got);
[[noreturn]] void unknown_key(const std::string& path, const std::string& key,
                              const std::vector<std::string>& valid);
}  // namespace detail

template <class T> constexpr bool is_options_v = detail::is_options<T>::value;

template <class T> void read_into(T& opts, const json& j, const std::string& prefix = "");

// Assigns one JSON value to one field, checking its type. `path` is the dotted key, for messages.
template <class F> void assign(F& field, const json& v, const std::string& path) {
  using detail::type_error;
  if constexpr (is_options_v<F>) {
    if (!v.is_object()) type_error(path, "an object", v);
    read_into(field, v, path + ".");
  } else if constexpr (std::is_same_v<F, bool>) {
    if (!v.is_boolean()) type_error(path, "a boolean (true or false)", v);
    field = v.get<bool>();
  } else if constexpr (std::is_integral_v<F>) {
    if (!v.is_number_integer()) type_error(path, "an integer", v);
    if (v.is_number_unsigned()) {
      auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<F>::max()))
        type_error(path, "an integer in range", v);
      field = static_cast<F>(u);
    } else {
      auto s = v.get<std::int64_t>();
      if ((std::is_unsigned_v<F> && s < 0) ||
          (!std::is_unsigned_v<F> && (s < static_cast<std::int64_t>(std::numeric_limits<F>::min()) ||
                                      s > static_cast<std::int64_t>(std::numeric_limits<F>::max()))))
        type_error(path, std::is_unsigned_v<F> ? "a non-negative integer" : "an integer in range", v);
      field = static_cast<F>(s);
    }
  } else if constexpr (std::is_floating_point_v<F>) {
    if (!v.is_number()) type_error(path, "a number", v);
    field = v.get<F>();
  } else if constexpr (std::is_same_v<F, std::string>) {
    if (!v.is_string()) type_error(path, "a string", v);
    field = v.get<std::string>();
  } else if constexpr (detail::is_vector<F>::value) {
    if (!v.is_array()) type_error(path, "an array", v);
    F out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      typename F::value_type x{};
      assign(x, v[i], path + "[" + std::to_string(i) + "]");
      out.push_back(std::move(x));
    }
    field = std::move(out);
  } else if constexpr (detail::is_string_map<F>::value) {
    if (!v.is_object()) type_error(path, "an object", v);
    F out;
    for (auto it = v.begin(); it != v.end(); ++it) {
      typename F::mapped_type x{};
      assign(x, it.value(), path + "." + it.key());
      out.emplace(it.key(), std::move(x));
    }
    field = std::move(out);
  } else {
    static_assert(sizeof(F) == 0, "unsupported option field type");
  }
}

namespace detail {
struct Reader {
  const json& j;
  const std::string& prefix;
  std::vector<std::string> keys;
  template <class F> void operator()(const char* key, F& field, const char*) {
    keys.emplace_back(key);
    auto it = j.find(key);
    if (it != j.end()) assign(field, *it, prefix + key);
  }
};

template <class F> json to_json_value(const F& field);

struct Writer {
  json& j;
  template <class F> void operator()(const char* key, F& field, const char*) {
    j[key] = to_json_value(field);
  }
};

template <class F> json to_json_value(const F& field) {
  if constexpr (is_options_v<F>) {
    json j = json::object();
    Writer w{j};
    const_cast<F&>(field).visit(w);  // visit() only reads through a Writer
    return j;
  } else if constexpr (is_vector<F>::value) {
    json a = json::array();
    for (const auto& x : field) a.push_back(to_json_value(x));
    return a;
  } else if constexpr (is_string_map<F>::value) {
    json o = json::object();
    for (const auto& [k, x] : field) o[k] = to_json_value(x);
    return o;
  } else {
    return json(field);
  }
}

template <class F> const char* type_name() {
  if constexpr (is_options_v<F>) return "object";
  else if constexpr (std::is_same_v<F, bool>) return "bool";
  else if constexpr (std::is_integral_v<F>) return "int";
  else if constexpr (std::is_floating_point_v<F>) return "number";
  else if constexpr (std::is_same_v<F, std::string>) return "string";
  else if constexpr (is_vector<F>::value) return "array";
  else return "object";
}
}  // namespace detail

// One documented key of an options struct (nested structs are flattened to dotted keys).
struct FieldDoc {
  std::string key;
  std::string type;
  json default_value;
  std::string doc;
};

namespace detail {
struct Describer {
  std::string prefix;
  std::vector<FieldDoc>& out;
  template <class F> void operator()(const char* key, F& field, const char* doc) {
    if constexpr (is_options_v<F>) {
      Describer inner{prefix + key + ".", out};
      field.visit(inner);
    } else {
      out.push_back({prefix + key, type_name<F>(), to_json_value(field), doc});
    }
  }
};
}  // namespace detail

// Fills `opts` from the object `j`: unknown keys and wrong types throw UserError naming the key.
template <class T> void read_into(T& opts, const json& j, const std::string& prefix) {
  if (!j.is_object()) detail::type_error(prefix.empty() ? "config" : prefix, "an object", j);
  detail::Reader r{j, prefix, {}};
  opts.visit(r);
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const auto& k : r.keys) known = known || k == it.key();
    if (!known) detail::unknown_key(prefix, it.key(), r.keys);
  }
}

template <class T> json to_json(const T& opts) { return detail::to_json_value(opts); }

template <class T> std::vector<FieldDoc> describe(const T& opts = T{}) {
  std::vector<FieldDoc> out;
  T copy = opts;
  detail::Describer d{"", out};
  copy.visit(d);
  return out;
}

template <class T> void validate(const T& opts) {
  if constexpr (detail::has_validate<T>::value) opts.validate();
}

// Reads a JSON config file (UserError naming the file on a missing file or a syntax error).
json read_file(const std::string& path);

// Merges "dotted.key=value" into `cfg`. The value is parsed as JSON (numbers, true, [1,2], {...}) unless
// the key's default in `defaults` is a string, in which case the text is taken as it is.
void apply_override(json& cfg, const std::string& assignment, const json& defaults);

// Recursively merges `patch` into `base` (objects merge, everything else replaces).
void merge(json& base, const json& patch);

// defaults <- config file <- `flags` (explicit command-line flags) <- --set overrides; then validate().
template <class T>
T load(const std::string& config_file, const std::vector<std::string>& sets, const json& flags = json::object(),
       const T& defaults = T{}) {
  json defaults_json = to_json(defaults);
  json cfg = config_file.empty() ? json::object() : read_file(config_file);
  if (!cfg.is_object()) throw UserError("config: " + config_file + " must hold a JSON object");
  merge(cfg, flags);
  for (const auto& s : sets) apply_override(cfg, s, defaults_json);
  T opts = defaults;
  read_into(opts, cfg);
  validate(opts);
  return opts;
}

// The reference of every key, one per line: "  key (type, default D): doc". Used by --help and docs.
std::string format_reference(const std::vector<FieldDoc>& docs);

}  // namespace moin::config
