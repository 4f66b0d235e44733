// Training throughput and peak memory of the real trainer (moin::train) on synthetic data:
//   CPU: a small Llama (hidden 256, 4 layers), LoRA (r 16, every projection) and full training, fp32;
//   CUDA (when available): a TinyLlama-1.1B-shaped model (hidden 2048, intermediate 5632, 22 layers,
//   32 heads, 4 kv heads, vocab 32000; random weights), LoRA and full, bf16 autocast, with MFU.
// Each case runs in its own process (this executable re-run with --case NAME), so its peak memory is its
// own. Every step is logged; the figures are the median over the steps after the first two (warm-up).
// RESULT lines also carry the model's shape and the LoRA settings, so a reference (scripts/gpu_check.py,
// transformers + peft) can train exactly the same thing.
//
//   bench_train [--steps N] [--case NAME]     cases: cpu-lora, cpu-full, cuda-lora, cuda-full
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "moin/core/fs.h"
#include "moin/core/log.h"
#include "moin/core/process.h"
#include "moin/core/strings.h"
#include "moin/data/token_shard.h"
#include "moin/model/checkpoint.h"
#include "moin/model/lora.h"
#include "moin/partition/layout.h"
#include "moin/train/perf.h"
#include "moin/train/trainer.h"

namespace stdfs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Case {
  const char* name;
  bool cuda;
  bool lora;
  moin::LlamaConfig config;
  int seq_len, micro_batch;
};

moin::LlamaConfig small_config() {
  moin::LlamaConfig c;
  c.vocab_size = 4096;
  c.hidden_size = 256;
  c.intermediate_size = 688;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 512;
  return c;
}

moin::LlamaConfig tinyllama_config() {
  moin::LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.intermediate_size = 5632;
  c.num_hidden_layers = 22;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 2048;
  return c;
}

std::vector<Case> cases() {
  return {{"cpu-lora", false, true, small_config(), 256, 4},
          {"cpu-full", false, false, small_config(), 256, 4},
          {"cuda-lora", true, true, tinyllama_config(), 2048, 4},
          {"cuda-full", true, false, tinyllama_config(), 2048, 2}};
}

// One cluster of random documents, enough for `tokens` training tokens without repeating much.
void write_data(const std::string& dir, int vocab, std::int64_t tokens) {
  std::mt19937 rng(1);
  for (const char* split : {"train", "valid"}) {
    auto stem = (stdfs::path(dir) / "clusters" / "0" / split).string();
    stdfs::create_directories(stdfs::path(stem).parent_path());
    moin::TokenShardWriter w(stem, vocab);
    std::int64_t n = std::string(split) == "train" ? tokens : 8192;
    std::vector<int> doc;
    for (std::int64_t done = 0; done < n; done += static_cast<std::int64_t>(doc.size())) {
      doc.resize(200 + rng() % 800);
      for (auto& t : doc) t = 4 + static_cast<int>(rng() % static_cast<unsigned>(vocab - 4));
      w.append(doc);
    }
    w.finish();
  }
  moin::PartitionLayout(dir).write_manifest({{"k", 1}});
}

