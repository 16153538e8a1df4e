// Counter-based random numbers: every draw is a pure function of (seed, keys...), so a run can be resumed at any
// step, or a batch split differently, and draw the very same numbers. SplitMix64 finalisers mix the keys.
//   CounterRng rng(seed, {kStreamSampling, step, sample});  double u = rng.Uniform();  // u in (0, 1)
#ifndef SPARGO_COMMON_COUNTER_RNG_H_
#define SPARGO_COMMON_COUNTER_RNG_H_

#include <cstdint>
#include <initializer_list>

namespace spargo {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class CounterRng {
 public:
  CounterRng(uint64_t seed, std::initializer_list<uint64_t> keys) : state_(SplitMix64(seed)) {
    for (uint64_t k : keys) state_ = SplitMix64(state_ ^ SplitMix64(k + 0x632be59bd9b4e019ULL));
  }
  uint64_t Next() { return SplitMix64(state_ += 0x9e3779b97f4a7c15ULL); }
  // Uniform in the open interval (0, 1), 53 bits.
  double Uniform() { return (static_cast<double>(Next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias below 2^-64 * n).
  uint64_t Below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64); }

 private:
  uint64_t state_;
};

}  // namespace spargo

#endif  // SPARGO_COMMON_COUNTER_RNG_H_
