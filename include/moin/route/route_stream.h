// `moin route`'s work: JSONL queries in, one JSON object per line out, in order, routed in batches.
#pragma once
#include <iosfwd>
#include <string>

#include "moin/core/error.h"
#include "moin/route/router.h"

namespace moin {

struct RouteStreamOptions {
  std::string partition;
  std::string text_field = "text";
  RouterOptions router;
  template <class V> void visit(V& v) {
    v("partition", partition, "partition directory (embedder state, centroids, tokenizer)");
    v("text_field", text_field, "dotted path of the query text in each JSON line");
    v("router", router, "routing options");
  }
  void validate() const {
    require(!partition.empty(), "route: --partition is required");
    router.validate();
  }
};

// Reads JSON lines from `in` and writes, for each, {"expert": E, "distance": D} (with router.top_k > 1 also
// "experts" and "distances", nearest first) to `out`, flushed after every batch of router.batch_size
// lines. A line that is not JSON, or has no text at text_field, gives {"expert": -1, "error": "line N: ..."}
// so the output stays aligned with the input.
void route_jsonl(const Router& router, const RouteStreamOptions& opts, std::istream& in, std::ostream& out);

}  // namespace moin
