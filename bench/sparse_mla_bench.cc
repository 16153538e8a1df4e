// Sparse MLA attention (kernels/sparse_mla.h) at DeepSeek-V3.2's shapes (or others: --heads, --topk, --dqk, --dv;
// the 160M model: --heads 16 --topk 256 --dqk 288 --dv 256) against dense causal attention through torch SDPA,
// measured in one run. Prints one table row per length L (T = S = L, batch 1):
//   sparse forward: SparseMlaForward, q [L, H, Dqk = 576], kv [L, Dqk] (one shared latent + rope row per token),
//     Dv 512, sm_scale --qk_head_dim^-0.5, indices [L, K = 2048] int32 drawn uniformly from [0, L) (--selection
//     random: every slot used) or as a causal prefill selects them (--selection causal: query t uses min(t + 1, K)
//     slots, keys 0..t, drawn uniformly when t >= K, the rest -1): 2 * H * (Dqk + Dv) FLOPs per used slot; its
//     relative error against the libtorch reference on the first 64 queries;
//     in a second column the kernel's compute-only rate, without the gather (SPARGO_SPARSE_MLA_KERNEL=no_gather;
//     its results are wrong);
//   sparse backward: SparseMlaBackward (the CUDA kernel) with 2 * H * (3 Dqk + 2 Dv) FLOPs per used slot (scores
//     recomputed, dP, dQ, dK, dV; H the real heads, though the kernels pad H to a multiple of 64) and its relative
//     errors (dq, dkv) against the reference on the first 64 queries (dkv restricted to those queries'
//     contributions), at the lengths in --backward_lengths; the libtorch reference backward is timed up to
//     --reference_max;
//   dense: at::scaled_dot_product_attention(is_causal) in MHA mode as DeepSeek's dense prefill computes the same
//     layer: q, k [1, H, L, 192], v [1, H, L, 128] bf16 (whatever backend torch picks for those dims), L (L + 1) / 2
//     causal pairs, 2 * H * (192 + 128) FLOPs per pair forward, 2 * H * (3 * 192 + 2 * 128) backward.
// Times are medians of --reps after a warm-up; peak GiB is the CUDA allocator's peak above what was allocated before
// the call (inputs excluded, outputs and workspace included).
//   spargo_sparse_mla_bench [--device cuda|cpu] [--lengths 8192,32768,131072] [--heads 128] [--topk 2048]
//                           [--dqk 576] [--dv 512] [--qk_head_dim 192] [--reps 5] [--backward_lengths 8192]
//                           [--reference_max 8192] [--dense true] [--variants true] [--selection random|causal]
// The dense column always uses 192/128 (DeepSeek's MHA dims) with --heads heads.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "bench/peak_memory.h"
#include "kernels/sparse_mla.h"

#include <torch/version.h>

ABSL_FLAG(std::string, device, "cuda", "cuda or cpu (cpu runs the reference: a smoke test).");
ABSL_FLAG(std::string, lengths, "8192,32768,131072", "Lengths L = T = S.");
ABSL_FLAG(std::string, backward_lengths, "8192", "Lengths at which the sparse backward (reference) is timed.");
ABSL_FLAG(int64_t, heads, 128, "Query heads H.");
ABSL_FLAG(int64_t, topk, 2048, "Selected keys per query K.");
ABSL_FLAG(int64_t, dqk, 576, "Latent + rope width Dqk of q and kv rows (the kernels: 576 or 288).");
ABSL_FLAG(int64_t, dv, 512, "Value width Dv, the first Dv columns of kv (the kernels: 512 or 256).");
ABSL_FLAG(int64_t, qk_head_dim, 192, "Per-head nope + rope width whose inverse square root is sm_scale.");
ABSL_FLAG(int32_t, reps, 5, "Timed repetitions (median reported).");
ABSL_FLAG(int64_t, reference_max, 8192, "Time the libtorch reference forward up to this length.");
ABSL_FLAG(bool, dense, true, "Measure dense causal SDPA (torch 2 builds only).");
ABSL_FLAG(bool, variants, true, "Also time the forward kernel without its gather (compute only).");
ABSL_FLAG(std::string, selection, "random", "random (every slot used) or causal (query t uses min(t + 1, K) slots).");

