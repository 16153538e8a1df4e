// Plain-libtorch baselines of the DeepSeek-V3.2 model (model/dsv32_model.h): prefill (full forward) and cached
// greedy decode tokens/s, for a named configuration with random weights, on CPU or CUDA, float32 or bfloat16.
// Medians over --reps timed runs after one warm-up (CUDA synchronised). Prints one table row per batch size.
//   spargo_model_bench [--config tiny|160m] [--device cpu|cuda] [--dtype float32|bfloat16] [--batches 1,64]
//                      [--prompt 128] [--new_tokens 64] [--reps 3] [--train [--checkpoint] [--warmup all|indexer]]
// "tiny" is the fixture's shape (2 layers, hidden 64, MoE, vocab 320); "160m" is the 8-layer dense model of the
// GPU notes (hidden 1024, 16 heads, q_lora 384, kv_lora 256, nope 64, rope 32, v 64, indexer 8 x 64, top-k 256,
// vocab 32000, MLP 2816).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "bench/peak_memory.h"
#include "common/blas_kernels.h"
#include "model/dsv32_model.h"
#include "model/parameter_groups.h"

ABSL_FLAG(std::string, config, "tiny", "tiny or 160m.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "float32", "float32 or bfloat16.");
ABSL_FLAG(std::string, batches, "1,8", "Comma-separated batch sizes.");
ABSL_FLAG(int32_t, prompt, 128, "Prompt tokens per sequence (the prefill length).");
ABSL_FLAG(int32_t, new_tokens, 64, "Greedy tokens decoded per sequence.");
ABSL_FLAG(int32_t, reps, 3, "Timed repetitions (median reported).");
ABSL_FLAG(bool, train, false,
          "Instead: one training step's forward + backward (language-model loss plus the sparse-stage indexer loss, "
          "the learner's ForwardForTraining) on --batches x --prompt tokens.");
ABSL_FLAG(bool, checkpoint, false, "With --train: activation checkpointing (each layer recomputed in backward).");
ABSL_FLAG(std::string, warmup, "",
          "With --train: the dense warm-up stage instead (language-model loss plus the indexer's KL over every causal "
          "key, ForwardDetailed with kDenseWarmup): 'all' trains every parameter, 'indexer' freezes the rest (the "
          "report's stage 1). SPARGO_DENSE_WARMUP=materialized selects the [B, H, T, S] form on CUDA.");


int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  using bench::MedianSeconds;
  using bench::Sync;
  const std::string name = absl::GetFlag(FLAGS_config), device_name = absl::GetFlag(FLAGS_device);
  if ((name != "tiny" && name != "160m") || (device_name == "cuda" && !torch::cuda::is_available())) {
    std::cerr << "--config tiny|160m; --device cuda needs a CUDA libtorch and device\n";
    return 2;
  }
  const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
  const torch::ScalarType dtype = absl::GetFlag(FLAGS_dtype) == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  model::Dsv32Model m(bench::BenchConfig(name));
  m.To(device, dtype);
  int64_t params = 0;
  for (const auto& p : m.parameters()) params += p.numel();
  const int prompt = absl::GetFlag(FLAGS_prompt), fresh = absl::GetFlag(FLAGS_new_tokens), reps = absl::GetFlag(FLAGS_reps);
  std::printf("DeepSeek-V3.2 %s (%.1fM parameters), %s, %s, prompt %d, %d new tokens, median of %d\n", name.c_str(),
              params / 1e6, device_name.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), prompt, fresh, reps);
  if (absl::GetFlag(FLAGS_train)) {
    m.set_activation_checkpointing(absl::GetFlag(FLAGS_checkpoint));
    std::printf("activation checkpointing %s\n", absl::GetFlag(FLAGS_checkpoint) ? "on" : "off");
    const std::string warmup = absl::GetFlag(FLAGS_warmup);
    if (!warmup.empty()) {
      if (warmup != "all" && warmup != "indexer") return 2;
      if (warmup == "indexer" &&
          !model::FreezeParameterGroups(m, {"embedding", "attention", "router", "mlp", "head"}).ok()) {
        return 2;
      }
      std::printf("dense warm-up stage, training %s\n", warmup == "all" ? "every parameter" : "the indexer only");
    }
    std::printf("| batch | tokens | forward + backward ms | training tokens/s | peak GiB |\n| --- | --- | --- | --- | --- |\n");
    for (absl::string_view b_text : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
      int64_t b = 0;
      if (!absl::SimpleAtoi(b_text, &b) || b < 1) return 2;
      torch::Tensor ids = torch::randint(0, m.vocab_size(), {b, prompt}, torch::TensorOptions(torch::kInt64).device(device));
      auto step_fn = [&] {
        model::TrainingForward out;
        if (warmup.empty()) {
          out = m.ForwardForTraining(ids);
        } else {
          model::Dsv32ForwardOptions options;
          options.indexer_training = model::IndexerTraining::kDenseWarmup;
          model::Dsv32Output detailed = m.ForwardDetailed(ids, options);
          out.logits = detailed.logits;
          out.aux_loss = detailed.indexer_loss;
        }
        torch::Tensor lm = torch::nn::functional::cross_entropy(
            out.logits.narrow(1, 0, prompt - 1).reshape({-1, m.vocab_size()}), ids.narrow(1, 1, prompt - 1).reshape({-1}));
        (lm + out.aux_loss).backward();
        for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
      };
      try {
        const double step = MedianSeconds(reps, device, step_fn);
        const double peak = bench::PeakGib(device, step_fn);
        std::printf("| %lld | %lld | %.2f | %.0f | %.2f |\n", static_cast<long long>(b),
                    static_cast<long long>(b * prompt), step * 1e3, b * prompt / step, peak);
      } catch (const c10::Error& e) {
        const std::string what = e.what_without_backtrace();
        std::printf("| %lld | %lld | failed: %s | | |\n", static_cast<long long>(b), static_cast<long long>(b * prompt),
                    what.substr(0, 100).c_str());
      }
      std::fflush(stdout);
    }
    return 0;
  }
  std::printf("| batch | prefill ms | prefill tokens/s | decode ms per step | decode tokens/s |\n| --- | --- | --- | --- | --- |\n");
  torch::NoGradGuard no_grad;
  for (absl::string_view b_text : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int64_t b = 0;
    if (!absl::SimpleAtoi(b_text, &b) || b < 1) return 2;
    torch::Tensor ids = torch::randint(0, m.vocab_size(), {b, prompt}, torch::TensorOptions(torch::kInt64).device(device));
    const double prefill = MedianSeconds(reps, device, [&] { m.Forward(ids); });
    // Decode: prefill into the cache (not timed), then `fresh` greedy steps.
    double decode = 0;
    {
      std::vector<double> runs;
      for (int r = 0; r <= reps; ++r) {
        auto cache = m.NewCache(b, prompt + fresh);
        torch::Tensor logits = m.Decode(ids, cache.get());
        Sync(device);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < fresh; ++i) {
          torch::Tensor next = logits.select(1, logits.size(1) - 1).argmax(-1, true);
          logits = m.Decode(next, cache.get());
        }
        Sync(device);
        if (r > 0) runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(runs.begin(), runs.end());
      decode = runs[runs.size() / 2];
    }
    std::printf("| %lld | %.2f | %.0f | %.3f | %.0f |\n", static_cast<long long>(b), prefill * 1e3, b * prompt / prefill,
                decode * 1e3 / fresh, b * fresh / decode);
    std::fflush(stdout);
  }
  return 0;
}
