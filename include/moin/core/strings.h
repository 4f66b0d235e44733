#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moin {

// Edit distance, used to suggest the closest valid key for a misspelt one.
std::size_t levenshtein(std::string_view a, std::string_view b);
// The candidate closest to `key`, or "" when none is reasonably close.
std::string closest_match(std::string_view key, const std::vector<std::string>& candidates);
// s in single quotes for a POSIX shell ('it'\''s'): one word whatever it holds.
std::string shell_quote(std::string_view s);

std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
bool starts_with(std::string_view s, std::string_view prefix);
bool ends_with(std::string_view s, std::string_view suffix);
// A tensor shape as "[2, 3]", for messages.
std::string shape_str(const std::vector<std::int64_t>& shape);

// "1.5 GB", "12.3 k" style figures for logs and progress lines.
std::string human_bytes(double bytes);
std::string human_count(double count);
std::string human_duration(double seconds);

}  // namespace moin
