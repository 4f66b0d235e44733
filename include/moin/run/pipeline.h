// `moin run CONFIG`: the whole MoIN pipeline from one config, into one run directory.
//
//   tokenizer  use the tokenizer given (.model or tokenizer.json) or the base's own, else train a
//              SentencePiece model on the training corpus
//   partition  `moin partition`: embed, k-means, per-cluster token shards        -> RUN/partition
//   base       use the checkpoint given, or pre-train a small one (`moin train --mode full`) -> RUN/base
//   experts    `moin launch`: one LoRA expert per cluster                          -> RUN/experts/<k>
//   dense      `moin train --mode dense-lora` (the dense LoRA baseline, optional)  -> RUN/dense
//   cpt        `moin train --mode full` from the base (continued pre-training, optional) -> RUN/cpt
//   mixture    `moin train --mode mixture`: a learned token-level router over the experts (optional)
//              -> RUN/mixture
//   peer       `moin train --mode peer`: PEER blocks beside the base's MLPs, as many parameters as the
//              experts (optional)                                                  -> RUN/peer
//   eval_ppl, eval_routing   the evaluations on the held-out data                  -> RUN/report
//   report     RUN/report/report.md + report.json (+ the PNG plots)
//
// The partition comes before the base because pre-training reads the partition's token shards (all
// clusters); with the "model" embedder the partition needs a base, so one must be given.
// Each finished stage leaves RUN/stages/<stage>.done; a re-run skips it, so a killed run resumes where it
// stopped (the stages themselves resume from their own checkpoints). Stage commands run as child
// processes of the same moin executable, with their configs in RUN/configs/ and logs in RUN/logs/.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "moin/core/error.h"

namespace moin {

struct RunOptions {
  std::string output = "runs/run";
  std::string train_data;
  std::string valid_data;
  std::string text_field = "text";
  std::string label_field = "meta.pile_set_name";
  std::string tokenizer;
  int vocab_size = 2048;
  std::int64_t tokenizer_docs = 20000;
  std::string base;
  bool dense = true;
  bool cpt = false;
  bool mixture = false;
  bool peer = false;
  std::string device = "auto";
  int jobs = 1;
  std::string moin;

  template <class V> void visit(V& v) {
    v("output", output, "the run directory");
    v("train_data", train_data, "training corpus (JSONL, Pile layout)");
    v("valid_data", valid_data, "held-out documents (JSONL) for the evaluations");
    v("text_field", text_field, "dotted path of the text in each JSON line");
    v("label_field", label_field, "dotted path of the reference label (reports only)");
    v("tokenizer", tokenizer,
      "SentencePiece .model or tokenizer.json to use (\"\" = the base's own tokenizer.model or tokenizer.json, "
      "else train a SentencePiece model on train_data)");
    v("vocab_size", vocab_size, "vocabulary of the trained tokenizer");
    v("tokenizer_docs", tokenizer_docs, "documents of train_data the tokenizer is trained on (a fixed uniform sample)");
    v("base", base, "base model folder to upcycle (\"\" = pre-train a small one: sections model + pretrain)");
    v("dense", dense, "train and evaluate the dense LoRA baseline (section dense_lora)");
    v("cpt", cpt, "train and evaluate continued pre-training of the base (section cpt_train)");
    v("mixture", mixture, "train and evaluate a learned token-level mixture of the experts (section "
      "mixture_train: train keys, mixture.top_k / attention / train_experts / balance_coef)");
    v("peer", peer, "train and evaluate PEER blocks beside the base's MLPs with the experts' parameter count "
      "(section peer_train: train keys, peer.layers / heads / top_k / key_dim / num_keys)");
    v("device", device, "device of every stage: auto, cpu, cuda");
    v("jobs", jobs, "expert training jobs at once on the CPU (moin launch --jobs)");
    v("moin", moin, "moin executable for the stage commands (\"\" = this one)");
  }
  void validate() const {
    require(!train_data.empty(), "run: train_data is required");
    require(!valid_data.empty(), "run: valid_data is required");
    require(vocab_size > 0, "run: vocab_size must be positive");
    require(jobs > 0, "run: jobs must be positive");
  }
};

// The sections of a run config passed through to each stage's own options (their keys are those of
// `moin config <stage>`): partition, model (the LlamaConfig of a pre-trained base), pretrain, expert,
// dense_lora, cpt_train, launch, mixture_train, peer_train, eval_ppl, eval_routing.
const std::vector<std::string>& run_config_sections();

// Splits a run config into RunOptions (the top-level keys) and the stage sections; UserError naming an
// unknown key.
RunOptions parse_run_config(const nlohmann::json& config, nlohmann::json* sections);

// Runs every unfinished stage; returns the report (also RUN/report/report.json).
nlohmann::json run_pipeline(const RunOptions& opts, const nlohmann::json& sections);

}  // namespace moin
