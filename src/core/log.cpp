#include "moin/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <filesystem>
#include <mutex>

#include "moin/core/error.h"

namespace moin::log {

static bool g_quiet = false;
static std::mutex g_mutex;

void init(const std::string& level, bool quiet) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_quiet = quiet;
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    throw UserError("--log-level must be one of trace, debug, info, warn, error, off; got '" + level + "'");
  if (quiet && lvl < spdlog::level::warn) lvl = spdlog::level::warn;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(lvl);
  auto logger = std::make_shared<spdlog::logger>("moin", console);
  logger->set_level(spdlog::level::trace);
  logger->set_pattern("%^[%H:%M:%S %L]%$ %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void add_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  auto logger = spdlog::default_logger();
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  sink->set_level(spdlog::level::debug);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] %v");
  logger->sinks().push_back(sink);
}

bool quiet() { return g_quiet; }

}  // namespace moin::log
