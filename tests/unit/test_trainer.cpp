// The trainer end to end on a tiny model (hidden 32, 2 layers, vocab 512) and a synthetic partition:
// kill -9 and --resume reproduce the uninterrupted run's weights; the optimizer holds only the adapter in
// LoRA modes; a NaN loss stops cleanly with the last good checkpoint intact; full training from a config;
// the validation loss against a direct computation; the launcher with real `moin train` jobs.
#include <gtest/gtest.h>

#include <torch/serialize/input-archive.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "moin/core/fs.h"
#include "moin/core/process.h"
#include "moin/core/strings.h"
#include "moin/model/checkpoint.h"
#include "moin/model/lora.h"
#include "moin/model/safetensors.h"
#include "moin/train/data.h"
#include "moin/train/launch.h"
#include "moin/train/partition_layout.h"
#include "moin/train/train_checkpoint.h"
#include "moin/train/trainer.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace {

using moin::test::TempDir;
using json = nlohmann::json;
namespace stdfs = std::filesystem;

moin::LlamaConfig tiny_config() {
  moin::LlamaConfig c;
  c.vocab_size = 512;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  return c;
}

// dir/base (a random tiny Llama), dir/p (a partition of `k` clusters).
void make_fixture(const TempDir& dir, int k = 2) {
  auto model = moin::make_llama(tiny_config(), torch::kFloat32, torch::kCPU, 7);
  moin::save_llama(model, dir / "base");
  moin::test::write_partition(dir / "p", k, 512, 60, 12);
}

moin::TrainOptions tiny_options(const TempDir& dir, const std::string& out) {
  moin::TrainOptions o;
  o.partition = dir / "p";
  o.cluster = 0;
  o.base = dir / "base";
  o.output = dir / out;
  o.lora.r = 4;
  o.lora.alpha = 8;
  o.lora.dropout = 0.1;  // exercises the RNG state across a resume
  o.seq_len = 32;
  o.micro_batch = 4;
  o.grad_accum = 2;
  o.max_steps = 12;
  o.lr = 3e-3;
  o.warmup_steps = 2;
  o.eval_every = 5;
  o.eval_tokens = 128;
  o.checkpoint_every = 3;
  o.log_every = 2;
  o.num_threads = 1;
  o.device = "cpu";
  o.keep_final_checkpoint = true;  // these tests read the final checkpoint
  return o;
}

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path) {
  auto f = moin::st::File::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(t.dtype, moin::st::DType::F32) << t.name;
    out[t.name] = torch::from_blob(const_cast<std::uint8_t*>(f.data(t)), t.shape, torch::kFloat32).clone();
  }
  return out;
}

void expect_same_tensors(const std::string& a, const std::string& b, double tol) {
  auto ta = read_safetensors(a), tb = read_safetensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  ASSERT_FALSE(ta.empty());
  for (const auto& [name, t] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    double diff = (t - tb[name]).abs().max().item<double>();
    EXPECT_LE(diff, tol) << name;
  }
}

std::string moin_bin() {
  const char* bin = std::getenv("MOIN_BIN");
  return bin ? bin : std::string(MOIN_BINARY_DIR) + "/moin";
}

std::int64_t latest_step(const std::string& ckpt_dir) {
  try {
    return moin::fs::read_json(stdfs::path(ckpt_dir) / "latest.json").at("step").get<std::int64_t>();
  } catch (...) {
    return -1;
  }
}

