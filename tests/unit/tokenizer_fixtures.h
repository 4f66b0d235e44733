// A small SentencePiece model trained on generated text (a 12-word language), for tests that need a real
// tokenizer but no real data.
#pragma once
#include <fstream>
#include <random>
#include <string>

#include "moin/data/tokenizer.h"
#include "test_util.h"

namespace moin::test {

// Trains DIR/tok.model and returns its path. vocab_size must leave room for the 256 byte pieces.
inline std::string train_tiny_tokenizer(const TempDir& dir, int vocab_size = 320) {
  std::string corpus = dir / "corpus.txt";
  std::ofstream out(corpus);
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"};
  std::mt19937 rng(7);
  for (int line = 0; line < 400; ++line) {
    for (int w = 0; w < 12; ++w) out << words[rng() % 12] << (w == 11 ? "" : " ");
    out << ".\n";
  }
  out.close();
  TokenizerTrainOptions o;
  o.input = {corpus};
  o.model_prefix = dir / "tok";
  o.vocab_size = vocab_size;
  train_tokenizer(o);
  return dir / "tok.model";
}

}  // namespace moin::test
