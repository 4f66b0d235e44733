// JSONL queries -> routes, in order (route_stream.h).
#include "moin/route/route_stream.h"
#include "moin/core/json.h"

#include <nlohmann/json.hpp>

#include <istream>
#include <ostream>
#include <vector>

#include "moin/data/corpus.h"

namespace moin {

using json = nlohmann::json;

void route_jsonl(const Router& router, const RouteStreamOptions& opts, std::istream& in, std::ostream& out) {
  const auto& ro = opts.router;
  std::vector<std::string> batch;
  std::vector<std::string> errors;  // per line of the batch: "" or the problem
  std::int64_t line_no = 0;
  auto flush = [&] {
    std::vector<std::string> texts;
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (errors[i].empty()) texts.push_back(batch[i]);
    auto routes = router.route_prefix(texts, ro.prefix_tokens, ro.top_k, ro.batch_size);
    std::size_t r = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      json o;
      if (!errors[i].empty()) {
        o = {{"expert", -1}, {"error", errors[i]}};
      } else {
        const auto& x = routes[r++];
        o = {{"expert", x.expert()}, {"distance", x.distance()}};
        if (ro.top_k > 1) o.update({{"experts", x.experts}, {"distances", x.distances}});
      }
      out << o.dump() << "\n";
    }
    out.flush();
    batch.clear();
    errors.clear();
  };
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    auto j = parse_json_or_discard(line);
    const json* t = j.is_discarded() ? nullptr : json_path(j, opts.text_field);
    std::string text = t && t->is_string() ? t->get<std::string>() : "";
    errors.push_back(j.is_discarded() ? "line " + std::to_string(line_no) + ": not JSON"
                                      : (text.empty() ? "line " + std::to_string(line_no) + ": no text at \"" +
                                                            opts.text_field + "\""
                                                      : ""));
    batch.push_back(std::move(text));
    if (static_cast<int>(batch.size()) >= ro.batch_size) flush();
  }
  flush();
}

}  // namespace moin
