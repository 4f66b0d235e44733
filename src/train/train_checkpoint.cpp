#include "moin/train/train_checkpoint.h"

#include <ATen/Context.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <regex>

#include "moin/core/error.h"
#include "moin/core/fs.h"
#include "moin/core/log.h"

namespace moin {

namespace stdfs = std::filesystem;

namespace {

std::string step_file_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%08lld.pt", static_cast<long long>(step));
  return buf;
}

// (step, path) of every finished checkpoint file in dir, oldest first. Temporary files do not match.
std::vector<std::pair<std::int64_t, stdfs::path>> list_checkpoints(const stdfs::path& dir) {
  std::vector<std::pair<std::int64_t, stdfs::path>> out;
  if (!stdfs::is_directory(dir)) return out;
  static const std::regex pattern(R"(step-(\d+)\.pt)");
  for (const auto& e : stdfs::directory_iterator(dir)) {
    std::smatch m;
    std::string name = e.path().filename().string();
    if (std::regex_match(name, m, pattern)) out.emplace_back(std::stoll(m[1].str()), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

at::Generator cuda_generator(const torch::Device& device) {
  return at::globalContext().defaultGenerator(
      torch::Device(torch::kCUDA, device.has_index() ? device.index() : 0));
}

// The generator is a shared handle: a copy sets the global one's state.
void set_generator_state(at::Generator gen, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

std::string save_train_checkpoint(const std::string& dir, std::int64_t step, nlohmann::json meta,
                                  const NamedTensors& trainable, torch::optim::Optimizer& optimizer,
                                  const torch::Device& device, int keep) {
  fs::ensure_dir(dir);
  meta["step"] = step;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, t] : trainable) names.push_back(name);
  meta["names"] = names;

  torch::serialize::OutputArchive archive;
  for (std::size_t i = 0; i < trainable.size(); ++i)
    archive.write("param_" + std::to_string(i), trainable[i].second.detach().to(torch::kCPU));
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  archive.write("rng_cpu", at::globalContext().defaultGenerator(torch::kCPU).get_state());
  if (device.is_cuda()) archive.write("rng_cuda", cuda_generator(device).get_state());
  archive.write("meta", c10::IValue(meta.dump()));

  stdfs::path target = stdfs::path(dir) / step_file_name(step);
  // Streamed through fs's writer, not archive.save_to(path): torch's file writer aborts the process when a
  // write fails (full disk), where this one reports the error after the archive is done.
  fs::write_atomic_stream(target, [&](const fs::ByteSink& sink) {
    archive.save_to([&](const void* data, std::size_t n) -> std::size_t {
      sink(data, n);
      return n;
    });
  });
  fs::write_json_atomic(stdfs::path(dir) / "latest.json",
                        {{"step", step}, {"file", target.filename().string()}});

  auto all = list_checkpoints(dir);
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    stdfs::remove(all[i].second, ec);
  }
  return target.string();
}

std::vector<std::string> train_checkpoints_newest_first(const std::string& dir) {
  std::vector<std::string> out;
  auto all = list_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) out.push_back(it->second.string());
  std::string named = latest_train_checkpoint(dir);
  auto pos = std::find(out.begin(), out.end(), named);
  if (pos != out.end()) std::rotate(out.begin(), pos, pos + 1);
  return out;
}

std::string latest_train_checkpoint(const std::string& dir) {
  stdfs::path latest = stdfs::path(dir) / "latest.json";
  if (stdfs::exists(latest)) {
    try {
      auto j = fs::read_json(latest);
      stdfs::path p = stdfs::path(dir) / j.at("file").get<std::string>();
      if (stdfs::exists(p)) return p.string();
    } catch (const std::exception& e) {
      spdlog::warn("{}: {}; using the newest step-*.pt instead", latest.string(), e.what());
    }
  }
  auto all = list_checkpoints(dir);
  return all.empty() ? "" : all.back().second.string();
}

nlohmann::json load_train_checkpoint(const std::string& path, const NamedTensors& trainable,
                                     torch::optim::Optimizer& optimizer, const torch::Device& device) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw UnreadableCheckpoint(path + ": not a readable training checkpoint (" +
                               std::string(e.what_without_backtrace()) + ")");
  }
  nlohmann::json meta;
  try {
    c10::IValue meta_value;
    archive.read("meta", meta_value);
    meta = nlohmann::json::parse(meta_value.toStringRef());
  } catch (const std::exception& e) {
    throw UnreadableCheckpoint(path + ": not a readable training checkpoint (no meta record: " +
                               std::string(e.what()) + ")");
  }
  const auto& names = meta.at("names");
  require(names.size() == trainable.size(),
          path + ": holds " + std::to_string(names.size()) + " trainable tensors, this run has " +
              std::to_string(trainable.size()) + " (different mode, model or LoRA options?)");
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < trainable.size(); ++i) {
    const auto& [name, dst] = trainable[i];
    require(names[i].get<std::string>() == name,
            path + ": trainable tensor " + std::to_string(i) + " is " + names[i].get<std::string>() +
                ", this run has " + name);
    torch::Tensor src;
    archive.read("param_" + std::to_string(i), src);
    require(src.sizes() == dst.sizes(), path + ": tensor " + name + " has another shape in this run");
    dst.copy_(src);
  }
  torch::serialize::InputArchive opt_archive;
  archive.read("optimizer", opt_archive);
  optimizer.load(opt_archive);
  torch::Tensor rng;
  archive.read("rng_cpu", rng);
  set_generator_state(at::globalContext().defaultGenerator(torch::kCPU), rng);
  if (device.is_cuda()) {
    torch::Tensor rng_cuda;
    if (archive.try_read("rng_cuda", rng_cuda)) set_generator_state(cuda_generator(device), rng_cuda);
  }
  return meta;
}

}  // namespace moin
