// Every JSON text moin reads goes through here: a nesting-depth limit first (nlohmann's copies and dumps
// recurse, so 100,000 nested arrays overflow the stack long after the parse succeeded), and parse errors
// that say where without the library's "[json.exception.parse_error.101]" prefix.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace moin {

// Deeper than any config, manifest or report moin writes (they nest under 10 levels).
inline constexpr int kMaxJsonDepth = 256;

// The deepest nesting of arrays and objects in `text` (strings skipped), stopping once past `limit`.
int json_depth(std::string_view text, int limit = kMaxJsonDepth);

// Parses `text`; UserError "WHAT: invalid JSON at line L, column C: ..." or "WHAT: JSON nested deeper than
// 256 levels". `what` names the source (a file, "--set lr", "line 3 of FILE").
nlohmann::json parse_json(std::string_view text, const std::string& what);

// The same without throwing: a discarded value (is_discarded()) when the text is invalid or too deep.
nlohmann::json parse_json_or_discard(std::string_view text);

// nlohmann's parse_error text without its "[json.exception.parse_error.N] parse error " prefix.
std::string json_error_text(const std::exception& e);

}  // namespace moin