TEST(Trainer, KillNineThenResumeMatchesTheUninterruptedRun) {
  TempDir dir;
  make_fixture(dir);
  auto o = tiny_options(dir, "unused");
  moin::fs::write_json_atomic(dir / "train.json", moin::config::to_json(o));
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{moin_bin(), "train", "--config", dir / "train.json", "--output", dir / out,
                                    "--log-level", "warn"};
  };
  // The uninterrupted run.
  auto a = moin::run_process(args("a"));
  ASSERT_EQ(a.exit_code, 0) << a.output;

  // The same run, slowed down, killed with SIGKILL once a checkpoint exists but before the end.
  auto b_args = args("b");
  b_args.insert(b_args.end(), {"--set", "fault_sleep_s=0.25"});
  auto child = moin::ChildProcess::spawn(b_args, {}, dir / "b.log");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::int64_t step = -1;
  while (std::chrono::steady_clock::now() < deadline && !child.poll()) {
    step = latest_step(dir / "b/checkpoints");
    if (step >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GE(step, 3) << moin::test::read_file(dir / "b.log");
  ASSERT_LT(step, 12);
  child.kill(9);
  EXPECT_EQ(child.wait(), 128 + 9);
  EXPECT_FALSE(stdfs::exists(dir.path / "b" / "summary.json"));
  // Without --resume the folder is refused; with it, the run finishes.
  auto refused = moin::run_process(args("b"));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  auto resume_args = args("b");
  resume_args.push_back("--resume");
  auto b = moin::run_process(resume_args);
  ASSERT_EQ(b.exit_code, 0) << b.output;

  expect_same_tensors(dir / "a/adapter_model.safetensors", dir / "b/adapter_model.safetensors", 1e-6);
  auto sa = moin::fs::read_json(dir.path / "a" / "summary.json");
  auto sb = moin::fs::read_json(dir.path / "b" / "summary.json");
  EXPECT_EQ(sb["resumed"], 1);
  EXPECT_EQ(sa["steps"], 12);
  EXPECT_EQ(sb["tokens_seen"], sa["tokens_seen"]);
  EXPECT_NEAR(sb["final_valid_loss"].get<double>(), sa["final_valid_loss"].get<double>(), 1e-5);
  EXPECT_NEAR(sb["final_train_loss"].get<double>(), sa["final_train_loss"].get<double>(), 1e-5);
  // metrics.jsonl was cut back at the resume point: one train line per log step, no duplicates.
  int train_lines = 0;
  std::ifstream in(dir.path / "b" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) train_lines += json::parse(line)["kind"] == "train";
  EXPECT_EQ(train_lines, 6);
  // Resuming a finished run does nothing and succeeds.
  auto again = moin::run_process(resume_args);
  EXPECT_EQ(again.exit_code, 0) << again.output;
}

TEST(Trainer, OptimizerHoldsOnlyTheAdapterInLoraModes) {
  TempDir dir;
  make_fixture(dir);
  for (const char* mode : {"expert", "dense-lora"}) {
    auto o = tiny_options(dir, std::string("out-") + mode);
    o.mode = mode;
    o.cluster = o.mode == "expert" ? 0 : -1;
    o.max_steps = 3;
    o.lora.target_modules = {"q_proj", "v_proj"};
    auto summary = moin::train(o);
    // 2 layers x (q: 4 x (32 + 32), v: 4 x (32 + 16)).
    EXPECT_EQ(summary["trainable_parameters"], 2 * (4 * (32 + 32) + 4 * (32 + 16))) << mode;
    auto ckpt = moin::latest_train_checkpoint(o.output + "/checkpoints");
    ASSERT_FALSE(ckpt.empty());
    torch::serialize::InputArchive ar;
    ar.load_from(ckpt);
    c10::IValue meta;
    ar.read("meta", meta);
    auto names = json::parse(meta.toStringRef())["names"];
    EXPECT_EQ(names.size(), 8u);
    for (const auto& n : names) {
      auto s = n.get<std::string>();
      EXPECT_TRUE(moin::ends_with(s, ".lora_A") || moin::ends_with(s, ".lora_B")) << s;
    }
  }
  // dense-lora trains on every cluster: its validation reports both.
  auto dense = moin::fs::read_json(dir.path / "out-dense-lora" / "summary.json");
  EXPECT_EQ(dense["valid_loss_per_cluster"].size(), 2u);
  EXPECT_EQ(dense["clusters"], json::array({0, 1}));

  // The optimizer of a LoRA model built like the trainer's: only A and B, decayed; no base weight.
  auto model = moin::load_llama(dir / "base");
  model->set_requires_grad(false);
  moin::LoraOptions lo;
  lo.r = 4;
  auto adapter = moin::LoraAdapter::create(model->linears(), lo);
  moin::NamedTensors trainable;
  for (const auto& m : adapter.modules()) trainable.insert(trainable.end(), {{m.name + ".lora_A", m.A}, {m.name + ".lora_B", m.B}});
  moin::TrainOptions o;
  o.weight_decay = 0.1;
  auto opt = moin::make_adamw(trainable, o);
  std::set<const void*> in_opt;
  std::int64_t n = 0;
  for (const auto& g : opt->param_groups())
    for (const auto& p : g.params()) {
      in_opt.insert(p.unsafeGetTensorImpl());
      n += p.numel();
    }
  EXPECT_EQ(n, adapter.num_parameters());
  for (const auto& p : model->parameters()) EXPECT_FALSE(in_opt.count(p.unsafeGetTensorImpl()));
  // Full training: norms (1-D) get no weight decay, matrices do.
  auto full = moin::make_llama(tiny_config());
  moin::NamedTensors all;
  for (const auto& item : full->named_parameters()) all.emplace_back(item.key(), item.value());
  auto fopt = moin::make_adamw(all, o);
  ASSERT_EQ(fopt->param_groups().size(), 2u);
  for (const auto& p : fopt->param_groups()[0].params()) EXPECT_EQ(p.dim(), 2);
  for (const auto& p : fopt->param_groups()[1].params()) EXPECT_EQ(p.dim(), 1);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(fopt->param_groups()[0].options()).weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(fopt->param_groups()[1].options()).weight_decay(), 0.0);
}

