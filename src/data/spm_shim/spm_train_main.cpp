// moin_spm_train: runs sentencepiece's trainer in its own process (see spm_shim.h for why).
// Usage: moin_spm_train "--input=... --model_prefix=... ..."
#include <sentencepiece_trainer.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: moin_spm_train 'TRAINER FLAGS'\n");
    return 2;
  }
  auto status = sentencepiece::SentencePieceTrainer::Train(argv[1]);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
