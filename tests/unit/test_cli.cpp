// The CLI contract: help for every command, exit 2 with one clear line for user errors.
#include <gtest/gtest.h>

#include "test_util.h"

namespace {

using moin::test::run_moin;
using moin::test::TempDir;

TEST(Cli, HelpDescribesEveryCommand) {
  auto r = run_moin("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const char* top[] = {"tokenizer", "config", "route", "eval", "run", "partition", "train", "launch", "convert",
                       "init-model", "generate", "logits", "lora", "embed", "inspect"};
  for (const char* cmd : top) EXPECT_NE(r.output.find(cmd), std::string::npos) << cmd;
  // Every command, down to the leaves: help exits 0 and names the common flags.
  const char* leaves[] = {"tokenizer train", "tokenizer encode", "tokenizer decode", "config", "route", "eval ppl",
                          "eval routing", "eval nmi", "run", "partition", "train", "launch", "convert llama2c",
                          "init-model", "generate", "logits", "lora init", "lora merge", "embed", "inspect"};
  for (const char* cmd : leaves) {
    r = run_moin(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("--set"), std::string::npos) << cmd;
    EXPECT_NE(r.output.find("--log-level"), std::string::npos) << cmd;
  }
  for (const char* parent : {"tokenizer", "eval", "convert", "lora"}) {
    r = run_moin(std::string(parent) + " --help");
    EXPECT_EQ(r.exit_code, 0) << parent << ": " << r.output;
  }
  r = run_moin("tokenizer train --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("vocab_size (int, default 4096)"), std::string::npos) << r.output;
  // A command with an options struct has a flag for every config key (nested keys included), and keeps
  // its short names.
  r = run_moin("partition --help");
  for (const char* f : {"--clusters", "--kmeans-k", "--input", "--corpus-inputs", "--kmeans-balance-factor",
                        "--embedder-dim", "--sample"})
    EXPECT_NE(r.output.find(f), std::string::npos) << f << "\n" << r.output;
  r = run_moin("train --help");
  for (const char* f : {"--mode", "--cluster", "--lora-r", "--resume", "--seq-len"})
    EXPECT_NE(r.output.find(f), std::string::npos) << f << "\n" << r.output;
}

TEST(Cli, UnknownConfigKeyExits2AndSuggests) {
  auto r = run_moin("tokenizer train --input /dev/null --output x --set vocab_sise=10");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("did you mean 'vocab_size'"), std::string::npos) << r.output;
}

TEST(Cli, WrongTypeExits2NamingTheType) {
  TempDir dir;
  moin::test::write_file(dir / "cfg.json", R"({"vocab_size": "big"})");
  auto r = run_moin("tokenizer train --config " + (dir / "cfg.json"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("'vocab_size' must be an integer"), std::string::npos) << r.output;
}

TEST(Cli, BadInputIsAUserErrorNotACrash) {
  auto r = run_moin("tokenizer encode --model /nonexistent.model --text hi");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no such file"), std::string::npos) << r.output;
  r = run_moin("no-such-command");
  EXPECT_EQ(r.exit_code, 2);
  r = run_moin("tokenizer train --config /nonexistent.json");
  EXPECT_EQ(r.exit_code, 2);
  r = run_moin("config nosuchstage");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown stage"), std::string::npos);
}

TEST(Cli, TrainWritesEffectiveConfigAndEncodes) {
  TempDir dir;
  std::string corpus = dir / "c.txt";
  std::string text;
  for (int i = 0; i < 300; ++i) text += "moin routes every query to one expert number " + std::to_string(i % 17) + "\n";
  moin::test::write_file(corpus, text);
  auto r = run_moin("tokenizer train -q --input " + corpus + " --output " + (dir / "t") + " --vocab-size 400" +
                    " --num-threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "t.model"));
  auto cfg = moin::test::read_file(dir / "t.tokenizer.config.json");
  EXPECT_NE(cfg.find("\"vocab_size\": 400"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("\"num_threads\": 1"), std::string::npos) << cfg;  // a flag made from the config key
  r = run_moin("tokenizer train -q --input " + corpus + " --output " + (dir / "u") + " --vocab-size big");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--vocab-size"), std::string::npos) << r.output;
  r = run_moin("tokenizer encode -q --model " + (dir / "t.model") + " --text 'one expert'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(r.output.empty());
}

}  // namespace