TEST(Trainer, NanLossStopsWithTheLastGoodCheckpointIntact) {
  TempDir dir;
  make_fixture(dir);
  auto o = tiny_options(dir, "nan");
  o.checkpoint_every = 2;
  o.fault_nan_at_step = 5;  // the 6th step
  moin::fs::write_json_atomic(dir / "train.json", moin::config::to_json(o));
  auto r = moin::run_process({moin_bin(), "train", "--config", dir / "train.json"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("loss became NaN at step 6"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step-00000004.pt"), std::string::npos) << r.output;
  EXPECT_FALSE(stdfs::exists(dir.path / "nan" / "summary.json"));
  EXPECT_EQ(latest_step(dir / "nan/checkpoints"), 4);
  // The checkpoint is whole and finite, and the run continues from it once the fault is gone.
  auto resumed = moin::run_process(
      {moin_bin(), "train", "--config", dir / "train.json", "--resume", "--set", "fault_nan_at_step=-1"});
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(stdfs::exists(dir.path / "nan" / "adapter_model.safetensors"));

  // A learning rate that blows the weights up is caught too (the loss or a weight becomes non-finite).
  auto blow = tiny_options(dir, "blowup");
  blow.lr = 1e30;
  blow.warmup_steps = 0;
  blow.lora.dropout = 0;
  EXPECT_THROW(moin::train(blow), moin::TrainingDiverged);
  EXPECT_FALSE(stdfs::exists(dir.path / "blowup" / "summary.json"));
}

TEST(Trainer, FullTrainingFromAConfigLowersTheLossAndSavesAModel) {
  TempDir dir;
  moin::test::write_partition(dir / "p", 2, 512, 60, 12);
  tiny_config().save(dir / "config.json");
  moin::TrainOptions o;
  o.mode = "full";
  o.partition = dir / "p";
  o.model_config = dir / "config.json";
  o.output = dir / "full";
  o.seq_len = 32;
  o.micro_batch = 8;
  o.token_budget = 4096;  // per cluster: 2 x 4096 / 256 = 32 steps
  o.lr = 1e-2;
  o.warmup_steps = 4;
  o.eval_tokens = 256;
  o.checkpoint_every = 0;
  o.weight_decay = 0.01;
  o.num_threads = 1;
  o.device = "cpu";
  auto s = moin::train(o);
  EXPECT_EQ(s["steps"], 32);
  EXPECT_LT(s["final_valid_loss"].get<double>(), s["initial_valid_loss"].get<double>() - 0.5) << s.dump();
  EXPECT_NEAR(s["initial_valid_loss"].get<double>(), std::log(512.0), 0.3);  // a random model
  ASSERT_TRUE(moin::is_llama_checkpoint(dir / "full"));
  auto m = moin::load_llama(dir / "full");
  EXPECT_EQ(m->config.hidden_size, 32);
  EXPECT_EQ(s["trainable_parameters"], m->config.num_parameters());
  // FLOPs per token: 6 N + 12 L T d with N = projections + head.
  double n = 2 * (32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64) + 512 * 32;
  EXPECT_DOUBLE_EQ(s["flops_per_token"].get<double>(), 6 * n + 12 * 2 * 32 * 32);
}

TEST(Trainer, ValidationLossMatchesADirectComputation) {
  TempDir dir;
  make_fixture(dir);
  auto model = moin::load_llama(dir / "base");
  moin::DocumentSet docs({moin::cluster_shard(dir / "p", 1, "valid")});
  auto seqs = moin::make_validation_set(docs, 16, 64, 1, 2);
  ASSERT_EQ(seqs.size(0), 4);
  double got = moin::evaluate_loss(model, seqs, 3, torch::kCPU, false);
  // Independent: log-softmax by hand, one sequence at a time.
  torch::NoGradGuard ng;
  double sum = 0;
  for (int i = 0; i < 4; ++i) {
    auto row = seqs[i];
    auto logits = model->forward(row.slice(0, 0, 16).unsqueeze(0))[0].to(torch::kFloat64);
    auto lse = logits.exp().sum(-1).log();
    for (int t = 0; t < 16; ++t) sum += (lse[t] - logits[t][row[t + 1].item<std::int64_t>()]).item<double>();
  }
  EXPECT_NEAR(got, sum / 64.0, 1e-5);
}

// A pack trains several experts in one process (one mixed-adapter forward and backward per step); each
// ends where it ends trained alone with the same options. One expert of the pack resumes from a
// checkpoint and finishes first: the pack goes on with the rest.
TEST(Trainer, PackedExpertsEqualEachExpertTrainedAlone) {
  TempDir dir;
  make_fixture(dir, 3);
  // Cluster 2's validation split is shorter than one sequence: its one validation row is shorter than the
  // others, and the pack's validation batches go by length.
  auto short_doc = moin::test::cluster_docs(2, 1, 512, 3, 5).front();
  short_doc.resize(std::min<std::size_t>(short_doc.size(), 10));
  moin::test::write_shard(dir / "p/clusters/2/valid", {short_doc}, 512);
  auto opts = [&](const std::string& out) {
    auto o = tiny_options(dir, out);
    o.lora.dropout = 0.0;  // dropout draws differ between a batch and its rows
    o.max_steps = 6;
    o.keep_final_checkpoint = false;
    return o;
  };
  for (int k = 0; k < 3; ++k) {
    auto o = opts("alone/" + std::to_string(k));
    o.cluster = k;
    moin::train(o);
  }
  // Expert 1 of the pack first stops at step 4 (a NaN), leaving its step-3 checkpoint.
  {
    auto o = opts("pack/1");
    o.cluster = 1;
    o.fault_nan_at_step = 3;
    EXPECT_THROW(moin::train(o), moin::TrainingDiverged);
    ASSERT_EQ(latest_step(dir / "pack/1/checkpoints"), 3);
  }
  auto o = opts("pack");
  o.cluster = -1;
  o.clusters = {0, 1, 2};
  auto result = moin::train(o, /*resume=*/true);
  ASSERT_EQ(result["experts"].size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const stdfs::path a = dir / ("alone/" + std::to_string(k)), p = dir / ("pack/" + std::to_string(k));
    expect_same_tensors((a / "adapter_model.safetensors").string(), (p / "adapter_model.safetensors").string(), 2e-5);
    auto sa = moin::fs::read_json((a / "summary.json").string());
    auto sp = moin::fs::read_json((p / "summary.json").string());
    // Validation runs the pack's experts together (mixed-adapter batches), at step 0 and at the end.
    EXPECT_NEAR(sa["final_valid_loss"].get<double>(), sp["final_valid_loss"].get<double>(), 1e-5) << k;
    EXPECT_NEAR(sa["initial_valid_loss"].get<double>(), sp["initial_valid_loss"].get<double>(), 1e-5) << k;
    for (auto it = sa["valid_loss_per_cluster"].begin(); it != sa["valid_loss_per_cluster"].end(); ++it)
      EXPECT_NEAR(it.value()["final"].get<double>(), sp["valid_loss_per_cluster"][it.key()]["final"].get<double>(), 1e-5);
    EXPECT_EQ(sp["steps"], 6);
    EXPECT_EQ(sp["pack"]["clusters"], json({0, 1, 2}));
    EXPECT_GT(sp["wall_time_s"].get<double>(), 0.0);
    // A finished expert keeps no optimizer state (keep_final_checkpoint is off).
    EXPECT_FALSE(stdfs::exists(p / "checkpoints")) << k;
  }
  EXPECT_EQ(moin::fs::read_json(dir / "pack/1/summary.json")["resumed"], 1);
  // Resumed again: every expert is finished, nothing is trained.
  auto again = moin::train(o, true);
  EXPECT_EQ(again["experts"]["2"]["steps"], 6);
}

// A cluster below min_train_tokens, or with no training documents at all, gets no expert: a summary that
// says so and no adapter, in a pack or alone.
TEST(Trainer, TinyAndEmptyClustersGetNoExpert) {
  TempDir dir;
  make_fixture(dir, 3);
  for (const char* ext : {".bin", ".idx", ".json"}) stdfs::remove(moin::cluster_shard(dir / "p", 2, "train") + ext);
  // Cluster 1: 3 documents instead of 60.
  moin::test::write_shard(moin::cluster_shard(dir / "p", 1, "train"), moin::test::cluster_docs(1, 3, 512, 3, 1), 512);
  auto o = tiny_options(dir, "experts");
  o.cluster = -1;
  o.clusters = {0, 1, 2};
  o.max_steps = 2;
  o.min_train_tokens = moin::DocumentSet({moin::cluster_shard(dir / "p", 1, "train")}).num_tokens() + 1;
  ASSERT_GE(moin::DocumentSet({moin::cluster_shard(dir / "p", 0, "train")}).num_tokens(), o.min_train_tokens);
  moin::train(o);
  EXPECT_TRUE(stdfs::exists(dir / "experts/0/adapter_model.safetensors"));
  for (int k : {1, 2}) {
    auto s = moin::fs::read_json(dir / ("experts/" + std::to_string(k) + "/summary.json"));
    EXPECT_EQ(s["status"], "too_small") << k;
    EXPECT_EQ(s["min_train_tokens"], o.min_train_tokens);
    EXPECT_FALSE(stdfs::exists(dir / ("experts/" + std::to_string(k) + "/adapter_config.json")));
  }
  EXPECT_EQ(moin::fs::read_json(dir / "experts/2/summary.json")["train_tokens"], 0);
}

TEST(Trainer, LaunchRunsRealJobsAndSkipsFinishedOnes) {
  TempDir dir;
  make_fixture(dir, 2);
  auto o = tiny_options(dir, "experts");
  o.max_steps = 4;
  o.eval_every = 0;
  o.checkpoint_every = 0;
  o.lora.dropout = 0;
  moin::fs::write_json_atomic(dir / "train.json", moin::config::to_json(o));
  moin::LaunchOptions lo;
  lo.partition = dir / "p";
  lo.config = dir / "train.json";
  lo.jobs = 2;
  lo.gpus = "none";
  lo.moin = moin_bin();
  auto report = moin::launch(lo);
  ASSERT_TRUE(report.ok()) << moin::format_launch_table(report) << moin::test::read_file(dir / "experts/logs/0.log");
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(report.jobs[static_cast<std::size_t>(k)].status, "done");
    EXPECT_TRUE(stdfs::exists(dir.path / "experts" / std::to_string(k) / "adapter_model.safetensors"));
    auto s = moin::fs::read_json(dir.path / "experts" / std::to_string(k) / "summary.json");
    EXPECT_EQ(s["clusters"], json::array({k}));
  }
  auto again = moin::launch(lo);
  EXPECT_EQ(again.jobs[0].status, "skipped");
  EXPECT_EQ(again.jobs[1].status, "skipped");
}

}  // namespace
