// A progress line for long loops: count, rate and ETA. On a terminal it redraws one line at most a few
// times a second; in a non-interactive log (CI, Slurm output files) it prints a plain line at most every
// `interval` seconds, so logs stay readable. Thread-safe: workers may call add() concurrently.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace moin {

class Progress {
 public:
  // total = 0 when unknown (no ETA). unit names what is counted ("docs", "tokens", "steps").
  Progress(std::string what, std::int64_t total, std::string unit = "items", double log_interval_s = 30.0);
  ~Progress();
  void add(std::int64_t n = 1);
  void set(std::int64_t done);
  // Prints the final line (count, rate, elapsed). Called by the destructor if not called before.
  void finish();
  std::int64_t done() const { return done_.load(); }
  double elapsed_s() const;

 private:
  void maybe_print(bool force);
  std::string line() const;

  std::string what_, unit_;
  std::int64_t total_;
  double interval_;
  std::atomic<std::int64_t> done_{0};
  std::chrono::steady_clock::time_point start_, last_print_;
  std::mutex mutex_;
  bool tty_, finished_ = false, printed_tty_ = false;
};

}  // namespace moin
