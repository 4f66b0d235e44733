// A uniform sample of at most `cap` items from a stream of unknown length, in one pass (Algorithm R).
#pragma once
#include <cstdint>
#include <random>

namespace moin {

// Where the item numbered `seen` (0-based) goes in the sample: its slot, or -1 when it is dropped. Draws
// from rng only once the sample is full, so the result is fixed by the seed and the stream.
inline std::int64_t reservoir_slot(std::int64_t seen, std::int64_t cap, std::mt19937_64& rng) {
  if (seen < cap) return seen;
  auto slot = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(seen + 1));
  return slot < cap ? slot : -1;
}

}  // namespace moin
