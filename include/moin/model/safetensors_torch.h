// safetensors <-> LibTorch: copies between validated safetensors files (model/safetensors.h) and CPU
// tensors, and reads the index of a sharded Hugging Face checkpoint (model.safetensors.index.json).
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "moin/model/safetensors.h"

namespace moin::st {

// A CPU tensor of t's dtype and shape holding a copy of its bytes (the file may be closed afterwards).
torch::Tensor to_tensor(const File& file, const TensorInfo& t);

// Every tensor of a safetensors file, by name. UserError naming the file (and tensor) when it is invalid.
std::map<std::string, torch::Tensor> load(const std::string& path);

// Writes the tensors (any device, any layout: made contiguous CPU copies first) atomically, in the order
// given. UserError naming the tensor for a dtype safetensors cannot hold (complex, unsigned > 8 bits, ...).
void save(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
          const std::map<std::string, std::string>& metadata = {});

// The weight_map of a sharded checkpoint's index (model.safetensors.index.json): tensor name -> shard file
// name, relative to the index's folder, as written there. UserError naming the file when it is missing,
// not JSON, has no weight_map object, or a shard name is not a plain relative file name.
std::map<std::string, std::string> read_shard_index(const std::string& index_json_path);

// Every tensor of a checkpoint: a .safetensors file, a *.index.json of shards, or a folder holding
// model.safetensors or model.safetensors.index.json. Each tensor named by a shard index must be found
// in its shard.
std::map<std::string, torch::Tensor> load_checkpoint(const std::string& path);

// The safetensors dtype of a torch dtype; false when there is none.
bool dtype_of(torch::ScalarType s, DType* out);
torch::ScalarType scalar_type(DType d);

}  // namespace moin::st
