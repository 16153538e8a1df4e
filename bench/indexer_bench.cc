// The lightning indexer with its top-k (kernels/lightning_indexer.h, kernels/indexer_fp8.h): the CUDA kernels against
// each other and against the torch path the model used before them (fp32 einsum into [B, T, Hi, S], ReLU, weighted
// head sum into [B, T, S], causal mask, torch topk), all on the same random inputs, batch 1: a causal prefill (S = T,
// query t sees keys 0..t), or with --chunk C the last C queries over S cached keys (positions S - C .. S - 1, the
// cost per token at position S that a decode-time prefill chunk pays). One table row per (shape, kernel):
//   per-row bf16  the one-block-per-query kernel (IndexerKernel::kPerRow)
//   tiled bf16    the wgmma kernel (kTiled; 64 heads x 128 dims only)
//   tiled fp8     the same on e4m3 inputs from QuantizeIndexerFp8 (the quantization timed apart: "quant ms"; on
//                 CUDA one kernel)
//   fp8 quant torch  QuantizeIndexerFp8Reference, the quantization in libtorch operations (quant ms, its peak
//                 memory, and whether its bits equal QuantizeIndexerFp8's)
//   torch         the former path, where its [T, Hi, S] scores fit in --torch_limit_gib
// Columns: median wall time of the whole selection ("total"), of the tiled kernel's scoring alone
// (kTiledScoresOnly, the same chunks without the selection kernel) and their difference ("selection"); TFLOP/s of
// the scoring (2 * Hi * Di per causal (t, s) pair: T (T + 1) / 2 pairs, or C S - C (C - 1) / 2 with --chunk) over
// the scoring time and over the total;
// peak memory above the inputs (CUDA); agreement: rows whose key set equals the per-row bf16 kernel's (the torch
// path's, for that row itself), and for fp8 the mean share of the bf16 set it selects (recall).
//   spargo_indexer_bench [--device cuda|cpu] [--sets deepseek,160m] [--lengths 8192,32768,131072] [--reps 3]
//                        [--kernels per_row,tiled,fp8,quant_torch,torch] [--chunk 2048] [--profile_top N]
// deepseek: Hi 64, Di 128, top-k 2048 (DeepSeek-V3.2); 160m: Hi 8, Di 64, top-k 256 (bench/bench_models.h).
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "bench/kernel_profile.h"
#include "bench/peak_memory.h"
#include "kernels/indexer_fp8.h"
#include "kernels/lightning_indexer.h"

ABSL_FLAG(std::string, device, "cuda", "cuda or cpu (cpu runs the reference in every row: a smoke test).");
ABSL_FLAG(std::string, sets, "deepseek,160m", "Shape sets: deepseek (Hi 64, Di 128, k 2048), 160m (Hi 8, Di 64, k 256).");
ABSL_FLAG(std::string, lengths, "8192,32768,131072", "Key counts S (= T without --chunk).");
ABSL_FLAG(int32_t, reps, 3, "Timed repetitions (median reported).");
ABSL_FLAG(std::string, kernels, "per_row,tiled,fp8,quant_torch,torch",
          "Rows to run: per_row, tiled, fp8, quant_torch, torch.");
ABSL_FLAG(int64_t, chunk, 0, "0: causal prefill (T = S); C > 0: the last C queries over S keys.");
ABSL_FLAG(int32_t, profile_top, 0,
          "When > 0 (CUDA builds): after each tiled row, one more call under libtorch's profiler, and its kernels "
          "with the most GPU time (the scoring and the selection kernels apart).");
ABSL_FLAG(double, torch_limit_gib, 60, "Run the torch path only when its [T, Hi, S] fp32 scores fit in this many GiB.");

