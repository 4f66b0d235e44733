// moin embed: embed (or tokenize) each line of stdin with an embedder; the hook the Python reference
// checks use, and a way for users to look at what a partition's embedder sees.
#include <cstdio>
#include <iostream>

#include "cli.h"
#include "moin/model/sentence_encoder.h"
#include "moin/partition/embedder.h"

namespace moin::cli {

namespace {

// A line holding a JSON object with "text" is a corpus record (JSONL); any other line is the text itself.
std::string line_text(const std::string& line) {
  if (!line.empty() && line[0] == '{') {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("text") && j["text"].is_string()) return j["text"].get<std::string>();
  }
  return line;
}

}  // namespace

void register_embed(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "embed", "Embed each line of stdin (plain text, or JSONL with a \"text\" field): one line of floats per input "
               "line on stdout, or token ids with --ids");
  auto& common = add_common(cmd);
  static std::string embedder = "encoder", encoder_dir, model_dir, tokenizer, device, from;
  static int max_length = 0, batch_size = 32, chunk = 1024, layer = -1;
  static bool ids = false;
  cmd->add_option("--embedder", embedder,
                  "embedder type: encoder, or model (raw pooled states, not centred: a partition's centred "
                  "model embedder is used with --from)")
      ->capture_default_str();
  cmd->add_option("--encoder", encoder_dir, "sentence-transformers model folder (for --embedder encoder)");
  cmd->add_option("--model", model_dir, "Llama model folder (for --embedder model)");
  cmd->add_option("--tokenizer", tokenizer, "SentencePiece .model or tokenizer.json (for --embedder model; default MODEL/tokenizer.model, else MODEL/tokenizer.json)");
  cmd->add_option("--layer", layer, "hidden_states index to pool (for --embedder model; -1 = last)")->capture_default_str();
  cmd->add_option("--max-length", max_length, "tokens per text (0 = the model's max_seq_length)")->capture_default_str();
  cmd->add_option("--batch-size", batch_size, "texts per forward pass")->capture_default_str();
  cmd->add_option("--device", device, "cpu, cuda, cuda:N (default: CUDA when available)");
  cmd->add_option("--from", from, "use the embedder saved in this folder (a partition dir's embedder.json)");
  cmd->add_flag("--ids", ids, "print the token ids ([CLS] ... [SEP]) instead of embeddings");
  set_action(cmd, common, [] {
    require(batch_size > 0, "--batch-size must be positive");
    require(!from.empty() || embedder == "encoder" || embedder == "model",
            "moin embed: --embedder " + embedder + " must be fitted first; pass --from PARTITION_DIR to use a saved one");
    require(!(ids && !from.empty()), "moin embed: --ids needs --encoder DIR, not --from");
    require(!(ids && embedder == "model"), "moin embed: --ids is for --embedder encoder (`moin tokenizer encode` shows SentencePiece ids)");
    std::unique_ptr<SentenceEncoder> tok_only;
    std::unique_ptr<Embedder> emb;
    if (ids) {
      SentenceEncoderOptions o;
      o.max_length = max_length;
      o.device = "cpu";
      tok_only = std::make_unique<SentenceEncoder>(SentenceEncoder::load(encoder_dir, o));
    } else if (!from.empty()) {
      emb = load_embedder(from);
    } else {
      EmbedderOptions o;
      o.type = embedder;
      o.encoder_dir = encoder_dir;
      o.model_dir = model_dir;
      o.tokenizer = tokenizer;
      o.layer = layer;
      o.batch_size = batch_size;
      if (max_length > 0) o.max_length = max_length;
      o.center = false;  // the mean is learned from a fit sample; here every line is embedded on its own terms
      if (!device.empty()) o.device = device;
      emb = make_embedder(o);
    }
    std::vector<std::string> texts;
    auto flush = [&] {
      if (texts.empty()) return;
      std::string out;
      char buf[32];
      if (ids) {
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
