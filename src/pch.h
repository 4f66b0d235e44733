// Precompiled for every torch-using translation unit of moin_lib, the CLI, tests and benchmarks:
// <torch/torch.h> alone costs ~20 s per file on two cores.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>
