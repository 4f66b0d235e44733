// Training checkpoints: everything a killed run needs to continue exactly where it stopped.
//
//   OUTPUT/checkpoints/step-00000100.pt   one torch archive per checkpoint, written atomically:
//       param_<i>     the trainable tensors (adapter A/B, or every weight in full mode), in a fixed order
//       optimizer     the optimizer's state (AdamW moments and step counts, per parameter)
//       rng_cpu       torch's CPU generator state (dropout); rng_cuda with a CUDA device
//       meta          JSON text: step, parameter names, data cursor, elapsed time, losses, options
//   OUTPUT/checkpoints/latest.json        {"step": 100, "file": "step-00000100.pt"}, written after it
//
// The data order is a pure function of (seed, epoch) and the data cursor (train/data.h), so the cursor
// is the whole state of the run's own randomness.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "moin/core/error.h"

namespace moin {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes dir/step-<step>.pt and then dir/latest.json (each atomically), then deletes all but the `keep`
// newest step-*.pt files. Returns the checkpoint's path. `meta` gets "step" and "names" added.
std::string save_train_checkpoint(const std::string& dir, std::int64_t step, nlohmann::json meta,
                                  const NamedTensors& trainable, torch::optim::Optimizer& optimizer,
                                  const torch::Device& device, int keep);

// The newest checkpoint in dir: the file latest.json names when it exists, else the highest step-*.pt.
// Empty when there is none.
std::string latest_train_checkpoint(const std::string& dir);

// Every checkpoint in dir, the one latest.json names first, then the others from the highest step down:
// the order a resumption tries them in when the newest cannot be read (a damaged disk, a truncated copy).
std::vector<std::string> train_checkpoints_newest_first(const std::string& dir);

// The file is not a checkpoint that can be read at all (as opposed to one that belongs to another run).
struct UnreadableCheckpoint : UserError {
  using UserError::UserError;
};

// Restores a checkpoint: copies the saved tensors into `trainable` (names and shapes must match: UserError
// otherwise), loads the optimizer state and the RNG states. Returns the meta JSON.
nlohmann::json load_train_checkpoint(const std::string& path, const NamedTensors& trainable,
                                     torch::optim::Optimizer& optimizer, const torch::Device& device);

}  // namespace moin
