// The one-config pipeline (see pipeline.h).
#include "moin/run/pipeline.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moin/core/config.h"
#include "moin/core/fs.h"
#include "moin/core/hash.h"
#include "moin/core/process.h"
#include "moin/core/strings.h"
#include "moin/data/tokenizer.h"
#include "moin/eval/perplexity.h"
#include "moin/eval/routing_eval.h"
#include "moin/model/llama.h"
#include "moin/partition/layout.h"
#include "moin/train/options.h"

namespace moin {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string>& run_config_sections() {
  static const std::vector<std::string> s = {"partition", "model",  "pretrain",      "expert",   "dense_lora",
                                             "cpt_train", "launch", "mixture_train", "peer_train", "eval_ppl",
                                             "eval_routing"};
  return s;
}

RunOptions parse_run_config(const json& config, json* sections) {
  require(config.is_object(), "run: the config must be a JSON object");
  json top = json::object(), sec = json::object();
  for (auto it = config.begin(); it != config.end(); ++it) {
    bool is_section = false;
    for (const auto& s : run_config_sections()) is_section = is_section || s == it.key();
    if (is_section) {
      require(it.value().is_object(), "run: section \"" + it.key() + "\" must be an object");
      sec[it.key()] = it.value();
    } else {
      top[it.key()] = it.value();
    }
  }
  RunOptions o;
  config::read_into(o, top);
  config::validate(o);
  if (sections) *sections = sec;
  return o;
}

namespace {

struct Ctx {
  RunOptions o;
  json sec;
  stdfs::path run;
  std::string moin;
  json stages = json::array();
  stdfs::path marker(const std::string& stage) const { return run / "stages" / (stage + ".done"); }
  json section(const std::string& name) const { return sec.contains(name) ? sec[name] : json::object(); }
  std::string path(const std::string& rel) const { return (run / rel).string(); }
};

// Runs one stage unless its marker exists; records its wall time.
void stage(Ctx& c, const std::string& name, const std::function<json()>& body) {
  if (stdfs::exists(c.marker(name))) {
    auto m = fs::read_json(c.marker(name));
    spdlog::info("run: stage {} already done ({:.1f} s), skipped", name, m.value("seconds", 0.0));
    m["skipped"] = true;
    c.stages.push_back(m);
    return;
  }
  spdlog::info("run: stage {} ...", name);
  auto t0 = std::chrono::steady_clock::now();
  json extra = body();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json m = {{"stage", name}, {"seconds", s}, {"finished", static_cast<std::int64_t>(std::time(nullptr))}};
  if (extra.is_object()) m["result"] = extra;
  fs::write_json_atomic(c.marker(name), m);
  spdlog::info("run: stage {} done in {:.1f} s", name, s);
  c.stages.push_back(m);
}

// A stage command: `moin ARGS`, its output shown and appended to RUN/logs/<stage>.log. Run directly, not
// through a shell pipeline, so that the stage is this process's own child and dies with it (process.h).
void child(Ctx& c, const std::string& stage_name, const std::vector<std::string>& args) {
  std::string log = c.path("logs/" + stage_name + ".log");
  std::vector<std::string> argv{c.moin};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string shown;
  for (const auto& a : args) shown += (shown.empty() ? "" : " ") + shell_quote(a);
  spdlog::info("run: moin {}", shown);
  auto r = run_process(argv, true, log);
  if (r.exit_code != 0)
    throw std::runtime_error("stage " + stage_name + " failed (exit " + std::to_string(r.exit_code) + "); see " + log);
}

// {"path", "bytes", "sha256"} of a corpus file. The hash is kept in RUN/work/corpus-hashes.json by path, size
// and modification time, so the report, rebuilt on every run, hashes a large corpus once.
json corpus_identity(Ctx& c, const std::string& file) {
  std::error_code ec;
  const auto bytes = static_cast<std::int64_t>(stdfs::file_size(file, ec));
  if (ec) return {{"path", file}, {"bytes", -1}, {"sha256", ""}};
  const auto mtime = stdfs::last_write_time(file, ec).time_since_epoch().count();
  const std::string cache = c.path("work/corpus-hashes.json");
  json known = stdfs::exists(cache) ? fs::read_json(cache) : json::object();
  const std::string key = file + "|" + std::to_string(bytes) + "|" + std::to_string(mtime);
  if (!known.contains(key)) {
    known[key] = sha256_file(file);
    fs::ensure_dir(c.path("work"));
    fs::write_json_atomic(cache, known);
  }
  return {{"path", file}, {"bytes", bytes}, {"sha256", known[key]}};
}

std::string write_config(Ctx& c, const std::string& name, const json& j) {
  std::string p = c.path("configs/" + name + ".json");
  fs::write_json_atomic(p, j);
  return p;
}

// The model a full-mode training run leaves in `dir` (train's output folder holds it directly).
std::string model_dir_in(const std::string& dir) {
  const stdfs::path p(dir);
  if (stdfs::exists(p / "config.json") &&
      (stdfs::exists(p / "model.safetensors") || stdfs::exists(p / "model.safetensors.index.json")))
    return dir;
  throw UserError("no model (config.json + model.safetensors) in " + dir);
}

// The adapter a LoRA training run leaves in `dir` (train's output folder holds it directly).
std::string adapter_dir_in(const std::string& dir) {
  if (stdfs::exists(stdfs::path(dir) / "adapter_config.json")) return dir;
  throw UserError("no adapter (adapter_config.json) in " + dir);
}

// The train section of a baseline (dense_lora, cpt_train, mixture_train, peer_train): the experts' section overlaid with the
// baseline's own keys. Without a budget of its own (token_budget or max_steps) the baseline gets
// token_budget = the tokens of one expert run, which a run over every cluster multiplies by the number of
// clusters: it trains on as many tokens as all the experts together, the comparison MoIN makes.
json baseline_section(const Ctx& c, const std::string& name) {
  const json expert = c.section("expert"), own = c.section(name);
  json t = expert;
  for (auto it = own.begin(); it != own.end(); ++it) t[it.key()] = it.value();
  if (own.contains("token_budget") || own.contains("max_steps")) return t;
  TrainOptions e;
  config::read_into(e, expert);
  std::int64_t per_expert = e.token_budget > 0 ? e.token_budget : e.max_steps * e.tokens_per_step();
  require(per_expert > 0, "run: section expert names no budget (token_budget or max_steps)");
  t.erase("max_steps");
  t["token_budget"] = per_expert;
  return t;
}

// The tokenizer given, else the given base's own, else the one this run trains.
std::string tokenizer_path(const Ctx& c) {
  if (!c.o.tokenizer.empty()) return c.o.tokenizer;
  std::string own = c.o.base.empty() ? "" : Tokenizer::find_in_model_dir(c.o.base);
  return own.empty() ? c.path("tokenizer/tok.model") : own;
}

void stage_tokenizer(Ctx& c) {
  if (tokenizer_path(c) != c.path("tokenizer/tok.model")) return;
  fs::ensure_dir(c.path("tokenizer"));
  std::vector<std::string> texts, labels;
  read_jsonl_docs(c.o.train_data, c.o.text_field, "", c.o.tokenizer_docs, texts, labels);
  require(!texts.empty(), "run: no documents in " + c.o.train_data);
  std::string lines = c.path("tokenizer/train.txt");
  {
    std::ofstream out(lines, std::ios::binary);
    for (auto& t : texts) {
      for (char& ch : t)
        if (ch == '\n' || ch == '\r') ch = ' ';
      out << t << "\n";
    }
  }
  TokenizerTrainOptions to;
  to.input = {lines};
  to.model_prefix = c.path("tokenizer/tok");
  to.vocab_size = c.o.vocab_size;
  to.max_sentence_length = 1 << 16;
  train_tokenizer(to);
  stdfs::remove(lines);
}

}  // namespace

json run_pipeline(const RunOptions& opts, const json& sections) {
  auto t0 = std::chrono::steady_clock::now();
  Ctx c;
  c.o = opts;
  c.sec = sections;
  c.run = stdfs::absolute(opts.output);
  c.moin = opts.moin.empty() ? (stdfs::path(executable_dir()) / "moin").string() : opts.moin;
  fs::FolderLock lock(c.run);  // one `moin run` per run directory; each stage locks its own subfolder
  for (const char* d : {"", "stages", "configs", "logs", "report"}) fs::ensure_dir(c.path(d));
  fs::write_json_atomic(c.path("run.config.json"), [&] {
    json j = config::to_json(opts);
    for (auto it = sections.begin(); it != sections.end(); ++it) j[it.key()] = it.value();
    return j;
  }());
  const std::string train = stdfs::absolute(opts.train_data).string();
  const std::string valid = stdfs::absolute(opts.valid_data).string();

  stage(c, "tokenizer", [&] {
    stage_tokenizer(c);
    return json{{"tokenizer", tokenizer_path(c)}};
  });
  const std::string tok = stdfs::absolute(tokenizer_path(c)).string();
  const Tokenizer tokenizer = Tokenizer::load(tok);
  const int vocab = tokenizer.vocab_size();

  stage(c, "partition", [&] {
    json p = c.section("partition");
    p["corpus"]["inputs"] = json::array({train});
    p["corpus"]["text_field"] = opts.text_field;
    p["corpus"]["label_field"] = opts.label_field;
    p["tokenizer"] = tok;
    p["output"] = c.path("partition");
    // The model embedder reads documents with the base model, which must exist before the partition:
    // a given base, not the one the pipeline pre-trains on the partition's clusters.
    if (p.contains("embedder") && p["embedder"].value("type", std::string()) == "model") {
      if (p["embedder"].value("model_dir", std::string()).empty()) {
        require(!opts.base.empty(),
                "run: partition.embedder.type=model needs a base model (set `base`, or "
                "partition.embedder.model_dir): the pipeline pre-trains its base on the partition, so it cannot "
                "embed the partition's documents with it");
        p["embedder"]["model_dir"] = stdfs::absolute(opts.base).string();
      }
      if (!p["embedder"].contains("device")) p["embedder"]["device"] = opts.device;
    }
    child(c, "partition", {"partition", "--config", write_config(c, "partition", p)});
    return json::object();
  });
  const std::string partition = c.path("partition");

  std::string base = opts.base.empty() ? "" : stdfs::absolute(opts.base).string();
  stage(c, "base", [&] {
    if (!base.empty()) return json{{"base", base}, {"pretrained", false}};
    json m = c.section("model");
    m["vocab_size"] = vocab;
    // The tokenizer's own BOS/EOS (a tokenizer.json may have no BOS: Qwen2's has none).
    auto id_or_null = [](int id) { return id >= 0 ? json(id) : json(nullptr); };
    m["bos_token_id"] = id_or_null(tokenizer.bos_id());
    m["eos_token_id"] = id_or_null(tokenizer.eos_id());
    if (!m.contains("model_type")) m["model_type"] = "llama";  // the section may name mistral, qwen2 or qwen3
    m.erase("architectures");                                  // follows model_type
    fs::ensure_dir(c.path("configs/base-model"));
    // Read and written back as a whole config.json, so a bad section fails here, naming the key.
    LlamaConfig::from_json(m, "run: section model").save(c.path("configs/base-model/config.json"));
    json t = c.section("pretrain");
    t["mode"] = "full";
    t["partition"] = partition;
    t["model_config"] = c.path("configs/base-model/config.json");
    t["output"] = c.path("base");
    t["device"] = opts.device;
    child(c, "base", {"train", "--config", write_config(c, "pretrain", t), "--resume"});
    return json{{"base", model_dir_in(c.path("base"))}, {"pretrained", true}};
  });
  if (base.empty()) base = model_dir_in(c.path("base"));

  stage(c, "experts", [&] {
    json t = c.section("expert");
    t["mode"] = "expert";
    t["partition"] = partition;
    t["base"] = base;
    t["device"] = opts.device;
    json l = c.section("launch");
    l["partition"] = partition;
    l["config"] = write_config(c, "expert", t);
    l["output"] = c.path("experts");
    l["jobs"] = opts.jobs;
    l["moin"] = c.moin;
    // `moin launch --config` names the train config every job uses; the launcher's own keys go as --set.
    write_config(c, "launch", l);
    std::vector<std::string> args{"launch", "--config", l["config"].get<std::string>()};
    for (auto it = l.begin(); it != l.end(); ++it) {
      if (it.key() == "config") continue;
      args.push_back("--set");
      args.push_back(it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()));
    }
    child(c, "experts", args);
    return json::object();
  });

