// The TF-IDF embedder's private surface: the factory hooks and the tokeniser (tested on its own).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "moin/partition/embedder.h"

namespace moin::tfidf {

// Lower-cased words of >= 2 characters ([A-Za-z0-9_] and any non-ASCII byte), a word starting with a
// digit replaced by "0num", English stop words dropped when `stop_words`. At most `max_chars` bytes read
// (0 = all).
std::vector<std::string_view> words(std::string_view text, bool stop_words, std::int64_t max_chars,
                                    std::string& storage);

std::unique_ptr<Embedder> make(const EmbedderOptions& opts);
std::unique_ptr<Embedder> load(const std::string& dir, const nlohmann::json& meta);

}  // namespace moin::tfidf
