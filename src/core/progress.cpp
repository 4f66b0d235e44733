#include "moin/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "moin/core/log.h"
#include "moin/core/strings.h"

namespace moin {

Progress::Progress(std::string what, std::int64_t total, std::string unit, double log_interval_s)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), interval_(log_interval_s) {
  start_ = last_print_ = std::chrono::steady_clock::now();
  tty_ = ::isatty(STDERR_FILENO) && !log::quiet();
}

Progress::~Progress() { finish(); }

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::add(std::int64_t n) {
  done_ += n;
  maybe_print(false);
}

void Progress::set(std::int64_t d) {
  done_ = d;
  maybe_print(false);
}

std::string Progress::line() const {
  double t = elapsed_s();
  double d = static_cast<double>(done_.load());
  double rate = t > 0 ? d / t : 0;
  std::string s = what_ + ": " + human_count(d);
  if (total_ > 0) {
    char pct[32];
    std::snprintf(pct, sizeof pct, " (%.1f%%)", 100.0 * d / static_cast<double>(total_));
    s += "/" + human_count(static_cast<double>(total_)) + " " + unit_ + pct;
  } else {
    s += " " + unit_;
  }
  s += ", " + human_count(rate) + " " + unit_ + "/s, " + human_duration(t);
  if (total_ > 0 && rate > 0 && d < total_) s += ", ETA " + human_duration((static_cast<double>(total_) - d) / rate);
  return s;
}

void Progress::maybe_print(bool force) {
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  if (!force && since < (tty_ ? 0.2 : interval_)) return;
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is printing: skip, never block a worker
  if (finished_) return;
  last_print_ = now;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line().c_str());
    std::fflush(stderr);
    printed_tty_ = true;
  } else if (!log::quiet()) {
    spdlog::info("{}", line());
  }
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (finished_) return;
  finished_ = true;
  if (printed_tty_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
  // The closing line goes to the log either way, so log files hold the totals.
  if (!log::quiet() || printed_tty_) spdlog::info("{} (done)", line());
}

}  // namespace moin
