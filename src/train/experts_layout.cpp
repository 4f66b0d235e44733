// The experts folder layout (see experts_layout.h).
#include "moin/train/experts_layout.h"

#include <filesystem>

#include "moin/core/error.h"
#include "moin/core/fs.h"

namespace moin {

namespace stdfs = std::filesystem;

std::vector<ExpertFolder> find_experts(const std::string& experts_dir, int k) {
  std::vector<ExpertFolder> out;
  for (int i = 0; i < k; ++i) {
    const auto p = stdfs::path(experts_dir) / std::to_string(i);
    ExpertFolder f;
    if (stdfs::exists(p / "adapter_config.json")) {
      f.dir = p.string();
      f.status = "ok";
    } else if (stdfs::exists(p / "summary.json") &&
               fs::read_json((p / "summary.json").string()).value("status", std::string()) == "too_small") {
      f.status = "too_small";
    } else {
      f.status = stdfs::exists(p) ? "unfinished" : "missing";
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<std::string> expert_adapter_dirs(const std::string& experts_dir, int k) {
  std::vector<std::string> out;
  int i = 0;
  for (const auto& f : find_experts(experts_dir, k)) {
    require(f.ok(), "experts: no adapter for expert " + std::to_string(i) + " in " + experts_dir + " (" +
                        (stdfs::path(experts_dir) / std::to_string(i) / "adapter_config.json").string() +
                        " is missing: " + f.status + ")");
    out.push_back(f.dir);
    ++i;
  }
  return out;
}

}  // namespace moin
