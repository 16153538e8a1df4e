// What the benchmark programs share: the named DeepSeek-V3.2 shapes they measure and a timing helper.
//  - BenchConfig("tiny"): the fixture's shape (2 layers, hidden 64, MoE, vocab 320);
//    BenchConfig("160m"): the 8-layer dense model of the GPU notes (hidden 1024, 16 heads, q_lora 384, kv_lora 256,
//    nope 64, rope 32, v 64, indexer 8 x 64, top-k 256, vocab 32000, MLP 2816), HF's peer script's shapes.
//  - MedianSeconds: one untimed warm-up, then the median of `reps` runs, the device synchronised around each.
//  - ParsePositiveList: a comma-separated flag of positive integers ("8192,32768"); exits 2 naming a bad entry.
#ifndef SPARGO_BENCH_BENCH_MODELS_H_
#define SPARGO_BENCH_BENCH_MODELS_H_

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

#include "model/dsv32_config.h"

namespace spargo::bench {

// "tiny" or "160m"; anything else is "160m".
model::Dsv32Config BenchConfig(const std::string& name);

inline void Sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

template <typename Fn>
double MedianSeconds(int reps, const torch::Device& d, Fn&& fn) {
  fn();  // warm-up
  Sync(d);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    Sync(d);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

inline std::vector<int64_t> ParsePositiveList(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      std::cerr << "bad list entry '" << part << "' in '" << text << "' (positive integers, comma-separated)\n";
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace spargo::bench

#endif  // SPARGO_BENCH_BENCH_MODELS_H_
