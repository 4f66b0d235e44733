// `moin eval routing`: reads the data, loads the partition's router, evaluates, writes reports and plots.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "moin/core/fs.h"
#include "moin/eval/perplexity.h"
#include "moin/eval/plot.h"
#include "moin/eval/routing_eval.h"
#include "moin/route/router.h"

namespace moin {

namespace stdfs = std::filesystem;

RoutingReport run_eval_routing(const RoutingEvalOptions& opts) {
  require(!opts.data.empty(), "eval routing: no --data");
  require(!opts.partition.empty(), "eval routing: no --partition");
  std::vector<std::string> texts, labels;
  read_jsonl_docs(opts.data, opts.text_field, opts.label_field, opts.max_docs, texts, labels);
  auto router = Router::load(opts.partition, opts.tokenizer);
  spdlog::info("eval routing: {} documents, {} experts", texts.size(), router.num_experts());
  auto r = evaluate_routing(router, texts, labels, opts);

  nlohmann::json pj;
  if (!opts.ppl_json.empty()) pj = fs::read_json(opts.ppl_json);
  // The oracle is opt-in in eval ppl: a report without it gives no agreement figures, and says so.
  if (!pj.is_null() && pj.value("oracle_docs", std::int64_t{-1}) == 0) {
    spdlog::warn("eval routing: {} was computed without the oracle (eval ppl --set oracle=true): no oracle "
                 "agreement", opts.ppl_json);
    pj = nlohmann::json();
  }
  if (!pj.is_null()) {
    const auto& docs = pj.at("documents");
    auto index = docs.at("index").get<std::vector<std::int64_t>>();
    auto routed = docs.at("routed").get<std::vector<int>>();
    auto oracle = docs.at("oracle").get<std::vector<int>>();
    std::vector<std::string> full_texts;
    std::vector<std::size_t> keep;
    for (std::size_t i = 0; i < index.size(); ++i)
      if (oracle[i] >= 0 && index[i] < static_cast<std::int64_t>(texts.size())) {
        keep.push_back(i);
        full_texts.push_back(texts[static_cast<std::size_t>(index[i])]);
      }
    require(!keep.empty(), opts.ppl_json + " holds no oracle experts (run eval ppl with oracle on, on the same data)");
    // The clusters eval ppl left out (their experts missing) are left out here too; the oracle chose among
    // the trained experts, so chance is one in their number.
    const int K = router.num_experts();
    std::vector<char> left_out(static_cast<std::size_t>(K), 0);
    int trained = K;
    if (pj.contains("experts") && pj["experts"].is_object()) {
      for (const auto& e : pj["experts"].value("left_out", nlohmann::json::array()))
        if (e.is_number_integer() && e.get<int>() >= 0 && e.get<int>() < K) left_out[e.get<std::size_t>()] = 1;
      trained = pj["experts"].value("trained", K);
    }
    const int n_left_out = static_cast<int>(std::count(left_out.begin(), left_out.end(), 1));
    auto full = router.route(full_texts, std::min(K, 1 + n_left_out), opts.batch_size);
    std::int64_t same_prefix = 0, same_full = 0;
    for (std::size_t j = 0; j < keep.size(); ++j) {
      int nearest = -1;
      for (int e : full[j].experts)
        if (!left_out[static_cast<std::size_t>(e)]) {
          nearest = e;
          break;
        }
      same_prefix += routed[keep[j]] == oracle[keep[j]];
      same_full += nearest == oracle[keep[j]];
    }
    r.oracle_docs = static_cast<std::int64_t>(keep.size());
    r.oracle_prefix_tokens = pj.value("prefix_tokens", 0);
    r.oracle_agreement_prefix = static_cast<double>(same_prefix) / static_cast<double>(keep.size());
    r.oracle_agreement_full = static_cast<double>(same_full) / static_cast<double>(keep.size());
    r.oracle_chance = 1.0 / std::max(1, trained);
    r.oracle_choices = trained;
  }

  if (!opts.json.empty()) fs::write_json_atomic(opts.json, r.to_json());
  if (!opts.markdown.empty()) fs::write_atomic(opts.markdown, r.markdown());
  if (opts.plots) {
    std::string dir = !opts.json.empty() ? stdfs::path(opts.json).parent_path().string()
                                         : (!opts.markdown.empty() ? stdfs::path(opts.markdown).parent_path().string() : "");
    if (dir.empty()) dir = ".";
    std::vector<double> x(r.prefix_tokens.begin(), r.prefix_tokens.end());
    std::vector<double> y;
    for (double a : r.agreement) y.push_back(100.0 * a);
    plot_lines((stdfs::path(dir) / "routing_vs_prefix.png").string(), "Prefix routing vs full-document routing",
               "prefix length (tokens)", "agreement (%)", x, {{"agreement with full-document routing", y}}, true);
    std::vector<std::pair<std::string, double>> bars;
    for (std::size_t i = 0; i < r.cluster_sizes.size(); ++i)
      bars.emplace_back(std::to_string(i), static_cast<double>(r.cluster_sizes[i]));
    BarStyle counts;
    counts.decimals = 0;
    plot_bars((stdfs::path(dir) / "cluster_sizes.png").string(), "Documents per expert (routed)", "documents", bars,
              counts);
  }
  return r;
}

}  // namespace moin
