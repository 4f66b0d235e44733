// Logging: spdlog, to stderr (stdout is kept for command output such as generated text or routed JSONL)
// and, once a run's output folder is known, to a log file there.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace moin::log {

// level: trace, debug, info, warn, error, off. quiet keeps warnings and errors only.
void init(const std::string& level = "info", bool quiet = false);
// Also writes everything to `path` (appending), at debug level or the console's, whichever is lower.
void add_file(const std::string& path);
bool quiet();

}  // namespace moin::log
