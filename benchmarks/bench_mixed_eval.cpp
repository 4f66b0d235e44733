// Routed evaluation against base-only evaluation in the same run, on the CPU: `moin eval ppl`'s scoring
// (evaluate_perplexity over a RoutedModel) with K experts and every document routed to one of them, the
// systems besides base and MoIN off. Reports tokens/s of the base pass and of the routed pass (mixed-adapter
// batches; adapter loads included) and their ratio. Also the routed pass grouped by expert as before
// (batches never mix experts, so small clusters give small batches), for comparison.
// Usage: bench_mixed_eval [--experts K] [--docs N] [--len T] [--batch B] [--rank R] [--threads N] [--rounds N]
// Each round runs all three passes (a fresh model's adapter cache each time); the ratios are the medians over
// the rounds, each round's base and routed passes back to back: a shared machine's speed drifts by 10-20%
// within a minute, so one round's ratio is noise-bound. The last line, RESULT {...}, carries every figure.
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "moin/core/process.h"
#include "moin/eval/llama_scorer.h"
#include "moin/eval/perplexity.h"
#include "moin/model/checkpoint.h"
#include "moin/model/lora.h"
#include "moin/route/routed_model.h"

int main(int argc, char** argv) {
  int K = 64, n_docs = 256, len = 128, batch = 8, rank = 16, threads = 1, rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--experts")) K = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--docs")) n_docs = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--len")) len = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rank")) rank = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::stoi(argv[i + 1]);
  }
  torch::set_num_threads(threads);
  moin::reuse_freed_memory();  // as `moin eval ppl` runs
  namespace stdfs = std::filesystem;
  const auto dir = stdfs::temp_directory_path() / ("moin-bench-mixed-" + std::to_string(::getpid()));
  stdfs::create_directories(dir);

  auto cfg = moin::InitModelOptions::small_model();
  auto model = moin::make_llama(cfg, torch::kFloat32, torch::kCPU, 0);
  std::vector<std::string> dirs;
  for (int k = 0; k < K; ++k) {
    moin::LoraOptions o;
    o.r = rank;
    o.seed = k;
    auto a = moin::LoraAdapter::create(model->linears(), o);
    a.randomize_b(k, 0.02);
    dirs.push_back((dir / std::to_string(k)).string());
    a.save(dirs.back());
  }
  std::mt19937 rng(1);
  std::vector<moin::EvalDoc> docs(static_cast<std::size_t>(n_docs));
  for (int i = 0; i < n_docs; ++i) {
    auto& d = docs[static_cast<std::size_t>(i)];
    d.index = i;
    d.tokens.push_back(1);
    while (static_cast<int>(d.tokens.size()) < len) d.tokens.push_back(3 + static_cast<int>(rng() % (cfg.vocab_size - 3)));
    d.from = 33;
    d.routed = static_cast<int>(rng() % static_cast<unsigned>(K));
  }
  moin::PplOptions opts;
  opts.prefix_tokens = 32;
  opts.batch_size = batch;
  opts.oracle = false;
  opts.random = false;
  opts.cache_size = 4;

  std::vector<double> base_r, routed_r, grouped_r;
  for (int round = 0; round < rounds; ++round) {
    moin::RoutedModel rm(model, dirs, opts.cache_size);
    moin::LlamaScorer scorer(rm);
    auto report = moin::evaluate_perplexity(docs, scorer, K, -1, nullptr, opts);
    const double base_tps = report.throughput["base"]["tokens_per_s"].get<double>();
    const double routed_tps = report.throughput["experts"]["tokens_per_s"].get<double>();

    // Grouped by expert (the evaluation before mixed batches): each expert's documents alone, in batches.
    auto t0 = std::chrono::steady_clock::now();
    std::int64_t tokens = 0;
    for (int e = 0; e < K; ++e) {
      std::vector<std::vector<int>> seqs;
      std::vector<int> from;
      auto flush = [&] {
        if (seqs.empty()) return;
        scorer.nll(seqs, from, std::vector<int>(seqs.size(), e));
        seqs.clear();
        from.clear();
      };
      for (const auto& d : docs) {
        if (d.routed != e) continue;
        seqs.push_back(d.tokens);
        from.push_back(d.from);
        tokens += static_cast<std::int64_t>(d.tokens.size());
        if (static_cast<int>(seqs.size()) == batch) flush();
      }
      flush();
    }
    const double grouped_tps = static_cast<double>(tokens) /
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("round %d: base %.0f, routed mixed %.0f (%.2fx), grouped %.0f (%.2fx) tokens/s\n", round + 1,
                base_tps, routed_tps, routed_tps / base_tps, grouped_tps, grouped_tps / base_tps);
    std::fflush(stdout);
    base_r.push_back(base_tps);
    routed_r.push_back(routed_tps / base_tps);
    grouped_r.push_back(grouped_tps / base_tps);
  }
  stdfs::remove_all(dir);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const auto n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  };
  const double base_tps = median(base_r), routed = median(routed_r), grouped = median(grouped_r);

  std::printf("model: %lld parameters, %d experts (r = %d, all projections), %d documents of %d tokens, batch %d, "
              "%d threads, %d rounds\n",
              static_cast<long long>(cfg.num_parameters()), K, rank, n_docs, len, batch, threads, rounds);
  std::printf("base only:                 %10.0f tokens/s (median)\n", base_tps);
  std::printf("routed, mixed batches:     %.2fx base (median of the rounds' ratios)\n", routed);
  std::printf("routed, grouped by expert: %.2fx base (median of the rounds' ratios)\n", grouped);
  std::printf("RESULT {\"experts\": %d, \"docs\": %d, \"len\": %d, \"batch\": %d, \"rank\": %d, \"threads\": %d, "
              "\"rounds\": %d, \"base_tokens_per_s\": %.1f, \"routed_over_base\": %.4f, \"grouped_over_base\": %.4f}\n",
              K, n_docs, len, batch, rank, threads, rounds, base_tps, routed, grouped);
  return 0;
}
