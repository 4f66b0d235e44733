// Errors that cross the library boundary. The CLI maps UserError to exit code 2 (bad input, bad config,
// missing file) and every other std::exception to exit code 1 (a runtime failure).
#pragma once
#include <stdexcept>
#include <string>

namespace moin {

// The user can fix this by changing the command line, the config or the input files.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws UserError(message) unless cond holds.
inline void require(bool cond, const std::string& message) {
  if (!cond) throw UserError(message);
}

}  // namespace moin
