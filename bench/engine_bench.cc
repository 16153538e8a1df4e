// The rollout engine (rollout/engine.h) on a named DeepSeek-V3.2 shape with random weights, CPU or CUDA:
//  - decode: --batches prompts of --prompt random tokens, one greedy sample each, --new_tokens new tokens (no EOS);
//    seconds for the whole generation (prefill included) and new tokens/s, as HF's `generate` is measured.
//  - grpo: --groups prompts x --group_size samples at temperature 1, each prompt its own call with a completion
//    budget drawn from [--min_new, --max_new] (the varied lengths of a GRPO batch; no EOS in a random model), all
//    calls concurrent on one engine: seconds to finish the batch and new tokens/s.
//  - prefill: one prompt of each --lengths tokens fed in chunks of --prefill_tokens, one token generated: seconds,
//    prefill tokens/s and peak CUDA memory above the weights.
// Prints one markdown table per mode and the engine's counters.
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "model/dsv32_model.h"
#include "rollout/engine.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

ABSL_FLAG(std::string, config, "tiny", "tiny or 160m.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "float32", "float32 or bfloat16.");
ABSL_FLAG(std::string, modes, "decode", "Comma-separated: decode, grpo, prefill.");
ABSL_FLAG(std::string, batches, "1,8", "decode: comma-separated batch sizes.");
ABSL_FLAG(int32_t, prompt, 128, "decode and grpo: prompt tokens.");
ABSL_FLAG(int32_t, new_tokens, 64, "decode: new tokens per sequence.");
ABSL_FLAG(int32_t, groups, 64, "grpo: prompts.");
ABSL_FLAG(int32_t, group_size, 8, "grpo: samples per prompt.");
ABSL_FLAG(int32_t, min_new, 64, "grpo: shortest completion budget.");
ABSL_FLAG(int32_t, max_new, 2048, "grpo: longest completion budget.");
ABSL_FLAG(std::string, lengths, "8192", "prefill: comma-separated prompt lengths.");
ABSL_FLAG(int32_t, prefill_tokens, 2048, "Tokens fed per engine step (chunked prefill).");
ABSL_FLAG(int32_t, block_size, 16, "Cache block size in tokens.");

namespace {

using spargo::bench::ParsePositiveList;
using spargo::rollout::EngineOptions;
using spargo::rollout::EngineStats;
using spargo::rollout::GenerationEngine;
using spargo::rollout::GroupRequest;
using spargo::rollout::SampleGroup;
using spargo::rollout::SamplingOptions;

std::vector<GroupRequest> RandomPrompts(int64_t n, int64_t length, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<GroupRequest> out(n);
  for (int64_t i = 0; i < n; ++i) {
    out[i].prompt_id = "p" + std::to_string(i);
    out[i].sample_key = static_cast<uint64_t>(i);
    for (int64_t t = 0; t < length; ++t) out[i].prompt_ids.push_back(static_cast<int64_t>(rng() % vocab));
  }
  return out;
}

double Seconds(const torch::Device& d, const std::function<void()>& fn) {
  spargo::bench::Sync(d);
  const auto start = std::chrono::steady_clock::now();
  fn();
  spargo::bench::Sync(d);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void ResetPeak(const torch::Device& d) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#endif
}

// Peak bytes allocated since ResetPeak (CUDA builds on CUDA; else -1).
double PeakGib(const torch::Device& d) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (d.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  return -1;
}

void PrintStats(const EngineStats& s) {
  std::printf("engine: %lld steps, %lld decode calls, %lld prefill calls, %lld decoded / %lld prefilled tokens, "
              "%lld copied blocks, at most %lld sequences running, %lld admission waits\n",
              static_cast<long long>(s.steps), static_cast<long long>(s.decode_calls),
              static_cast<long long>(s.prefill_calls), static_cast<long long>(s.decoded_tokens),
              static_cast<long long>(s.prefilled_tokens), static_cast<long long>(s.copied_blocks),
              static_cast<long long>(s.max_running), static_cast<long long>(s.waits));
}

int64_t NewTokens(const std::vector<SampleGroup>& groups) {
  int64_t n = 0;
  for (const auto& g : groups) {
    for (const auto& s : g) n += static_cast<int64_t>(s.completion_ids.size());
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  const std::string name = absl::GetFlag(FLAGS_config), device_name = absl::GetFlag(FLAGS_device);
  if ((name != "tiny" && name != "160m") || (device_name == "cuda" && !torch::cuda::is_available())) {
    std::cerr << "--config tiny|160m; --device cuda needs a CUDA libtorch and device\n";
    return 2;
  }
  // An explicit index: the allocator's statistics want one.
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::ScalarType dtype = absl::GetFlag(FLAGS_dtype) == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  model::Dsv32Config config = bench::BenchConfig(name);
  for (int64_t length : ParsePositiveList(absl::GetFlag(FLAGS_lengths))) {
    config.max_position_embeddings = std::max<int64_t>(config.max_position_embeddings, length + 1);
  }
  model::Dsv32Model m(config);
  m.To(device, dtype);
  EngineOptions base;
  base.block_size = absl::GetFlag(FLAGS_block_size);
  base.prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
  const int prompt = absl::GetFlag(FLAGS_prompt);
  std::printf("DeepSeek-V3.2 %s, %s, %s, engine blocks of %lld tokens, prefill chunks of %lld tokens\n", name.c_str(),
              device_name.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), static_cast<long long>(base.block_size),
              static_cast<long long>(base.prefill_tokens));
  for (absl::string_view mode : absl::StrSplit(absl::GetFlag(FLAGS_modes), ',')) {
    if (mode == "decode") {
      const int fresh = absl::GetFlag(FLAGS_new_tokens);
      std::printf("\n| batch | prompt | new tokens | generate s | new tokens/s |\n| --- | --- | --- | --- | --- |\n");
      for (int64_t b : ParsePositiveList(absl::GetFlag(FLAGS_batches))) {
        std::vector<GroupRequest> prompts = RandomPrompts(b, prompt, m.vocab_size(), 1);
        SamplingOptions o;
        o.max_new_tokens = fresh;
        o.temperature = 0;
        EngineOptions eo = base;
        eo.num_blocks = GenerationEngine::WorstCaseBlocks(prompts, o, eo.block_size);
        eo.max_rows = b;
        auto engine = GenerationEngine::Create(&m, eo);
        if (!engine.ok()) {
          std::cerr << engine.status() << "\n";
          return 1;
        }
        int64_t tokens = 0;
        (*engine)->Generate(RandomPrompts(b, prompt, m.vocab_size(), 2), o).IgnoreError();  // warm-up
        const double s = Seconds(device, [&] {
          auto out = (*engine)->Generate(prompts, o);
          if (out.ok()) tokens = NewTokens(*out);
        });
        std::printf("| %lld | %d | %d | %.3f | %.0f |\n", static_cast<long long>(b), prompt, fresh, s, tokens / s);
        std::fflush(stdout);
      }
    } else if (mode == "grpo") {
      const int groups = absl::GetFlag(FLAGS_groups), g = absl::GetFlag(FLAGS_group_size);
      std::vector<GroupRequest> prompts = RandomPrompts(groups, prompt, m.vocab_size(), 3);
      std::vector<SamplingOptions> options(groups);
      std::mt19937_64 rng(7);
      EngineOptions eo = base;
      eo.num_blocks = 0;
      for (int i = 0; i < groups; ++i) {
        options[i].group_size = g;
        options[i].temperature = 1.0;
        options[i].seed = 1;
        options[i].max_new_tokens =
            absl::GetFlag(FLAGS_min_new) +
            static_cast<int>(rng() % (absl::GetFlag(FLAGS_max_new) - absl::GetFlag(FLAGS_min_new) + 1));
        eo.num_blocks += GenerationEngine::WorstCaseBlocks({prompts[i]}, options[i], eo.block_size);
      }
      eo.max_rows = static_cast<int64_t>(groups) * g;
      auto engine = GenerationEngine::Create(&m, eo);
      if (!engine.ok()) {
        std::cerr << engine.status() << "\n";
        return 1;
      }
      std::vector<int64_t> tokens(groups, 0);
      const double s = Seconds(device, [&] {
        std::vector<std::thread> threads;
        for (int i = 0; i < groups; ++i) {
          threads.emplace_back([&, i] {
            auto out = (*engine)->Generate({prompts[i]}, options[i]);
            if (out.ok()) tokens[i] = NewTokens(*out);
            else std::cerr << out.status() << "\n";
          });
        }
        for (auto& t : threads) t.join();
      });
      int64_t total = 0;
      for (int64_t t : tokens) total += t;
      std::printf("\n| prompts x samples | prompt | completion budgets | new tokens | batch s | new tokens/s |\n"
                  "| --- | --- | --- | --- | --- | --- |\n| %d x %d | %d | %d..%d | %lld | %.2f | %.0f |\n",
                  groups, g, prompt, absl::GetFlag(FLAGS_min_new), absl::GetFlag(FLAGS_max_new),
                  static_cast<long long>(total), s, total / s);
      PrintStats((*engine)->stats());
    } else if (mode == "prefill") {
      std::printf("\n| prompt | prefill s | prefill tokens/s | peak GiB besides weights (cache + activations) |\n| --- | --- | --- | --- |\n");
      for (int64_t length : ParsePositiveList(absl::GetFlag(FLAGS_lengths))) {
        std::vector<GroupRequest> prompts = RandomPrompts(1, length, m.vocab_size(), 4);
        SamplingOptions o;
        o.max_new_tokens = 1;
        o.temperature = 0;
        EngineOptions eo = base;
        eo.num_blocks = GenerationEngine::WorstCaseBlocks(prompts, o, eo.block_size);
        eo.prefix_cache = false;
        double s = 0, peak = -1;
        {
          auto engine = GenerationEngine::Create(&m, eo);
          if (!engine.ok()) {
            std::cerr << engine.status() << "\n";
            return 1;
          }
          (*engine)->Generate(RandomPrompts(1, std::min<int64_t>(length, 512), m.vocab_size(), 5), o).IgnoreError();
          double weights = 0;
          for (const auto& p : m.parameters()) weights += static_cast<double>(p.numel() * p.element_size());
          ResetPeak(device);
          s = Seconds(device, [&] { (*engine)->Generate(prompts, o).IgnoreError(); });
          peak = PeakGib(device);
          if (peak >= 0) peak -= weights / (1ull << 30);
        }
        std::printf("| %lld | %.3f | %.0f | %.2f |\n", static_cast<long long>(length), s, length / s, peak);
        std::fflush(stdout);
      }
    } else {
      std::cerr << "unknown mode '" << mode << "'\n";
      return 2;
    }
  }
  return 0;
}