  if (opts.dense)
    stage(c, "dense", [&] {
      json t = baseline_section(c, "dense_lora");
      t["mode"] = "dense-lora";
      t["partition"] = partition;
      t["cluster"] = -1;
      t["base"] = base;
      t["output"] = c.path("dense");
      t["device"] = opts.device;
      child(c, "dense", {"train", "--config", write_config(c, "dense_lora", t), "--resume"});
      return json::object();
    });
  if (opts.cpt)
    stage(c, "cpt", [&] {
      json t = baseline_section(c, "cpt_train");
      t.erase("lora");
      t["mode"] = "full";
      t["partition"] = partition;
      t["base"] = base;
      t["output"] = c.path("cpt");
      t["device"] = opts.device;
      child(c, "cpt", {"train", "--config", write_config(c, "cpt_train", t), "--resume"});
      return json::object();
    });

  if (opts.mixture)
    stage(c, "mixture", [&] {
      json t = baseline_section(c, "mixture_train");
      t.erase("lora");
      t["mode"] = "mixture";
      t["partition"] = partition;
      t["cluster"] = -1;
      t["base"] = base;
      t["experts"] = c.path("experts");
      t["output"] = c.path("mixture");
      t["device"] = opts.device;
      child(c, "mixture", {"train", "--config", write_config(c, "mixture_train", t), "--resume"});
      return json::object();
    });
  if (opts.peer)
    stage(c, "peer", [&] {
      json t = baseline_section(c, "peer_train");
      t.erase("lora");
      t["mode"] = "peer";
      t["partition"] = partition;
      t["cluster"] = -1;
      t["base"] = base;
      t["experts"] = c.path("experts");  // the parameters to match, unless the section sizes the blocks
      t["output"] = c.path("peer");
      t["device"] = opts.device;
      child(c, "peer", {"train", "--config", write_config(c, "peer_train", t), "--resume"});
      return json::object();
    });