namespace {

namespace sk = spargo::kernels;
using spargo::bench::MedianSeconds;
using spargo::bench::PeakGib;

// The model's former selection path: scores materialised, masked, torch topk. Query t sits at position offset + t.
torch::Tensor TorchPath(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w, int64_t topk,
                        int64_t offset) {
  const int64_t t = q.size(1), s = k.size(1);
  torch::Tensor scores = sk::IndexerScoresReference(q, k, w);  // [B, T, S]
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  torch::Tensor future = torch::arange(s, opts).view({1, 1, s}).gt(torch::arange(t, opts).view({1, t, 1}) + offset);
  scores.masked_fill_(future, -std::numeric_limits<float>::infinity());
  return std::get<1>(scores.topk(std::min(topk, s), -1));
}

// Rows (of B * T) whose selections are equal as sets (slots past the causal count ignored; query t at position
// offset + t).
int64_t SameSets(const torch::Tensor& a_in, const torch::Tensor& b_in, int64_t offset) {
  const int64_t t = a_in.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(a_in.device());
  torch::Tensor pos = torch::arange(t, opts).view({1, t, 1}) + offset;
  torch::Tensor a = std::get<0>(a_in.masked_fill(a_in.gt(pos), -1).sort(-1));
  torch::Tensor b = std::get<0>(b_in.masked_fill(b_in.gt(pos), -1).sort(-1));
  return a.eq(b).all(-1).sum().item<int64_t>();
}

// The share of `want`'s selected keys (-1 unused) that `got` selects too.
double Recall(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor sorted = std::get<0>(want.sort(-1)).contiguous();                         // [B, T, k]
  torch::Tensor pos = torch::searchsorted(sorted, got.contiguous()).clamp_max(sorted.size(-1) - 1);
  torch::Tensor hit = sorted.gather(-1, pos).eq(got).logical_and(got.ge(0));
  return hit.sum().item<double>() / std::max<double>(1.0, want.ge(0).sum().item<double>());
}

struct Row {
  std::string kernel;
  double total_s = -1, scoring_s = -1, quant_s = -1, gib = -1;
  std::string agreement = "-";
};

void PrintRow(const std::string& set, int64_t len, int64_t hi, int64_t di, int64_t topk, double flops, const Row& r) {
  auto ms = [](double s) { return s < 0 ? std::string("-") : std::to_string(s * 1e3).substr(0, 8); };
  auto tf = [&](double s) { return s < 0 ? std::string("-") : std::to_string(flops / s / 1e12).substr(0, 6); };
  const double sel = r.total_s >= 0 && r.scoring_s >= 0 ? r.total_s - r.scoring_s : -1;
  std::printf("| %s | %lld | %lld x %lld | %lld | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", set.c_str(),
              static_cast<long long>(len), static_cast<long long>(hi), static_cast<long long>(di),
              static_cast<long long>(topk), r.kernel.c_str(), ms(r.total_s).c_str(), ms(r.scoring_s).c_str(),
              ms(sel).c_str(), tf(r.scoring_s).c_str(), tf(r.total_s).c_str(), ms(r.quant_s).c_str(),
              r.gib < 0 ? "-" : std::to_string(r.gib).substr(0, 5).c_str(), r.agreement.c_str());
  std::fflush(stdout);
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
  std::set<std::string> kernels;
  for (absl::string_view k : absl::StrSplit(absl::GetFlag(FLAGS_kernels), ',')) kernels.insert(std::string(k));
  const int64_t chunk = absl::GetFlag(FLAGS_chunk);
  std::printf("Lightning indexer + top-k, %s, batch 1, %s, CUDA kernels %s, median of %d\n",
              chunk > 0 ? ("the last " + std::to_string(chunk) + " queries over S keys").c_str() : "causal prefill",
              device_name.c_str(), sk::IndexerTopkHasCudaKernel() ? "built" : "NOT built (reference)", reps);
  std::printf("| set | %s | Hi x Di | k | kernel | total ms | scoring ms | selection ms | scoring TFLOP/s | "
              "total TFLOP/s | quant ms | peak GiB | agreement |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
              chunk > 0 ? "S (T = chunk)" : "S = T");
  torch::NoGradGuard no_grad;
  for (absl::string_view set_view : absl::StrSplit(absl::GetFlag(FLAGS_sets), ',')) {
    const std::string set(set_view);
    const bool deepseek = set == "deepseek";
    if (!deepseek && set != "160m") {
      std::cerr << "unknown shape set " << set << "\n";
      return 2;
    }
    const int64_t hi = deepseek ? 64 : 8, di = deepseek ? 128 : 64, topk = deepseek ? 2048 : 256;
    const bool tiled = hi == 64 && di == 128;
    for (absl::string_view len_text : absl::StrSplit(absl::GetFlag(FLAGS_lengths), ',')) {
      int64_t len = 0;
      if (!absl::SimpleAtoi(len_text, &len) || len < 1) return 2;
      torch::manual_seed(1);
      auto opts = torch::TensorOptions().device(device);
      const int64_t t = chunk > 0 && chunk < len ? chunk : len, offset = len - t;  // queries at offset .. len - 1
      torch::Tensor q = torch::randn({1, t, hi, di}, opts).to(torch::kBFloat16);  // [1, T, Hi, Di]
      torch::Tensor k = torch::randn({1, len, di}, opts).to(torch::kBFloat16);    // [1, S, Di]
      torch::Tensor w = torch::randn({1, t, hi}, opts);                           // [1, T, Hi]
      torch::Tensor limit = sk::CausalKeyLimit(1, t, offset, device);             // [1, T]
      const double pairs = static_cast<double>(t) * len - static_cast<double>(t) * (t - 1) / 2;
      const double flops = 2.0 * hi * di * pairs;
      auto print = [&](const Row& r) { PrintRow(set, len, hi, di, topk, flops, r); };
      auto profile = [&](const std::function<void()>& fn) {
        const int top = absl::GetFlag(FLAGS_profile_top);
        if (top <= 0) return;
        const spargo::bench::KernelProfile p = spargo::bench::ProfileKernels(device, fn);
        if (p.profiled) spargo::bench::PrintTopKernels(p.kernels, "kernel (one call)", top, 1, "call");
      };
      torch::Tensor per_row;
      if (kernels.count("per_row")) {
        Row r{"per-row bf16"};
        auto run = [&] { return sk::IndexerTopk(q, k, w, limit, topk, sk::IndexerKernel::kPerRow); };
        r.gib = PeakGib(device, [&] { per_row = run(); });
        r.total_s = MedianSeconds(reps, device, run);
        print(r);
      }
      if (kernels.count("tiled") && tiled) {
        Row r{"tiled bf16"};
        torch::Tensor out;
        auto run = [&] { return sk::IndexerTopk(q, k, w, limit, topk, sk::IndexerKernel::kTiled); };
        r.gib = PeakGib(device, [&] { out = run(); });
        r.total_s = MedianSeconds(reps, device, run);
        r.scoring_s = MedianSeconds(reps, device, [&] {
          return sk::IndexerTopk(q, k, w, limit, topk, sk::IndexerKernel::kTiledScoresOnly);
        });
        if (per_row.defined()) r.agreement = std::to_string(SameSets(out, per_row, offset)) + "/" + std::to_string(t);
        print(r);
        profile(run);
      }
      if (kernels.count("fp8") && tiled) {
        Row r{"tiled fp8"};
        sk::IndexerFp8Inputs f;
        r.quant_s = MedianSeconds(reps, device, [&] { f = sk::QuantizeIndexerFp8(q, k, w); });
        torch::Tensor out;
        auto run = [&] { return sk::IndexerTopkFp8(f.q, f.k, f.k_scale, f.weights, limit, topk, sk::IndexerKernel::kTiled); };
        r.gib = PeakGib(device, [&] { out = run(); });
        r.total_s = MedianSeconds(reps, device, run);
        r.scoring_s = MedianSeconds(reps, device, [&] {
          return sk::IndexerTopkFp8(f.q, f.k, f.k_scale, f.weights, limit, topk, sk::IndexerKernel::kTiledScoresOnly);
        });
        if (per_row.defined()) r.agreement = "recall " + std::to_string(Recall(out, per_row)).substr(0, 6);
        print(r);
        profile(run);
        if (kernels.count("quant_torch")) {
          Row t{"fp8 quant torch"};
          sk::IndexerFp8Inputs ref;
          t.gib = PeakGib(device, [&] { ref = sk::QuantizeIndexerFp8Reference(q, k, w); });
          t.quant_s = MedianSeconds(reps, device, [&] { ref = sk::QuantizeIndexerFp8Reference(q, k, w); });
          const bool same = torch::equal(ref.q, f.q) && torch::equal(ref.k, f.k) &&
                            torch::equal(ref.k_scale.view(torch::kInt32), f.k_scale.view(torch::kInt32)) &&
                            torch::equal(ref.weights.view(torch::kInt32), f.weights.view(torch::kInt32));
          t.agreement = same ? "bits equal the kernel's" : "BITS DIFFER";
          print(t);
        }
      }
      const double torch_gib_needed = static_cast<double>(t) * hi * len * 4 / (1ull << 30);
      if (kernels.count("torch") && torch_gib_needed <= absl::GetFlag(FLAGS_torch_limit_gib)) {
        Row r{"torch"};
        try {
          torch::Tensor ref;
          r.gib = PeakGib(device, [&] { ref = TorchPath(q, k, w, topk, offset); });
          r.total_s = MedianSeconds(reps, device, [&] { return TorchPath(q, k, w, topk, offset); });
          if (per_row.defined()) {
            r.agreement = std::to_string(SameSets(per_row, ref, offset)) + "/" + std::to_string(t);
          }
        } catch (const c10::Error& e) {  // out of memory, most likely
          r.agreement = std::string("failed: ") + e.what_without_backtrace();
        }
        print(r);
      }
    }
  }
  return 0;
}
