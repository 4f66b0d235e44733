// tokenizer.json (byte-level BPE) encoding speed: every document of a JSONL corpus encoded by `threads`
// threads, in tokens/s and MB/s. benchmarks/bench_bpe_tokenizer.py measures Hugging Face tokenizers (Rust)
// on the same file with the same threads, and makes the tokenizer both read (docs/tokenizers.md).
//
//   bench_bpe_tokenizer tokenizer=FILE.json [input=../shared/data/corpus/train.jsonl] [threads=1]
//                       [docs=0 (all)] [repeats=3]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "moin/data/tokenizer.h"

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string tokenizer, input = std::string(MOIN_SOURCE_DIR) + "/../shared/data/corpus/train.jsonl";
  int threads = 1, repeats = 3;
  long long max_docs = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    if (eq == std::string::npos) continue;
    std::string key = a.substr(0, eq), v = a.substr(eq + 1);
    if (key == "tokenizer") tokenizer = v;
    else if (key == "input") input = v;
    else if (key == "threads") threads = std::stoi(v);
    else if (key == "docs") max_docs = std::stoll(v);
    else if (key == "repeats") repeats = std::stoi(v);
  }
  if (tokenizer.empty()) {
    std::fprintf(stderr, "usage: bench_bpe_tokenizer tokenizer=FILE.json [input=JSONL] [threads=N] [docs=N] [repeats=N]\n");
    return 2;
  }
  std::vector<std::string> docs;
  std::size_t bytes = 0;
  {
    std::ifstream in(input);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", input.c_str());
      return 2;
    }
    std::string line;
    while (std::getline(in, line) && (max_docs == 0 || static_cast<long long>(docs.size()) < max_docs)) {
      docs.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
      bytes += docs.back().size();
    }
  }
  auto t0 = Clock::now();
  auto tok = moin::Tokenizer::load(tokenizer);
  std::printf("tokenizer %s: vocabulary %d, loaded in %.2fs\n", tokenizer.c_str(), tok.vocab_size(),
              std::chrono::duration<double>(Clock::now() - t0).count());
  std::printf("corpus %s: %zu documents, %.1f MB; %d threads\n", input.c_str(), docs.size(), bytes / 1e6, threads);
  for (int r = 0; r < repeats; ++r) {
    std::atomic<std::size_t> next{0}, tokens{0};
    auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        std::size_t n = 0;
        for (std::size_t i; (i = next.fetch_add(1)) < docs.size();) n += tok.encode(docs[i]).size();
        tokens += n;
      });
    for (auto& th : pool) th.join();
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("pass %d: %zu tokens in %.2fs: %.0f tokens/s, %.1f MB/s%s\n", r + 1, tokens.load(), s, tokens / s,
                bytes / 1e6 / s, r == 0 ? " (cold piece cache)" : "");
  }
  return 0;
}
