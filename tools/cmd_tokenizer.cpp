// moin tokenizer train | encode | decode
#include <iostream>

#include "cli.h"
#include "moin/core/json.h"
#include "moin/data/tokenizer.h"
#include "moin/data/tokenizer_corpus.h"

namespace moin::cli {

void register_tokenizer(CLI::App& app) {
  auto* tok = app.add_subcommand("tokenizer", "Train a SentencePiece tokenizer, or apply one or a tokenizer.json");
  tok->require_subcommand(1);

  {
    auto* cmd = tok->add_subcommand("train", "Train a BPE or unigram SentencePiece model on text files");
    auto& common = add_common(cmd);
    static std::string text_field = "text";
    cmd->add_option("--text-field", text_field, "JSONL inputs: dotted path of the text (default text)");
    auto& flags = add_flags<TokenizerTrainOptions>(cmd, {{"model_prefix", "--output"}});
    set_action(cmd, common, [&flags, &common] {
      auto opts = resolve<TokenizerTrainOptions>(common, flags.given());
      CorpusOptions corpus;
      corpus.text_field = text_field;
      train_tokenizer_on_corpus(opts, corpus);
      save_config_beside(opts.model_prefix,
                         std::filesystem::path(opts.model_prefix).filename().string() + ".tokenizer", opts);
      spdlog::info("wrote {}.model (vocabulary {})", opts.model_prefix, opts.vocab_size);
    });
  }
  {
    auto* cmd = tok->add_subcommand("encode", "Print the token ids of each line of stdin (or --text)");
    auto& common = add_common(cmd);
    static std::string model, text, text_field = "text";
    static bool special = false, jsonl = false;
    cmd->add_option("--model", model, "SentencePiece .model or Hugging Face tokenizer.json")->required();
    cmd->add_option("--text", text, "text to encode instead of stdin");
    cmd->add_flag("--bos,--add-special", special,
                  "add the tokenizer's own special tokens: BOS for a .model, the post-processor's template "
                  "(e.g. Llama-3's <|begin_of_text|>) for a tokenizer.json");
    cmd->add_flag("--jsonl", jsonl, "stdin is JSONL (documents may span lines); print one JSON id list per document");
    cmd->add_option("--text-field", text_field, "--jsonl: the field holding the text (default text)");
    set_action(cmd, common, [cmd] {
      auto tok = Tokenizer::load(model);
      auto emit = [&](const std::string& line) {
        auto ids = tok.encode(line, special);
        if (jsonl) {
          std::cout << json(ids).dump() << "\n";
          return;
        }
        for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
        std::cout << "\n";
      };
      if (cmd->count("--text")) {
        emit(text);
        return;
      }
      std::string line;
      for (std::int64_t n = 1; std::getline(std::cin, line); ++n) {
        if (!jsonl) {
          emit(line);
          continue;
        }
        json j = parse_json_or_discard(line);
        if (j.is_discarded() || !j.is_object() || !j.contains(text_field) || !j[text_field].is_string())
          throw UserError("tokenizer encode: stdin line " + std::to_string(n) + " is not a JSON object with a string \"" +
                          text_field + "\"");
        emit(j[text_field].get<std::string>());
      }
    });
  }
  {
    auto* cmd = tok->add_subcommand("decode", "Decode space-separated token ids, one sequence per line of stdin");
    auto& common = add_common(cmd);
    static std::string model;
    static bool skip_special = false, jsonl = false;
    cmd->add_option("--model", model, "SentencePiece .model or Hugging Face tokenizer.json")->required();
    cmd->add_flag("--skip-special", skip_special, "leave special tokens (BOS, EOS, added special tokens) out");
    cmd->add_flag("--jsonl", jsonl, "each stdin line is a JSON id list; print each text as a JSON string");
    set_action(cmd, common, [] {
      auto tok = Tokenizer::load(model);
      std::string line;
      auto check = [&](long long id) {
        if (id < 0 || id >= tok.vocab_size())
          throw UserError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                          std::to_string(tok.vocab_size()) + ")");
        return static_cast<int>(id);
      };
      while (std::getline(std::cin, line)) {
        std::vector<int> ids;
        if (jsonl) {
          json j = parse_json_or_discard(line);
          if (j.is_discarded() || !j.is_array()) throw UserError("tokenizer decode: a stdin line is not a JSON id list");
          for (const auto& v : j) {
            if (!v.is_number_integer()) throw UserError("tokenizer decode: a stdin line is not a JSON id list");
            ids.push_back(check(v.get<long long>()));
          }
          std::cout << json(tok.decode(ids, skip_special)).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
          continue;
        }
        // Ids separated by spaces or commas; a JSON list's brackets are allowed too. Anything else is an error,
        // not an empty line.
        std::string words = line;
        for (char& c : words)
          if (c == ',' || c == '[' || c == ']') c = ' ';
        std::istringstream ss(words);
        std::string word;
        while (ss >> word) {
          std::size_t used = 0;
          long long id = 0;
          try {
            id = std::stoll(word, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used != word.size())
            throw UserError("tokenizer decode: \"" + word + "\" is not a token id (give integers separated by spaces)");
          ids.push_back(check(id));
        }
        std::cout << tok.decode(ids, skip_special) << "\n";
      }
    });
  }
}

}  // namespace moin::cli
