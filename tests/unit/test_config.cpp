#include <gtest/gtest.h>

#include "moin/core/config.h"
#include "moin/core/strings.h"

namespace {

struct InnerOptions {
  int rank = 8;
  double alpha = 16.0;
  std::vector<std::string> targets{"q", "v"};
  template <class V> void visit(V& v) {
    v("rank", rank, "LoRA rank");
    v("alpha", alpha, "LoRA alpha");
    v("targets", targets, "target modules");
  }
};

struct DemoOptions {
  std::string name = "demo";
  int clusters = 10;
  std::uint32_t seed = 1;
  bool spherical = true;
  InnerOptions lora;
  template <class V> void visit(V& v) {
    v("name", name, "run name");
    v("clusters", clusters, "number of clusters");
    v("seed", seed, "seed");
    v("spherical", spherical, "cosine k-means");
    v("lora", lora, "adapter settings");
  }
  void validate() const { moin::require(clusters > 0, "clusters must be positive"); }
};

using moin::UserError;
using moin::config::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsRoundTripThroughJson) {
  DemoOptions d;
  json j = moin::config::to_json(d);
  EXPECT_EQ(j["lora"]["rank"], 8);
  EXPECT_EQ(j["name"], "demo");
  DemoOptions back;
  back.clusters = 99;
  moin::config::read_into(back, j);
  EXPECT_EQ(back.clusters, 10);
  EXPECT_EQ(back.lora.targets, (std::vector<std::string>{"q", "v"}));
}

TEST(Config, UnknownKeyNamesClosestValidKey) {
  DemoOptions d;
  std::string msg = error_of([&] { moin::config::read_into(d, json{{"clustres", 5}}); });
  EXPECT_NE(msg.find("unknown key 'clustres'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'clusters'"), std::string::npos) << msg;
  msg = error_of([&] { moin::config::read_into(d, json{{"lora", {{"rnak", 4}}}}); });
  EXPECT_NE(msg.find("'lora.rnak'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'lora.rank'"), std::string::npos) << msg;
}

TEST(Config, WrongTypeNamesKeyAndExpectedType) {
  DemoOptions d;
  std::string msg = error_of([&] { moin::config::read_into(d, json{{"clusters", "ten"}}); });
  EXPECT_NE(msg.find("'clusters' must be an integer"), std::string::npos) << msg;
  msg = error_of([&] { moin::config::read_into(d, json{{"lora", {{"alpha", true}}}}); });
  EXPECT_NE(msg.find("'lora.alpha' must be a number"), std::string::npos) << msg;
  msg = error_of([&] { moin::config::read_into(d, json{{"seed", -1}}); });
  EXPECT_NE(msg.find("'seed' must be a non-negative integer"), std::string::npos) << msg;
  msg = error_of([&] { moin::config::read_into(d, json{{"lora", {{"targets", {"q", 3}}}}}); });
  EXPECT_NE(msg.find("'lora.targets[1]' must be a string"), std::string::npos) << msg;
  msg = error_of([&] { moin::config::read_into(d, json{{"clusters", 2.5}}); });
  EXPECT_NE(msg.find("must be an integer"), std::string::npos) << msg;
}

TEST(Config, SetOverridesAreTypedByTheirDefaults) {
  DemoOptions o = moin::config::load<DemoOptions>("", {"name=123", "lora.rank=4", "lora.targets=[\"q\",\"k\"]"});
  EXPECT_EQ(o.name, "123");  // a string field keeps the text as it is
  EXPECT_EQ(o.lora.rank, 4);
  EXPECT_EQ(o.lora.targets, (std::vector<std::string>{"q", "k"}));
  std::string msg = error_of([] { moin::config::load<DemoOptions>("", {"lora.rank=four"}); });
  EXPECT_NE(msg.find("'lora.rank' must be an integer"), std::string::npos) << msg;
  msg = error_of([] { moin::config::load<DemoOptions>("", {"nmae=x"}); });
  EXPECT_NE(msg.find("did you mean 'name'"), std::string::npos) << msg;
  msg = error_of([] { moin::config::load<DemoOptions>("", {"noequals"}); });
  EXPECT_NE(msg.find("dotted.key=value"), std::string::npos) << msg;
}

TEST(Config, PrecedenceIsDefaultsFileFlagsSet) {
  std::string path = testing::TempDir() + "/moin_cfg.json";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs(R"({"clusters": 3, "lora": {"rank": 2}, "name": "file"})", f);
  std::fclose(f);
  DemoOptions o = moin::config::load<DemoOptions>(path, {"clusters=7"}, json{{"clusters", 5}, {"name", "flag"}});
  EXPECT_EQ(o.clusters, 7);
  EXPECT_EQ(o.name, "flag");
  EXPECT_EQ(o.lora.rank, 2);
  EXPECT_DOUBLE_EQ(o.lora.alpha, 16.0);
}

TEST(Config, ValidateAndFileErrorsAreUserErrors) {
  EXPECT_NE(error_of([] { moin::config::load<DemoOptions>("", {"clusters=0"}); }).find("positive"), std::string::npos);
  EXPECT_NE(error_of([] { moin::config::load<DemoOptions>("/nonexistent/cfg.json", {}); }).find("cannot open"),
            std::string::npos);
  std::string path = testing::TempDir() + "/moin_bad.json";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("{\"clusters\": ", f);
  std::fclose(f);
  EXPECT_NE(error_of([&] { moin::config::load<DemoOptions>(path, {}); }).find("invalid JSON at line 1"), std::string::npos);
}

TEST(Config, ReferenceListsEveryKeyWithItsDefault) {
  std::string ref = moin::config::format_reference(moin::config::describe<DemoOptions>());
  EXPECT_NE(ref.find("lora.rank (int, default 8): LoRA rank"), std::string::npos) << ref;
  EXPECT_NE(ref.find("spherical (bool, default true)"), std::string::npos) << ref;
}

TEST(Strings, ClosestMatch) {
  EXPECT_EQ(moin::closest_match("vocab_sise", {"vocab_size", "model_type"}), "vocab_size");
  EXPECT_EQ(moin::closest_match("zzzzzzzz", {"rank", "alpha"}), "");
  EXPECT_EQ(moin::levenshtein("kitten", "sitting"), 3u);
}

}  // namespace