int run_case(const Case& c, int steps) {
  if (c.cuda && !torch::cuda::is_available()) {
    std::printf("%s: skipped (no CUDA device)\n", c.name);
    return 0;
  }
  auto tmp = stdfs::temp_directory_path() / ("moin-bench-train-" + std::string(c.name) + "-" +
                                             std::to_string(::getpid()));
  stdfs::create_directories(tmp);
  const std::int64_t tokens = static_cast<std::int64_t>(steps + 1) * c.seq_len * c.micro_batch;
  write_data((tmp / "part").string(), static_cast<int>(c.config.vocab_size), tokens);
  moin::TrainOptions o;
  o.partition = (tmp / "part").string();
  o.cluster = 0;
  o.output = (tmp / "out").string();
  o.seq_len = c.seq_len;
  o.micro_batch = c.micro_batch;
  o.max_steps = steps;
  o.log_every = 1;  // one line per step: the median over steps is robust to a slow one
  o.eval_every = 0;
  o.eval_tokens = c.seq_len;
  o.checkpoint_every = 0;
  o.device = c.cuda ? "cuda" : "cpu";
  o.lr = 1e-4;
  if (c.lora) {
    o.mode = "expert";
    // The base on disk in bf16 (half the bytes); the trainer loads it in float32.
    auto base = moin::make_llama(c.config, c.cuda ? torch::kBFloat16 : torch::kFloat32, torch::kCPU, 0);
    moin::save_llama(base, (tmp / "base").string());
    o.base = (tmp / "base").string();
  } else {
    o.mode = "full";
    c.config.save((tmp / "config.json").string());
    o.model_config = (tmp / "config.json").string();
  }
  auto summary = moin::train(o, false);
  std::vector<double> rates, mfus;
  std::ifstream in(tmp / "out" / "metrics.jsonl");
  int seen = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line);
    if (j.value("kind", "") != "train" || ++seen <= 2) continue;  // the first two steps warm up
    rates.push_back(j.value("tokens_per_s", 0.0));
    if (j.contains("mfu") && j["mfu"].is_number()) mfus.push_back(j["mfu"].get<double>());
  }
  auto median = [](std::vector<double> v) -> json {
    if (v.empty()) return json();
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  moin::LoraOptions lora;
  json r{{"case", c.name},
         {"params", c.config.num_parameters()},
         {"trainable", summary["trainable_parameters"]},
         {"seq_len", c.seq_len},
         {"micro_batch", c.micro_batch},
         {"timed_steps", rates.size()},
         {"tokens_per_s", median(rates).is_null() ? 0.0 : median(rates).get<double>()},
         {"mfu", median(mfus)},
         {"peak_memory_bytes", summary["peak_memory_bytes"]},
         // The trainer's own count (perf.h) and the device's peak, so a peer's MFU uses the same two numbers.
         {"flops_per_token", summary["flops_per_token"]},
         {"peak_tflops", c.cuda ? moin::known_peak_tflops(moin::cuda_device_name(0)) : 0.0},
         {"device", c.cuda ? moin::cuda_device_name(0) : std::string("cpu")},
         {"config", c.config.to_json()},
         {"lora", c.lora ? json{{"r", lora.r}, {"alpha", lora.alpha}, {"target_modules", lora.target_modules}} : json()},
         {"autocast_bf16", c.cuda},
         {"lr", o.lr}};
  std::printf("RESULT %s\n", r.dump().c_str());
  std::error_code ec;
  stdfs::remove_all(tmp, ec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moin::log::init("warn");
  int steps = 6;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--case") && i + 1 < argc) only = argv[++i];
  }
  if (!only.empty()) {
    for (const auto& c : cases())
      if (only == c.name) return run_case(c, steps);
    std::fprintf(stderr, "unknown case %s\n", only.c_str());
    return 2;
  }
  std::string self = stdfs::canonical("/proc/self/exe").string();
  std::printf("%-10s %12s %11s %6s %7s %12s %8s %12s  %s\n", "case", "params", "trainable", "seq", "batch",
              "tokens/s", "MFU", "peak mem", "device");
  for (const auto& c : cases()) {
    if (c.cuda && !torch::cuda::is_available()) {
      std::printf("%-10s skipped: no CUDA device\n", c.name);
      continue;
    }
    auto r = moin::run_process({self, "--case", c.name, "--steps", std::to_string(steps)});
    auto pos = r.output.find("RESULT ");
    if (r.exit_code != 0 || pos == std::string::npos) {
      std::printf("%-10s failed (exit %d):\n%s\n", c.name, r.exit_code, r.output.c_str());
      continue;
    }
    auto j = json::parse(r.output.substr(pos + 7, r.output.find('\n', pos) - pos - 7));
    std::string mfu = j["mfu"].is_number() ? std::to_string(j["mfu"].get<double>() * 100).substr(0, 5) + "%" : "-";
    std::printf("%-10s %12s %11s %6d %7d %12.0f %8s %12s  %s\n", c.name,
                moin::human_count(j["params"].get<double>()).c_str(),
                moin::human_count(j["trainable"].get<double>()).c_str(), j["seq_len"].get<int>(),
                j["micro_batch"].get<int>(), j["tokens_per_s"].get<double>(), mfu.c_str(),
                moin::human_bytes(j["peak_memory_bytes"].get<double>()).c_str(), j["device"].get<std::string>().c_str());
    std::fflush(stdout);
  }
  return 0;
}
