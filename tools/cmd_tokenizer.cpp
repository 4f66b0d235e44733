// moin tokenizer train | encode | decode
#include <iostream>

#include "cli.h"
#include "moin/data/tokenizer.h"
#include "moin/data/tokenizer_corpus.h"

namespace moin::cli {

void register_tokenizer(CLI::App& app) {
  auto* tok = app.add_subcommand("tokenizer", "Train or apply a SentencePiece tokenizer");
  tok->require_subcommand(1);

  {
    auto* cmd = tok->add_subcommand("train", "Train a BPE or unigram SentencePiece model on text files");
    auto& common = add_common(cmd);
    static std::vector<std::string> input;
    static std::string output, model_type, text_field = "text";
    static int vocab = 0;
    auto* o_in = cmd->add_option("--input", input,
                                 "text files (one sentence per line), or JSONL corpora (.jsonl/.json/.ndjson, "
                                 "optionally .gz or .zst) whose --text-field is read");
    cmd->add_option("--text-field", text_field, "JSONL inputs: dotted path of the text (default text)");
    auto* o_out = cmd->add_option("--output", output, "output prefix: writes PREFIX.model and PREFIX.vocab");
    auto* o_vocab = cmd->add_option("--vocab-size", vocab, "vocabulary size");
    auto* o_type = cmd->add_option("--model-type", model_type, "bpe or unigram");
    add_reference<TokenizerTrainOptions>(cmd);
    set_action(cmd, common, [=, &common] {
      json flags;
      flag(flags, o_in, "input", input);
      flag(flags, o_out, "model_prefix", output);
      flag(flags, o_vocab, "vocab_size", vocab);
      flag(flags, o_type, "model_type", model_type);
      auto opts = resolve<TokenizerTrainOptions>(common, flags);
      CorpusOptions corpus;
      corpus.text_field = text_field;
      train_tokenizer_on_corpus(opts, corpus);
      save_effective_config(std::filesystem::path(opts.model_prefix).parent_path().string().empty()
                                ? "."
                                : std::filesystem::path(opts.model_prefix).parent_path().string(),
                            std::filesystem::path(opts.model_prefix).filename().string() + ".tokenizer", opts);
      spdlog::info("wrote {}.model (vocabulary {})", opts.model_prefix, opts.vocab_size);
    });
  }
  {
    auto* cmd = tok->add_subcommand("encode", "Print the token ids of each line of stdin (or --text)");
    auto& common = add_common(cmd);
    static std::string model, text;
    static bool bos = false;
    cmd->add_option("--model", model, "SentencePiece .model file")->required();
    cmd->add_option("--text", text, "text to encode instead of stdin");
    cmd->add_flag("--bos", bos, "prepend the BOS id");
    set_action(cmd, common, [cmd] {
      auto tok = Tokenizer::load(model);
      auto emit = [&](const std::string& line) {
        auto ids = tok.encode(line);
        if (bos) ids.insert(ids.begin(), tok.bos_id());
        for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
        std::cout << "\n";
      };
      if (cmd->count("--text")) {
        emit(text);
      } else {
        std::string line;
        while (std::getline(std::cin, line)) emit(line);
      }
    });
  }
  {
    auto* cmd = tok->add_subcommand("decode", "Decode space-separated token ids, one sequence per line of stdin");
    auto& common = add_common(cmd);
    static std::string model;
    cmd->add_option("--model", model, "SentencePiece .model file")->required();
    set_action(cmd, common, [] {
      auto tok = Tokenizer::load(model);
      std::string line;
      while (std::getline(std::cin, line)) {
        std::vector<int> ids;
        std::istringstream ss(line);
        int id;
        while (ss >> id) {
          if (id < 0 || id >= tok.vocab_size())
            throw UserError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                            std::to_string(tok.vocab_size()) + ")");
          ids.push_back(id);
        }
        std::cout << tok.decode(ids) << "\n";
      }
    });
  }
}

}  // namespace moin::cli