  const std::string report = c.path("report");
  stage(c, "eval_ppl", [&] {
    PplOptions p;
    config::read_into(p, c.section("eval_ppl"));
    p.data = valid;
    p.text_field = opts.text_field;
    p.label_field = opts.label_field;
    p.base = base;
    p.tokenizer = tok;
    p.partition = partition;
    p.experts = c.path("experts");
    p.dense = opts.dense ? adapter_dir_in(c.path("dense")) : "";
    p.cpt = opts.cpt ? model_dir_in(c.path("cpt")) : "";
    p.mixture = opts.mixture ? c.path("mixture") : "";
    p.peer = opts.peer ? c.path("peer") : "";
    p.device = opts.device;
    p.json = report + "/ppl.json";
    p.markdown = report + "/ppl.md";
    config::validate(p);
    fs::write_json_atomic(c.path("configs/eval_ppl.json"), config::to_json(p));
    run_eval_ppl(p);
    return json::object();
  });
  stage(c, "eval_routing", [&] {
    RoutingEvalOptions r;
    config::read_into(r, c.section("eval_routing"));
    r.data = valid;
    r.text_field = opts.text_field;
    r.label_field = opts.label_field;
    r.partition = partition;
    r.tokenizer = tok;
    r.ppl_json = report + "/ppl.json";
    r.json = report + "/routing.json";
    r.markdown = report + "/routing.md";
    config::validate(r);
    fs::write_json_atomic(c.path("configs/eval_routing.json"), config::to_json(r));
    run_eval_routing(r);
    return json::object();
  });

