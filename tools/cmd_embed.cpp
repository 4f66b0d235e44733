// moin embed: embed (or tokenize) each line of stdin with an embedder; the hook the Python reference
// checks use, and a way for users to look at what a partition's embedder sees.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "moin/core/json.h"
#include "moin/model/sentence_encoder.h"
#include "moin/partition/embedder.h"

namespace moin::cli {

namespace {

// A line holding a JSON object with "text" is a corpus record (JSONL); any other line is the text itself.
std::string line_text(const std::string& line) {
  if (!line.empty() && line[0] == '{') {
    auto j = parse_json_or_discard(line);
    if (j.is_object() && j.contains("text") && j["text"].is_string()) return j["text"].get<std::string>();
  }
  return line;
}

}  // namespace

// The command's options (a struct, so that --config, --set and the help's key reference work as elsewhere).
struct EmbedOptions {
  std::string embedder = "encoder", encoder, model, tokenizer, device, from;
  int max_length = 0, batch_size = 32, layer = -1;
  bool ids = false;

  template <class V> void visit(V& v) {
    v("embedder", embedder, "embedder type: encoder, or model (raw pooled states, not centred: a partition's centred "
                            "model embedder is used with --from)");
    v("encoder", encoder, "sentence-transformers model folder (for --embedder encoder)");
    v("model", model, "Llama model folder (for --embedder model)");
    v("tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (for --embedder model; default MODEL/tokenizer.model, "
                              "else MODEL/tokenizer.json)");
    v("layer", layer, "hidden_states index to pool (for --embedder model; -1 = last)");
    v("max_length", max_length, "tokens per text (0 = the model's max_seq_length)");
    v("batch_size", batch_size, "texts per forward pass");
    v("device", device, "cpu, cuda, cuda:N (empty: CUDA when available)");
    v("from", from, "use the embedder a partition saved: the partition folder, or its embedder/ folder");
    v("ids", ids, "print the token ids ([CLS] ... [SEP]) instead of embeddings");
  }
};

void register_embed(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "embed", "Embed each line of stdin (plain text, or JSONL with a \"text\" field): one line of floats per input "
               "line on stdout, or token ids with --ids");
  auto& common = add_common(cmd);
  auto& flags = add_flags<EmbedOptions>(cmd);
  set_action(cmd, common, [&flags, &common] {
    const auto o = resolve<EmbedOptions>(common, flags.given());
    constexpr int chunk = 1024;
    require(o.batch_size > 0, "--batch-size must be positive");
    require(!o.from.empty() || o.embedder == "encoder" || o.embedder == "model",
            "moin embed: --embedder " + o.embedder + " must be fitted first; pass --from PARTITION_DIR to use a saved one");
    require(!(o.ids && !o.from.empty()), "moin embed: --ids needs --encoder DIR, not --from");
    require(!(o.ids && o.embedder == "model"), "moin embed: --ids is for --embedder encoder (`moin tokenizer encode` shows SentencePiece ids)");
    std::unique_ptr<SentenceEncoder> tok_only;
    std::unique_ptr<Embedder> emb;
    if (o.ids) {
      SentenceEncoderOptions so;
      so.max_length = o.max_length;
      so.device = "cpu";
      tok_only = std::make_unique<SentenceEncoder>(SentenceEncoder::load(o.encoder, so));
    } else if (!o.from.empty()) {
      // A partition folder keeps its embedder in embedder/ (layout.h); either folder is accepted.
      const auto inner = std::filesystem::path(o.from) / "embedder";
      const bool partition = !std::filesystem::exists(std::filesystem::path(o.from) / "embedder.json") &&
                             std::filesystem::exists(inner / "embedder.json");
      emb = load_embedder(partition ? inner.string() : o.from);
    } else {
      EmbedderOptions eo;
      eo.type = o.embedder;
      eo.encoder_dir = o.encoder;
      eo.model_dir = o.model;
      eo.tokenizer = o.tokenizer;
      eo.layer = o.layer;
      eo.batch_size = o.batch_size;
      if (o.max_length > 0) eo.max_length = o.max_length;
      eo.center = false;  // the mean is learned from a fit sample; here every line is embedded on its own terms
      if (!o.device.empty()) eo.device = o.device;
      emb = make_embedder(eo);
    }
    std::vector<std::string> texts;
    auto flush = [&] {
      if (texts.empty()) return;
      std::string out;
      char buf[32];
      if (o.ids) {
        for (const auto& seq : tok_only->tokenize(texts)) {
          for (std::size_t i = 0; i < seq.size(); ++i) out += (i ? " " : "") + std::to_string(seq[i]);
          out += "\n";
        }
      } else {
        std::vector<float> e = emb->embed(texts);
        const int d = emb->dim();
        for (std::size_t r = 0; r < texts.size(); ++r) {
          for (int c = 0; c < d; ++c) {
            std::snprintf(buf, sizeof buf, c ? " %.8g" : "%.8g", e[r * d + c]);
            out += buf;
          }
          out += "\n";
        }
      }
      std::fwrite(out.data(), 1, out.size(), stdout);
      texts.clear();
    };
    std::string line;
    while (std::getline(std::cin, line)) {
      texts.push_back(line_text(line));
      if (static_cast<int>(texts.size()) >= chunk) flush();
    }
    flush();
    std::fflush(stdout);
  });
}

}  // namespace moin::cli
