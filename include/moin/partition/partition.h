// The partition stage: corpus -> K clusters of documents -> per-cluster train/valid token shards.
//
// Three steps, each resumable and each leaving a marker in the output folder (docs/partition.md):
//   fit     read the corpus once, keep a uniform sample (reservoir), fit the embedder on it, embed it,
//           train k-means: writes embedder/, centroids.npy + kmeans.json, partition.config.json, fit.json.
//   assign  slice `shard` of `num_shards` (records whose corpus ordinal % num_shards == shard): embed each
//           document (batched), nearest centroid, train/valid split by a stable hash, tokenise (all
//           cores): writes work/shard-SSSSS-of-NNNNN/ (one token shard of its documents in corpus order,
//           docs.jsonl, ingest.json), renamed into place when complete.
//   merge   gathers every slice in corpus order into clusters/<c>/{train,valid}.{bin,idx,json},
//           assignments.jsonl, report.json, report.md and, last, manifest.json.
//           With kmeans.balance_factor > 0, assign also keeps every document's k centroid distances
//           (distances.f32) and merge caps every cluster at balanced_capacity(N, k, factor) documents (N:
//           all documents, train and valid) by the exact greedy of balance.h, in corpus order.
// run_partition() does all three (every slice in turn). Shards run as separate processes after one fit;
// merge produces the same bytes whatever num_shards was. The folder's files: partition/layout.h.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "moin/data/corpus.h"
#include "moin/partition/embedder.h"
#include "moin/partition/kmeans.h"

namespace moin {

struct PartitionOptions {
  CorpusOptions corpus;
  std::string tokenizer;            // tokenizer of the base model (.model or tokenizer.json)
  EmbedderOptions embedder;
  KMeansOptions kmeans;             // kmeans.k is the number of clusters (--clusters)
  std::int64_t sample = 50000;      // documents sampled (uniformly) to fit the embedder and k-means
  std::int64_t sample_max_bytes = 20000;
  double valid_fraction = 0.01;
  std::uint64_t seed = 1234;
  std::string output;
  int shard = -1;                   // assign: the slice to run (-1 = every slice, one after the other)
  int num_shards = 0;               // slices of the corpus (0 = 1 for fit/assign; merge: detect)
  int batch_docs = 1024;
  int threads = 0;
  bool overwrite = false;

  template <class V> void visit(V& v) {
    v("corpus", corpus, "the corpus: inputs, fields, bad-input handling");
    v("tokenizer", tokenizer, "tokenizer of the base model (SentencePiece .model or tokenizer.json); documents are tokenised with it");
    v("embedder", embedder, "how documents become vectors");
    v("kmeans", kmeans, "k-means; kmeans.k is the number of clusters");
    v("sample", sample, "documents sampled uniformly from the corpus to fit the embedder and train k-means");
    v("sample_max_bytes", sample_max_bytes, "each sampled document is cut to this many bytes (bounds memory)");
    v("valid_fraction", valid_fraction, "fraction of documents held out for validation (stable hash of the document)");
    v("seed", seed, "seed of the sample and of the train/valid split");
    v("output", output, "output folder (the partition directory)");
    v("shard", shard, "assign: run slice i of num_shards only (-1 = all slices in turn)");
    v("num_shards", num_shards, "number of corpus slices for assign/merge (0 = 1, or detected by merge)");
    v("batch_docs", batch_docs, "documents embedded and tokenised per batch");
    v("threads", threads, "threads for tokenisation (0 = all cores)");
    v("overwrite", overwrite, "start over when the output folder holds a partition made with other options");
  }
  void validate() const;
};

// The options that decide the result (everything but output, shard, num_shards, threads, batch_docs,
// overwrite, corpus.strict, corpus.max_examples). A finished step is redone only when these change.
nlohmann::json partition_fingerprint(const PartitionOptions& opts);

// What run_partition / partition_merge produced (also in manifest.json).
struct PartitionSummary {
  int clusters = 0;
  std::int64_t documents = 0, tokens = 0;
  std::int64_t train_documents = 0, valid_documents = 0;
  double nmi = -1, purity = -1;  // against corpus.label_field (-1 without labels)
  // kmeans.balance_factor > 0: the per-cluster cap and the documents moved off their nearest centroid.
  std::int64_t capacity = 0, moved_documents = 0;
  double seconds = 0;
};

// UserError when an input (a corpus file, a folder read recursively, a glob's folder) lies in the output
// folder, or the output folder lies in an input folder: the partition would write among the corpus's files
// (and overwrite would clear them). The CLI calls it before it takes the folder; fit again.
void check_partition_output(const PartitionOptions& opts);

// The steps. Each returns at once (logging "already done") when its marker exists and the fingerprint
// matches; a fingerprint mismatch is a UserError unless overwrite is set (then the folder is cleared).
void partition_fit(const PartitionOptions& opts);
void partition_assign(const PartitionOptions& opts, int shard, int num_shards);
PartitionSummary partition_merge(const PartitionOptions& opts);
// fit, assign every slice (or only opts.shard, then no merge), merge.
PartitionSummary run_partition(const PartitionOptions& opts);

// The options stored by fit in DIR/partition.config.json (UserError when DIR holds no fitted partition).
PartitionOptions load_partition_options(const std::string& dir);

}  // namespace moin