namespace {

using spargo::bench::MedianSeconds;
using spargo::bench::PeakGib;
using spargo::bench::ParsePositiveList;

bool Contains(const std::vector<int64_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }

std::string Cell(double v, const char* fmt) {
  if (v < 0) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
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
  const int64_t h = absl::GetFlag(FLAGS_heads), k = absl::GetFlag(FLAGS_topk), dqk = absl::GetFlag(FLAGS_dqk),
                dv = absl::GetFlag(FLAGS_dv);
  if (h < 1 || k < 1 || dv < 1 || dv > dqk || absl::GetFlag(FLAGS_qk_head_dim) < 1) {
    std::cerr << "need --heads, --topk, --qk_head_dim >= 1 and 1 <= --dv <= --dqk\n";
    return 2;
  }
  const std::vector<int64_t> backward_lengths = ParsePositiveList(absl::GetFlag(FLAGS_backward_lengths));
  const double scale = 1.0 / std::sqrt(static_cast<double>(absl::GetFlag(FLAGS_qk_head_dim)));
  const bool causal = absl::GetFlag(FLAGS_selection) == "causal";
  if (!causal && absl::GetFlag(FLAGS_selection) != "random") {
    std::cerr << "--selection must be random or causal\n";
    return 2;
  }
  const char* backward_env = std::getenv("SPARGO_SPARSE_MLA_BACKWARD");
  std::printf("Sparse MLA (MQA, H %lld, Dqk %lld, Dv %lld, K %lld, bf16) vs dense causal SDPA (MHA, H %lld, 192/128, "
              "bf16), batch 1, %s, kernel %s, %s selection, SPARGO_SPARSE_MLA_BACKWARD=%s, median of %d\n",
              static_cast<long long>(h), static_cast<long long>(dqk), static_cast<long long>(dv),
              static_cast<long long>(k), static_cast<long long>(h), device_name.c_str(),
              spargo::kernels::SparseMlaHasCudaKernel() ? "built" : "NOT built (reference)",
              causal ? "causal" : "random", backward_env == nullptr ? "(unset)" : backward_env, reps);
  std::printf("| L | sparse fwd ms | TFLOP/s | peak GiB | rel err | no-gather TFLOP/s | "
              "reference fwd ms | "
              "sparse bwd ms | TFLOP/s | peak GiB | rel err dq / dkv | reference bwd ms | dense fwd ms | TFLOP/s | "
              "peak GiB | dense bwd ms | TFLOP/s | dense/sparse fwd | dense/sparse bwd |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
              "--- | --- |\n");
  for (int64_t len : ParsePositiveList(absl::GetFlag(FLAGS_lengths))) {
    torch::NoGradGuard no_grad;
    torch::manual_seed(1);
    auto opts = torch::TensorOptions().device(device);
    double fwd_ms = -1, fwd_tf = -1, fwd_gib = -1, err = -1, ref_ms = -1, bwd_ms = -1, bwd_tf = -1, bwd_gib = -1;
    double ref_bwd_ms = -1;
    std::string variants;
    std::string bwd_err = "-";
    double dense_ms = -1, dense_tf = -1, dense_gib = -1, dense_bwd_ms = -1, dense_bwd_tf = -1;
    try {
      torch::Tensor q = torch::randn({len, h, dqk}, opts).to(torch::kBFloat16);                  // [L, H, Dqk]
      torch::Tensor kv = torch::randn({len, dqk}, opts).to(torch::kBFloat16);                    // [L, Dqk]
      torch::Tensor idx = torch::randint(0, len, {len, k}, opts.dtype(torch::kInt64));  // [L, K]
      double used = static_cast<double>(len) * k;                                         // used slots
      if (causal) {
        auto lopts = opts.dtype(torch::kInt64);
        torch::Tensor pos = torch::arange(len, lopts).unsqueeze(1);                      // [L, 1]
        torch::Tensor slot = torch::arange(k, lopts).unsqueeze(0);                       // [1, K]
        torch::Tensor drawn = (torch::rand({len, k}, opts) * (pos + 1).to(torch::kFloat32)).to(torch::kInt64)
                                  .clamp_max(pos);                                        // keys in [0, t]
        torch::Tensor early = slot.le(pos).to(torch::kInt64) * (slot + 1) - 1;           // t < K: 0..t, then -1
        idx = torch::where(pos.lt(k), early, drawn);
        used = 0;
        for (int64_t t = 0; t < len; ++t) used += static_cast<double>(std::min(t + 1, k));
      }
      idx = idx.to(torch::kInt32);
      const double flops = 2.0 * h * used * (dqk + dv);
      spargo::kernels::SparseMlaOutput fwd;
      fwd_gib = PeakGib(device, [&] { fwd = spargo::kernels::SparseMlaForward(q, kv, idx, scale, dv); });
      const double s = MedianSeconds(reps, device, [&] { spargo::kernels::SparseMlaForward(q, kv, idx, scale, dv); });
      fwd_ms = s * 1e3;
      fwd_tf = flops / s / 1e12;
      const int64_t check = std::min<int64_t>(64, len);
      spargo::kernels::SparseMlaOutput ref = spargo::kernels::SparseMlaForwardReference(
          q.narrow(0, 0, check), kv, idx.narrow(0, 0, check), scale, dv);
      err = (fwd.out.narrow(0, 0, check).to(torch::kFloat32) - ref.out.to(torch::kFloat32)).norm().item<double>() /
            ref.out.to(torch::kFloat32).norm().item<double>();
      if (absl::GetFlag(FLAGS_variants) && device.is_cuda()) {
        setenv("SPARGO_SPARSE_MLA_KERNEL", "no_gather", 1);
        const double vs =
            MedianSeconds(reps, device, [&] { spargo::kernels::SparseMlaForward(q, kv, idx, scale, dv); });
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.1f", flops / vs / 1e12);
        variants = buf;
      }
      unsetenv("SPARGO_SPARSE_MLA_KERNEL");
      if (len <= absl::GetFlag(FLAGS_reference_max)) {
        ref_ms = 1e3 * MedianSeconds(std::min(reps, 3), device, [&] {
                   spargo::kernels::SparseMlaForwardReference(q, kv, idx, scale, dv);
                 });
      }
      if (Contains(backward_lengths, len)) {
        torch::Tensor dout = torch::randn(fwd.out.sizes(), opts).to(torch::kBFloat16);
        bwd_gib = PeakGib(device, [&] {
          spargo::kernels::SparseMlaBackward(q, kv, idx, fwd.out, fwd.lse, dout, scale, dv);
        });
        const double bs = MedianSeconds(reps, device, [&] {
          spargo::kernels::SparseMlaBackward(q, kv, idx, fwd.out, fwd.lse, dout, scale, dv);
        });
        bwd_ms = bs * 1e3;
        bwd_tf = 2.0 * h * used * (3 * dqk + 2 * dv) / bs / 1e12;
        // Errors on the first `check` queries: both sides see only those queries' selections.
        torch::Tensor qc = q.narrow(0, 0, check), ic = idx.narrow(0, 0, check);
        torch::Tensor oc = fwd.out.narrow(0, 0, check), lc = fwd.lse.narrow(0, 0, check), dc = dout.narrow(0, 0, check);
        spargo::kernels::SparseMlaGrads got = spargo::kernels::SparseMlaBackward(qc, kv, ic, oc, lc, dc, scale, dv);
        spargo::kernels::SparseMlaGrads want =
            spargo::kernels::SparseMlaBackwardReference(qc, kv, ic, oc, lc, dc, scale, dv);
        auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
          torch::Tensor x = a.to(torch::kFloat32), y = b.to(torch::kFloat32);
          return (x - y).norm().item<double>() / y.norm().item<double>();
        };
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.1e / %.1e", rel(got.dq, want.dq), rel(got.dkv, want.dkv));
        bwd_err = buf;
        if (len <= absl::GetFlag(FLAGS_reference_max)) {
          ref_bwd_ms = 1e3 * MedianSeconds(1, device, [&] {
                         spargo::kernels::SparseMlaBackwardReference(q, kv, idx, fwd.out, fwd.lse, dout, scale, dv);
                       });
        }
      }
    } catch (const c10::Error& e) {
      std::fprintf(stderr, "L %lld sparse: %s\n", static_cast<long long>(len), e.what_without_backtrace());
    }
#if TORCH_VERSION_MAJOR >= 2
    if (absl::GetFlag(FLAGS_dense) && device.is_cuda()) {
      try {
        torch::Tensor q = torch::randn({1, h, len, 192}, opts).to(torch::kBFloat16);  // [1, H, L, 192]
        torch::Tensor kk = torch::randn({1, h, len, 192}, opts).to(torch::kBFloat16);
        torch::Tensor v = torch::randn({1, h, len, 128}, opts).to(torch::kBFloat16);  // [1, H, L, 128]
        const double pairs = static_cast<double>(len) * (len + 1) / 2;
        dense_gib = PeakGib(device, [&] { at::scaled_dot_product_attention(q, kk, v, {}, 0.0, true); });
        const double s = MedianSeconds(std::min(reps, 3), device,
                                       [&] { at::scaled_dot_product_attention(q, kk, v, {}, 0.0, true); });
        dense_ms = s * 1e3;
        dense_tf = 2.0 * h * (192 + 128) * pairs / s / 1e12;
        {
          torch::AutoGradMode grad(true);
          torch::Tensor qg = q.detach().requires_grad_(true), kg = kk.detach().requires_grad_(true),
                        vg = v.detach().requires_grad_(true);
          torch::Tensor dout = torch::randn({1, h, len, 128}, opts).to(torch::kBFloat16);
          const double both = MedianSeconds(std::min(reps, 3), device, [&] {
            torch::Tensor o = at::scaled_dot_product_attention(qg, kg, vg, {}, 0.0, true);
            o.backward(dout);
            qg.mutable_grad() = torch::Tensor();
            kg.mutable_grad() = torch::Tensor();
            vg.mutable_grad() = torch::Tensor();
          });
          dense_bwd_ms = std::max(0.0, both - s) * 1e3;
          dense_bwd_tf = 2.0 * h * (3 * 192 + 2 * 128) * pairs / (both - s) / 1e12;
        }
      } catch (const c10::Error& e) {
        std::fprintf(stderr, "L %lld dense: %s\n", static_cast<long long>(len), e.what_without_backtrace());
      }
    }
#endif
    std::printf("| %lld | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                static_cast<long long>(len), Cell(fwd_ms, "%.2f").c_str(), Cell(fwd_tf, "%.1f").c_str(),
                Cell(fwd_gib, "%.2f").c_str(), Cell(err, "%.1e").c_str(), variants.empty() ? "-" : variants.c_str(),
                Cell(ref_ms, "%.1f").c_str(), Cell(bwd_ms, "%.2f").c_str(), Cell(bwd_tf, "%.1f").c_str(),
                Cell(bwd_gib, "%.2f").c_str(), bwd_err.c_str(), Cell(ref_bwd_ms, "%.1f").c_str(),
                Cell(dense_ms, "%.2f").c_str(), Cell(dense_tf, "%.1f").c_str(), Cell(dense_gib, "%.2f").c_str(),
                Cell(dense_bwd_ms, "%.2f").c_str(), Cell(dense_bwd_tf, "%.1f").c_str(),
                Cell(dense_ms > 0 && fwd_ms > 0 ? dense_ms / fwd_ms : -1, "%.2fx").c_str(),
                Cell(dense_bwd_ms > 0 && bwd_ms > 0 ? dense_bwd_ms / bwd_ms : -1, "%.2fx").c_str());
    std::fflush(stdout);
  }
  return 0;
}