  // The report is rebuilt on every run (cheap), from the stage results on disk.
  double total = 0;
  for (const auto& s : c.stages) total += s.value("seconds", 0.0);
  json rep;
  rep["run"] = c.run.string();
  rep["stages"] = c.stages;
  rep["stage_seconds_total"] = total;
  rep["this_invocation_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rep["perplexity"] = fs::read_json(report + "/ppl.json");
  rep["routing"] = fs::read_json(report + "/routing.json");
  if (const PartitionLayout part(c.path("partition")); part.finished()) rep["partition"] = part.read_manifest();
  // Which corpus produced the figures: the same config on another machine can build another corpus (the
  // demo's comes from the host's Debian packages), and only its hash tells the two apart.
  rep["corpus"] = {{"train", corpus_identity(c, train)}, {"valid", corpus_identity(c, valid)}};

  std::ostringstream md;
  md << "# MoIN run report\n\nRun directory: `" << c.run.string() << "`; config: `run.config.json`.\n\n";
  md << "## Corpus\n\n| split | file | bytes | sha256 |\n| --- | --- | ---: | --- |\n";
  for (const char* split : {"train", "valid"})
    md << "| " << split << " | `" << rep["corpus"][split]["path"].get<std::string>() << "` | "
       << rep["corpus"][split]["bytes"].get<std::int64_t>() << " | `" << rep["corpus"][split]["sha256"].get<std::string>()
       << "` |\n";
  md << "\n## Stages\n\n| stage | wall time (s) | this invocation |\n| --- | ---: | --- |\n";
  for (const auto& s : c.stages)
    md << "| " << s.value("stage", "") << " | " << fmt::format("{:.1f}", s.value("seconds", 0.0)) << " | "
       << (s.value("skipped", false) ? "skipped (done before)" : "ran") << " |\n";
  md << "| total | " << fmt::format("{:.1f}", total) << " | |\n\n";
  md << "## Perplexity\n\n" << fs::read_text(report + "/ppl.md")
     << "\n![change against the base](perplexity_change.png)\n![perplexity](perplexity.png)\n"
     << "![change per cluster](perplexity_change_per_cluster.png)\n\n";
  md << "## Routing\n\n" << fs::read_text(report + "/routing.md")
     << "\n![routing vs prefix](routing_vs_prefix.png)\n![cluster sizes](cluster_sizes.png)\n";
  fs::write_json_atomic(report + "/report.json", rep);
  fs::write_atomic(report + "/report.md", md.str());
  return rep;
}

}  // namespace moin
