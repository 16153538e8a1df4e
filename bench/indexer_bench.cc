// The lightning indexer with its top-k (kernels/lightning_indexer.h): the fused IndexerTopk against the torch path
// the model used before it (fp32 einsum into [B, T, Hi, S], ReLU, weighted head sum into [B, T, S], causal mask,
// torch topk), both on the same random bf16 inputs, causal prefill (S = T, query t sees keys 0..t), batch 1.
// Prints one table row per shape: median time, TFLOP/s of the score computation (2 * Hi * Di per causal (t, s)
// pair, T (T + 1) / 2 pairs), peak memory above the inputs (CUDA), and how many rows select the same key sets.
// The torch path runs only where its [T, Hi, S] scores fit in --torch_limit_gib.
//   spargo_indexer_bench [--device cuda|cpu] [--sets deepseek,160m] [--lengths 8192,32768,131072] [--reps 3]
// deepseek: Hi 64, Di 128, top-k 2048 (DeepSeek-V3.2); 160m: Hi 8, Di 64, top-k 256 (bench/bench_models.h).
#include <cstdio>
#include <limits>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "bench/peak_memory.h"
#include "kernels/lightning_indexer.h"

ABSL_FLAG(std::string, device, "cuda", "cuda or cpu (cpu runs the reference on both columns: a smoke test).");
ABSL_FLAG(std::string, sets, "deepseek,160m", "Shape sets: deepseek (Hi 64, Di 128, k 2048), 160m (Hi 8, Di 64, k 256).");
ABSL_FLAG(std::string, lengths, "8192,32768,131072", "Sequence lengths S = T.");
ABSL_FLAG(int32_t, reps, 3, "Timed repetitions (median reported).");
ABSL_FLAG(double, torch_limit_gib, 60, "Run the torch path only when its [T, Hi, S] fp32 scores fit in this many GiB.");

namespace {

using spargo::bench::MedianSeconds;
using spargo::bench::PeakGib;

// The model's former selection path: scores materialised, masked, torch topk.
torch::Tensor TorchPath(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w, int64_t topk) {
  const int64_t t = q.size(1), s = k.size(1);
  torch::Tensor scores = spargo::kernels::IndexerScoresReference(q, k, w);  // [B, T, S]
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  torch::Tensor future = torch::arange(s, opts).view({1, 1, s}).gt(torch::arange(t, opts).view({1, t, 1}));
  scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  return std::get<1>(scores.topk(std::min(topk, s), -1));
}

// Rows (of B * T) whose fused selection equals the torch path's as a set (unused slots ignored).
int64_t SameSets(const torch::Tensor& fused, const torch::Tensor& torch_path) {
  const int64_t t = fused.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(fused.device());
  torch::Tensor pos = torch::arange(t, opts).view({1, t, 1});
  torch::Tensor a = std::get<0>(fused.sort(-1));
  torch::Tensor b = std::get<0>(torch_path.masked_fill(torch_path.gt(pos), -1).sort(-1));
  return a.eq(b).all(-1).sum().item<int64_t>();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "--device cuda needs a CUDA libtorch and a device\n";
    return 2;
  }
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const int reps = absl::GetFlag(FLAGS_reps);
  std::printf("Lightning indexer + top-k, causal prefill, batch 1, bf16 inputs, %s, fused kernel %s, median of %d\n",
              device_name.c_str(), spargo::kernels::IndexerTopkHasCudaKernel() ? "built" : "NOT built (reference)",
              reps);
  std::printf("| set | S = T | Hi x Di | k | fused ms | fused TFLOP/s | fused peak GiB | torch ms | torch TFLOP/s | "
              "torch peak GiB | same sets |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  torch::NoGradGuard no_grad;
  for (absl::string_view set : absl::StrSplit(absl::GetFlag(FLAGS_sets), ',')) {
    const bool deepseek = set == "deepseek";
    if (!deepseek && set != "160m") {
      std::cerr << "unknown shape set " << set << "\n";
      return 2;
    }
    const int64_t hi = deepseek ? 64 : 8, di = deepseek ? 128 : 64, topk = deepseek ? 2048 : 256;
    for (absl::string_view len_text : absl::StrSplit(absl::GetFlag(FLAGS_lengths), ',')) {
      int64_t len = 0;
      if (!absl::SimpleAtoi(len_text, &len) || len < 1) return 2;
      torch::manual_seed(1);
      auto opts = torch::TensorOptions().device(device);
      torch::Tensor q = torch::randn({1, len, hi, di}, opts).to(torch::kBFloat16);  // [1, T, Hi, Di]
      torch::Tensor k = torch::randn({1, len, di}, opts).to(torch::kBFloat16);      // [1, S, Di]
      torch::Tensor w = torch::randn({1, len, hi}, opts);                           // [1, T, Hi]
      const double flops = 2.0 * hi * di * (static_cast<double>(len) * (len + 1) / 2);
      torch::Tensor fused;
      const double fused_gib = PeakGib(device, [&] { fused = spargo::kernels::IndexerTopk(q, k, w, 0, topk); });
      const double fused_s = MedianSeconds(reps, device, [&] { spargo::kernels::IndexerTopk(q, k, w, 0, topk); });
      std::printf("| %s | %lld | %lld x %lld | %lld | %.2f | %.1f | %.2f |", std::string(set).c_str(),
                  static_cast<long long>(len), static_cast<long long>(hi), static_cast<long long>(di),
                  static_cast<long long>(topk), fused_s * 1e3, flops / fused_s / 1e12, fused_gib);
      const double torch_gib_needed = static_cast<double>(len) * hi * len * 4 / (1ull << 30);
      if (torch_gib_needed <= absl::GetFlag(FLAGS_torch_limit_gib)) {
        try {
          torch::Tensor ref;
          const double torch_gib = PeakGib(device, [&] { ref = TorchPath(q, k, w, topk); });
          const double torch_s = MedianSeconds(reps, device, [&] { TorchPath(q, k, w, topk); });
          std::printf(" %.2f | %.1f | %.2f | %lld/%lld |\n", torch_s * 1e3, flops / torch_s / 1e12, torch_gib,
                      static_cast<long long>(SameSets(fused, ref)), static_cast<long long>(len));
        } catch (const c10::Error& e) {  // out of memory, most likely
          std::printf(" failed: %s | - | - | - |\n", e.what_without_backtrace());
        }
      } else {
        std::printf(" - | - | (needs %.0f GiB) | - |\n", torch_gib_needed);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
