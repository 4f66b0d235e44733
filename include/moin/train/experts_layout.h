// The experts folder that `moin launch` (or a pack) writes and routing, evaluation and mixtures read:
// EXPERTS/<k>/ holds cluster k's expert (an adapter in PEFT layout, beside the trainer's summary.json).
#pragma once
#include <string>
#include <vector>

namespace moin {

// What an experts folder holds for cluster k: EXPERTS/<k>/ with an adapter (adapter_config.json), or no
// expert, and why.
struct ExpertFolder {
  std::string dir;     // EXPERTS/<k> when it holds an adapter, else ""
  std::string status;  // "ok"; "too_small" (the trainer skipped a cluster under its minimum of training
                       // tokens: routes to the base by design); "unfinished" (a folder without an adapter: the
                       // job failed or still runs); "missing" (no folder)
  bool ok() const { return status == "ok"; }
};
std::vector<ExpertFolder> find_experts(const std::string& experts_dir, int k);

// Whether a cluster of this status is left out of an evaluation: an expert that should exist but does not
// (unfinished, missing). A too-small cluster is not: it routes to the base by design.
inline bool expert_left_out(const std::string& status) { return status != "ok" && status != "too_small"; }

// The adapter folder of each expert 0..k-1 (EXPERTS/<k>). UserError naming the first expert without one.
std::vector<std::string> expert_adapter_dirs(const std::string& experts_dir, int k);

}  // namespace moin
