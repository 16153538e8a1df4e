// One whole DeepSeek-V3.2 attention layer (random bf16 weights, batch 1, forward) two ways, projections included in
// both (formulas in ../shared/docs/dsa.md; the layer is model/dsv32_model.cc's Attention without its input RMSNorm):
//   dense: MLA in MHA form: q = q_b(RMSNorm(q_a(x))) [T, H, nope + rope] (interleaved RoPE on the rope part), kv_a(x)
//     -> latent (RMSNorm) + k_rope (RoPE), kv_b(latent) -> k_nope, v per head; k = [k_nope | k_rope shared by all
//     heads] [S, H, 192], v [S, H, 128]; torch scaled_dot_product_attention, then o_proj. Torch 1.x builds (no SDPA)
//     run a plain masked softmax instead (the --small smoke test on the CPU).
//   DSA: the same projections in MQA ("absorbed") form: q_nope folded through kv_b's key half -> [T, H, 512] latent
//     + 64 rope = 576 against one shared row [latent | k_rope] per key; the lightning indexer (wq_b on the q latent,
//     LayerNorm(wk(x)), weights_proj(x) * Hi^-0.5, rotate-half RoPE on the first 64 dims of its query and key),
//     its top-k (--indexer: bf16 kernels::IndexerTopk, and/or fp8: kernels::QuantizeIndexerFp8 of q, k and the
//     head weights, timed with the indexer's projections, then kernels::IndexerTopkFp8), kernels::SparseMlaForward
//     over the selected keys, kv_b's value half on the output, o_proj.
// Two measurements per length L:
//   prefill: the whole causal prefill of L tokens (positions 0 .. L-1);
//   chunk: DeepSeek's marginal cost at position L: the last C queries (positions L-C .. L-1) over L cached keys. The
//     prefix's caches are built untimed (DSA: the 576-wide latent rows and the indexer keys, bf16 or e4m3 with
//     per-key scales; dense: the expanded per-head K and V, which favours dense: it skips kv_b over the prefix); the
//     chunk's own rows are computed and written into the caches inside the timed forward. The dense chunk's mask
//     is bottom-right causal (query i sees keys 0 .. L-C+i), given to SDPA as an explicit boolean [C, L] mask; the
//     "split" column times the two SDPA calls an LSE-merged version would make (the prefix without a mask, the
//     chunk's own C x C block with is_causal) without the merge, a lower bound for dense without a mask tensor.
// Checks (relative error ||dsa - dense|| / ||dense|| of the layer outputs): prefill: the first min(L, topk) rows,
//   where the indexer selects every causal key; chunk: the DSA layer with every causal key selected (index_topk >= L)
//   against the dense chunk; and the dense chunk against the dense prefill's last C rows (the mask's alignment).
// RoPE uses plain frequencies (theta 10000; YaRN's frequencies cost the same); the softmax scale is DeepSeek's:
// 192^-0.5 * (0.1 ln 40 + 1)^2. Times are medians of --reps runs after one untimed run (which also gives the peak
// memory: the CUDA allocator's peak above what was held before, weights, inputs and caches excluded). The layer's
// time ("dense ms", "DSA ms", "dense bound ms") comes from runs synchronised only at their ends; the parts' columns
// from separate runs with a device synchronisation between parts (so they add up to a little more). "dense bound"
// is the chunk's whole dense layer with the split attention (the two mask-free calls, no merge) in place of the
// masked one: a lower bound for dense, and "bound/DSA" DSA's speed-up over it.
//   spargo_dsa_layer_bench [--device cuda|cpu] [--lengths 8192,32768,65536,131072] [--chunk 2048] [--reps 3]
//                          [--indexer bf16,fp8] [--small] (--small: tiny shapes, lengths 48,96, chunk 16: a CPU
//                          smoke test)
// One table row per length, mode and indexer (the dense columns repeat across indexers).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "bench/bench_models.h"
#include "bench/peak_memory.h"
#include "kernels/indexer_fp8.h"
#include "kernels/lightning_indexer.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/sparse_mla.h"

#include <torch/version.h>

ABSL_FLAG(std::string, device, "cuda", "cuda or cpu.");
ABSL_FLAG(std::string, lengths, "", "Lengths L (default 8192,32768,65536,131072; 48,96 with --small).");
ABSL_FLAG(int64_t, chunk, 0, "Queries C of the chunk measurement (default 2048; 16 with --small).");
ABSL_FLAG(int32_t, reps, 3, "Timed repetitions (median reported).");
ABSL_FLAG(std::string, indexer, "bf16,fp8", "Indexers timed in the DSA layer: bf16 and/or fp8, comma-separated.");
ABSL_FLAG(bool, small, false, "Tiny shapes (hidden 128, 4 heads, indexer 4 x 16, top-k 16): a smoke test.");

namespace {

using spargo::bench::PeakGib;
using torch::Tensor;

struct Shape {
  int64_t hidden, q_lora, kv_lora, heads, nope, rope, v, index_heads, index_dim, topk;
  int64_t qk() const { return nope + rope; }
};

constexpr Shape kDeepSeek{7168, 1536, 512, 128, 128, 64, 128, 64, 128, 2048};
constexpr Shape kSmall{128, 48, 32, 4, 16, 8, 16, 4, 16, 16};
constexpr double kEps = 1e-6;

// Random bf16 weights, each projection scaled by fan_in^-0.5 so that activations stay O(1); norms at their init.
struct Weights {
  Tensor q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b, o;  // MLA
  Tensor wq_b, wk, k_norm_w, k_norm_b, w_proj;          // indexer
};

Weights RandomWeights(const Shape& s, const torch::Device& device) {
  auto f32 = torch::TensorOptions().device(device).dtype(torch::kFloat32);
  auto proj = [&](int64_t out, int64_t in) {
    return (torch::randn({out, in}, f32) / std::sqrt(static_cast<double>(in))).to(torch::kBFloat16);
  };
  auto bf = f32.dtype(torch::kBFloat16);
  Weights w;
  w.q_a = proj(s.q_lora, s.hidden);                                 // [q_lora, hidden]
  w.q_a_norm = torch::ones({s.q_lora}, bf);
  w.q_b = proj(s.heads * s.qk(), s.q_lora);                         // [H * 192, q_lora]
  w.kv_a = proj(s.kv_lora + s.rope, s.hidden);                      // [kv_lora + rope, hidden]
  w.kv_a_norm = torch::ones({s.kv_lora}, bf);
  w.kv_b = proj(s.heads * (s.nope + s.v), s.kv_lora);              // [H * (nope + v), kv_lora]
  w.o = proj(s.hidden, s.heads * s.v);                              // [hidden, H * v]
  w.wq_b = proj(s.index_heads * s.index_dim, s.q_lora);             // [Hi * Di, q_lora]
  w.wk = proj(s.index_dim, s.hidden);                               // [Di, hidden]
  w.k_norm_w = torch::ones({s.index_dim}, bf);
  w.k_norm_b = torch::zeros({s.index_dim}, bf);
  w.w_proj = proj(s.index_heads, s.hidden);                         // [Hi, hidden]
  return w;
}

Tensor Linear(const Tensor& x, const Tensor& w) { return torch::matmul(x, w.t()); }

double SoftmaxScale(const Shape& s) {
  const double m = 0.1 * std::log(40.0) + 1.0;  // YaRN mscale(factor 40, mscale_all_dim 1)
  return m * m / std::sqrt(static_cast<double>(s.qk()));
}

// cos, sin [1, T, rope/2] (bf16) of positions offset .. offset + T - 1.
std::pair<Tensor, Tensor> CosSin(const Shape& s, int64_t offset, int64_t t, const torch::Device& device) {
  auto f32 = torch::TensorOptions().device(device).dtype(torch::kFloat32);
  Tensor inv = torch::pow(10000.0, -torch::arange(0, s.rope, 2, f32) / static_cast<double>(s.rope));  // [rope/2]
  Tensor freqs = (torch::arange(offset, offset + t, f32).unsqueeze(-1) * inv).unsqueeze(0);        // [1, T, rope/2]
  return {freqs.cos().to(torch::kBFloat16), freqs.sin().to(torch::kBFloat16)};
}

// Laps of one run: each Lap(i) synchronises the device and adds the time since the previous lap to part i.
class Laps {
 public:
  Laps(const torch::Device& device, int parts) : device_(device), ms_(parts, 0.0) { Reset(); }
  void Reset() {
    spargo::bench::Sync(device_);
    start_ = std::chrono::steady_clock::now();
  }
  void Lap(int part) {
    spargo::bench::Sync(device_);
    const auto now = std::chrono::steady_clock::now();
    ms_[part] += std::chrono::duration<double, std::milli>(now - start_).count();
    start_ = now;
  }
  const std::vector<double>& ms() const { return ms_; }

 private:
  torch::Device device_;
  std::vector<double> ms_;
  std::chrono::steady_clock::time_point start_;
};

// Medians over runs of each part and of the runs' totals (parts..., total).
std::vector<double> Medians(const std::vector<std::vector<double>>& runs) {
  std::vector<double> out;
  const size_t parts = runs.at(0).size();
  for (size_t p = 0; p <= parts; ++p) {
    std::vector<double> v;
    for (const auto& r : runs) {
      double total = 0;
      for (double x : r) total += x;
      v.push_back(p < parts ? r[p] : total);
    }
    std::sort(v.begin(), v.end());
    out.push_back(v[v.size() / 2]);
  }
  return out;
}

// The shared MLA projections of x [1, T, hidden].
struct Mla {
  Tensor qr;      // [1, T, q_lora]: q_a_layernorm(q_a_proj(x)), also the indexer's query input
  Tensor q;       // [1, T, H, nope + rope] with the rope part rotated (de-interleaved layout)
  Tensor latent;  // [1, T, kv_lora] after kv_a_layernorm
  Tensor k_rope;  // [1, T, rope], rotated
};

Mla Project(const Shape& s, const Weights& w, const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t t = x.size(1);
  Mla m;
  m.qr = spargo::kernels::RmsNorm(Linear(x, w.q_a), w.q_a_norm, kEps);
  Tensor q = Linear(m.qr, w.q_b).view({1, t, s.heads, s.qk()});
  Tensor q_rope = spargo::kernels::Rope(q.narrow(-1, s.nope, s.rope), cos, sin, s.rope, /*interleaved=*/true);
  q.narrow(-1, s.nope, s.rope).copy_(q_rope);
  m.q = q;
  Tensor ckv = Linear(x, w.kv_a);                                                        // [1, T, kv_lora + rope]
  m.latent = spargo::kernels::RmsNorm(ckv.narrow(-1, 0, s.kv_lora), w.kv_a_norm, kEps);
  m.k_rope = spargo::kernels::Rope(ckv.narrow(-1, s.kv_lora, s.rope), cos, sin, s.rope, /*interleaved=*/true);
  return m;
}

// ---------------------------------------------------------------------------------------------------------------
// Dense (MHA form).

// K [1, H, T, nope + rope] and V [1, H, T, v], contiguous in SDPA's layout.
std::pair<Tensor, Tensor> DenseKeysValues(const Shape& s, const Weights& w, const Mla& m) {
  const int64_t t = m.latent.size(1);
  Tensor kv = Linear(m.latent, w.kv_b).view({1, t, s.heads, s.nope + s.v});
  Tensor k = torch::cat({kv.narrow(-1, 0, s.nope), m.k_rope.unsqueeze(2).expand({1, t, s.heads, s.rope})}, -1);
  return {k.transpose(1, 2).contiguous(), kv.narrow(-1, s.nope, s.v).transpose(1, 2).contiguous()};
}

enum class DenseMask { kCausal, kBottomRight, kSplit };

#if TORCH_VERSION_MAJOR >= 2
const char* SdpaBackendName(int64_t choice) {
  switch (choice) {  // at::sdp::SDPBackend
    case 0: return "math";
    case 1: return "flash";
    case 2: return "efficient";
    case 3: return "cudnn";
    case 4: return "overrideable";
    default: return "error";
  }
}
#endif

// Attention core: q [1, H, T, Dqk], k [1, H, S, Dqk], v [1, H, S, Dv] -> [1, H, T, Dv]. kCausal needs T = S;
// kBottomRight uses `mask` [1, 1, T, S] (query i sees keys 0 .. S-T+i); kSplit (timing only) makes the two calls of
// an LSE-merged version, k and v being the prefix (no mask), k2 and v2 the T new keys (is_causal), and returns the
// prefix call's output unmerged (right shape, not the layer's value; torch 1.x: nothing). `backend` receives SDPA's
// choice for the first call.
Tensor DenseCore(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k2, const Tensor& v2, DenseMask kind,
                 const Tensor& mask, double scale, std::string* backend) {
#if TORCH_VERSION_MAJOR >= 2
  if (kind == DenseMask::kSplit) {
    if (backend != nullptr) *backend = SdpaBackendName(at::_fused_sdp_choice(q, k, v, {}, 0.0, false));
    Tensor prefix = at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, scale);
    at::scaled_dot_product_attention(q, k2, v2, {}, 0.0, true, scale);
    return prefix;
  }
  const bool causal = kind == DenseMask::kCausal;
  if (backend != nullptr) {
    *backend = causal ? SdpaBackendName(at::_fused_sdp_choice(q, k, v, {}, 0.0, true))
                      : SdpaBackendName(at::_fused_sdp_choice(q, k, v, mask, 0.0, false));
  }
  return causal ? at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, scale)
                : at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale);
#else
  // Torch 1.x: scores materialised, float32 softmax (small shapes only).
  if (kind == DenseMask::kSplit) return Tensor();
  if (backend != nullptr) *backend = "manual";
  const int64_t t = q.size(2), sk = k.size(2);
  Tensor allowed = kind == DenseMask::kCausal
                       ? torch::ones({t, sk}, q.options().dtype(torch::kBool)).tril()
                       : mask.view({t, sk});
  Tensor scores = torch::matmul(q, k.transpose(2, 3)).to(torch::kFloat32) * scale;    // [1, H, T, S]
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1).to(v.scalar_type()), v);
#endif
}

// Dense caches of a chunk measurement: K, V [1, H, L, *] of every position (the chunk's rows rewritten when timed)
// and contiguous copies of the prefix's rows [1, H, L - C, *] for the split timing.
struct DenseCache {
  Tensor k, v, k_prefix, v_prefix;
};

// The dense layer on x [1, T, hidden] at positions offset .. offset + T - 1. Whole prefill: cache null, offset 0.
// Chunk: the new K/V rows go into `cache` at offset, attention over all cached keys with the bottom-right mask.
// Laps: 0 projections (q, kv_b, K/V), 1 attention core, 2 output (transpose, o_proj).
Tensor DenseLayer(const Shape& s, const Weights& w, const Tensor& x, int64_t offset, DenseCache* cache,
                  const Tensor& mask, DenseMask kind, Laps* laps, std::string* backend) {
  const int64_t t = x.size(1);
  auto [cos, sin] = CosSin(s, offset, t, x.device());
  if (laps != nullptr) laps->Reset();
  Mla m = Project(s, w, x, cos, sin);
  Tensor q = m.q.transpose(1, 2).contiguous();                                           // [1, H, T, 192]
  auto [k, v] = DenseKeysValues(s, w, m);                                                 // [1, H, T, 192 / 128]
  Tensor k2, v2;
  if (kind == DenseMask::kSplit) {
    k2 = k;
    v2 = v;
    k = cache->k_prefix;
    v = cache->v_prefix;
  } else if (cache != nullptr) {
    cache->k.narrow(2, offset, t).copy_(k);
    cache->v.narrow(2, offset, t).copy_(v);
    k = cache->k;
    v = cache->v;
  }
  if (laps != nullptr) laps->Lap(0);
  Tensor out = DenseCore(q, k, v, k2, v2, kind, mask, SoftmaxScale(s), backend);         // [1, H, T, v]
  if (laps != nullptr) laps->Lap(1);
  if (!out.defined()) return out;
  out = Linear(out.transpose(1, 2).reshape({1, t, s.heads * s.v}), w.o);                // [1, T, hidden]
  if (laps != nullptr) laps->Lap(2);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// DSA (MQA form with the indexer and the sparse kernel).

// Latent rows [T, kv_lora + rope] (one per token: the MQA key, its first kv_lora columns also the value).
Tensor LatentRows(const Mla& m) { return torch::cat({m.latent, m.k_rope}, -1).view({m.latent.size(1), -1}); }

// The indexer's key [1, T, Di]: LayerNorm(wk(x)), rotate-half RoPE on its first `rope` dims.
Tensor IndexerKeys(const Shape& s, const Weights& w, const Tensor& x, const Tensor& cos, const Tensor& sin) {
  Tensor k = torch::layer_norm(Linear(x, w.wk), {s.index_dim}, w.k_norm_w, w.k_norm_b, kEps);
  return spargo::kernels::Rope(k, cos, sin, s.rope, /*interleaved=*/false);
}

// How the DSA layer selects: the indexer in bf16 or FP8 (e4m3, kernels/indexer_fp8.h), or every causal key (the
// layer with index_topk >= L, the indexer skipped: the check against dense).
enum class Selection { kBf16, kFp8, kAll };

const char* SelectionName(Selection sel) {
  return sel == Selection::kBf16 ? "bf16" : sel == Selection::kFp8 ? "fp8" : "all";
}

struct DsaCache {
  Tensor kv;           // [L, kv_lora + rope]
  Tensor index;        // [1, L, Di] bf16 (the bf16 indexer)
  Tensor index8;       // [1, L, Di] e4m3 bits (the FP8 indexer)
  Tensor index_scale;  // [1, L] float32, index8's per-key scales
};

// Every causal key of each query: [T, S] int32, key j for query i when j <= offset + i, else -1.
Tensor AllCausalKeys(int64_t t, int64_t keys, int64_t offset, const torch::Device& device) {
  auto opts = torch::TensorOptions().device(device).dtype(torch::kInt64);
  Tensor j = torch::arange(keys, opts).view({1, keys});
  Tensor limit = torch::arange(offset, offset + t, opts).view({t, 1});
  return torch::where(j.le(limit), j, torch::full({}, -1, opts)).to(torch::kInt32);
}

// The DSA layer on x [1, T, hidden] at positions offset .. offset + T - 1 (cache as for DenseLayer).
// Laps: 0 MLA projections (q, absorbed q, latent rows), 1 indexer projections (q_I, k_I, weights; FP8: and their
// quantization), 2 top-k, 3 sparse MLA, 4 output (kv_b's value half, o_proj).
Tensor DsaLayer(const Shape& s, const Weights& w, const Tensor& x, int64_t offset, DsaCache* cache, Selection sel,
                Laps* laps) {
  const int64_t t = x.size(1);
  auto [cos, sin] = CosSin(s, offset, t, x.device());
  if (laps != nullptr) laps->Reset();
  Mla m = Project(s, w, x, cos, sin);
  // Absorbed query [T, H, kv_lora + rope]: q_nope through kv_b's key half, written in place beside the rope part.
  Tensor w_kv = w.kv_b.view({s.heads, s.nope + s.v, s.kv_lora});
  Tensor q_abs = torch::empty({t, s.heads, s.kv_lora + s.rope}, x.options());
  Tensor q_heads = m.q.view({t, s.heads, s.qk()});
  Tensor absorbed = q_abs.narrow(2, 0, s.kv_lora).transpose(0, 1);                        // [H, T, kv_lora]
  torch::bmm_out(absorbed, q_heads.narrow(2, 0, s.nope).transpose(0, 1), w_kv.narrow(1, 0, s.nope));
  q_abs.narrow(2, s.kv_lora, s.rope).copy_(q_heads.narrow(2, s.nope, s.rope));
  Tensor kv = LatentRows(m);                                                              // [T, kv_lora + rope]
  if (cache != nullptr) {
    cache->kv.narrow(0, offset, t).copy_(kv);
    kv = cache->kv;
  }
  if (laps != nullptr) laps->Lap(0);
  Tensor indices;  // [T, K]
  if (sel == Selection::kAll) {
    if (laps != nullptr) laps->Lap(1);
    indices = AllCausalKeys(t, kv.size(0), offset, x.device());
    if (laps != nullptr) laps->Lap(2);
  } else if (sel == Selection::kFp8) {
    Tensor q_index = spargo::kernels::Rope(Linear(m.qr, w.wq_b).view({1, t, s.index_heads, s.index_dim}), cos, sin,
                                           s.rope, /*interleaved=*/false);                // [1, T, Hi, Di]
    Tensor weights = Linear(x, w.w_proj).to(torch::kFloat32) *
                     std::pow(static_cast<double>(s.index_heads), -0.5);                  // [1, T, Hi]
    spargo::kernels::IndexerFp8Inputs q8 =
        spargo::kernels::QuantizeIndexerFp8(q_index, IndexerKeys(s, w, x, cos, sin), weights);
    Tensor k8 = q8.k, k_scale = q8.k_scale;                                               // [1, T, Di], [1, T]
    if (cache != nullptr) {
      cache->index8.narrow(1, offset, t).copy_(k8);
      cache->index_scale.narrow(1, offset, t).copy_(k_scale);
      k8 = cache->index8;
      k_scale = cache->index_scale;
    }
    if (laps != nullptr) laps->Lap(1);
    indices = spargo::kernels::IndexerTopkFp8(q8.q, k8, k_scale, q8.weights,
                                              spargo::kernels::CausalKeyLimit(1, t, offset, x.device()), s.topk)
                  .view({t, -1});
    if (laps != nullptr) laps->Lap(2);
  } else {
    Tensor q_index = spargo::kernels::Rope(Linear(m.qr, w.wq_b).view({1, t, s.index_heads, s.index_dim}), cos, sin,
                                           s.rope, /*interleaved=*/false);                // [1, T, Hi, Di]
    Tensor k_index = IndexerKeys(s, w, x, cos, sin);                                      // [1, T, Di]
    Tensor weights = Linear(x, w.w_proj).to(torch::kFloat32) *
                     std::pow(static_cast<double>(s.index_heads), -0.5);                  // [1, T, Hi]
    if (cache != nullptr) {
      cache->index.narrow(1, offset, t).copy_(k_index);
      k_index = cache->index;
    }
    if (laps != nullptr) laps->Lap(1);
    indices = spargo::kernels::IndexerTopk(q_index, k_index, weights, offset, s.topk).view({t, -1});
    if (laps != nullptr) laps->Lap(2);
  }
  Tensor latent_out = spargo::kernels::SparseMlaForward(q_abs, kv, indices, SoftmaxScale(s), s.kv_lora).out;
  if (laps != nullptr) laps->Lap(3);                                                      // [T, H, kv_lora]
  Tensor per_head = torch::empty({t, s.heads, s.v}, x.options());
  Tensor per_head_t = per_head.transpose(0, 1);                                           // [H, T, v]
  torch::bmm_out(per_head_t, latent_out.transpose(0, 1), w_kv.narrow(1, s.nope, s.v).transpose(1, 2));
  Tensor out = Linear(per_head.view({1, t, s.heads * s.v}), w.o);                         // [1, T, hidden]
  if (laps != nullptr) laps->Lap(4);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

double RelErr(const Tensor& got, const Tensor& want) {
  Tensor a = got.to(torch::kFloat32), b = want.to(torch::kFloat32);
  const double err = (a - b).norm().item<double>() / b.norm().item<double>();
  return std::isfinite(err) ? err : -2;  // -2: NaN (printed as such)
}

std::string Cell(double v, const char* fmt) {
  if (v == -2) return "NaN";
  if (v < 0) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// One untimed run inside PeakGib, then `reps` runs with laps (medians of each part and of their sum), then `reps`
// runs without laps, synchronised only before and after (their median is the layer's time: the laps' synchronisations
// leave the device idle between parts).
struct Timed {
  std::vector<double> ms;  // parts..., sum of the parts
  double whole_ms = -1;
  double gib = -1;
};

Timed TimeLayer(const torch::Device& device, int reps, int parts, const std::function<void(Laps*)>& run) {
  Timed r;
  r.gib = PeakGib(device, [&] { run(nullptr); });
  std::vector<std::vector<double>> runs, whole;
  for (int i = 0; i < reps; ++i) {
    Laps laps(device, parts);
    run(&laps);
    runs.push_back(laps.ms());
  }
  r.ms = Medians(runs);
  for (int i = 0; i < reps; ++i) {
    Laps laps(device, 1);
    run(nullptr);
    laps.Lap(0);
    whole.push_back(laps.ms());
  }
  r.whole_ms = Medians(whole).at(0);
  return r;
}

struct Row {
  int64_t len = 0;
  std::string mode, indexer, backend = "-";
  double dense_ms = -1, dense_attn_ms = -1, split_ms = -1, bound_ms = -1, dense_gib = -1;
  double dsa_ms = -1, mla_proj_ms = -1, index_proj_ms = -1, topk_ms = -1, sparse_ms = -1, dsa_gib = -1;
  double err = -1, err_mask = -1;

  void SetDsa(const Timed& d) {
    dsa_ms = d.whole_ms;
    mla_proj_ms = d.ms[0] + d.ms[4];
    index_proj_ms = d.ms[1];
    topk_ms = d.ms[2];
    sparse_ms = d.ms[3];
    dsa_gib = d.gib;
  }
};

void PrintRow(const Row& r) {
  std::printf("| %lld | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
              static_cast<long long>(r.len), r.mode.c_str(), r.indexer.c_str(), Cell(r.dense_ms, "%.2f").c_str(),
              Cell(r.dense_attn_ms, "%.2f").c_str(), Cell(r.split_ms, "%.2f").c_str(),
              Cell(r.bound_ms, "%.2f").c_str(), r.backend.c_str(),
              Cell(r.dense_gib, "%.2f").c_str(), Cell(r.dsa_ms, "%.2f").c_str(), Cell(r.mla_proj_ms, "%.2f").c_str(),
              Cell(r.index_proj_ms, "%.2f").c_str(), Cell(r.topk_ms, "%.2f").c_str(),
              Cell(r.sparse_ms, "%.2f").c_str(), Cell(r.dsa_gib, "%.2f").c_str(),
              Cell(r.dense_ms > 0 && r.dsa_ms > 0 ? r.dense_ms / r.dsa_ms : -1, "%.2fx").c_str(),
              Cell(r.bound_ms > 0 && r.dsa_ms > 0 ? r.bound_ms / r.dsa_ms : -1, "%.2fx").c_str(),
              Cell(r.err, "%.1e").c_str(), Cell(r.err_mask, "%.1e").c_str());
  std::fflush(stdout);
}

void Report(int64_t len, const char* what, const c10::Error& e) {
  std::fprintf(stderr, "L %lld %s: %s\n", static_cast<long long>(len), what, e.what_without_backtrace());
}

// The rows of length `len`: prefill then chunk, one row per indexer in `indexers` (the dense columns repeated).
std::vector<Row> MeasureLength(const Shape& s, const Weights& w, const torch::Device& device, int64_t len,
                               int64_t chunk, int reps, const std::vector<Selection>& indexers) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(static_cast<uint64_t>(len));
  const Tensor x = torch::randn({1, len, s.hidden}, torch::TensorOptions().device(device)).to(torch::kBFloat16);
  const Tensor x_chunk = x.narrow(1, len - chunk, chunk);
  const int64_t offset = len - chunk;
  Row dense_prefill, dense_chunk;
  dense_prefill.len = dense_chunk.len = len;
  dense_prefill.mode = "prefill";
  dense_chunk.mode = "chunk";
  std::vector<Row> prefill_rows, chunk_rows;
  Tensor dense_out, dense_chunk_out;

  // Whole prefill.
  try {
    Timed d = TimeLayer(device, reps, 3, [&](Laps* laps) {
      dense_out = DenseLayer(s, w, x, 0, nullptr, Tensor(), DenseMask::kCausal, laps,
                             laps == nullptr ? &dense_prefill.backend : nullptr);
    });
    dense_prefill.dense_ms = d.whole_ms;
    dense_prefill.dense_attn_ms = d.ms[1];
    dense_prefill.dense_gib = d.gib;
    dense_out = dense_out.narrow(1, offset, chunk).clone();  // only the last C rows are kept (the mask check)
  } catch (const c10::Error& e) {
    Report(len, "dense prefill", e);
    dense_out = Tensor();
  }
  // Rows 0 .. min(L, topk) - 1 select every causal key: the same layer as dense there. Dense again on those rows
  // only (a causal prefix of the sequence is its own prefill).
  const int64_t rows = std::min(len, s.topk);
  Tensor want;
  try {
    want = DenseLayer(s, w, x.narrow(1, 0, rows), 0, nullptr, Tensor(), DenseMask::kCausal, nullptr, nullptr);
  } catch (const c10::Error& e) {
    Report(len, "dense check rows", e);
  }
  for (Selection sel : indexers) {
    Row r = dense_prefill;
    r.indexer = SelectionName(sel);
    try {
      Tensor dsa_out;
      r.SetDsa(TimeLayer(device, reps, 5, [&](Laps* laps) { dsa_out = DsaLayer(s, w, x, 0, nullptr, sel, laps); }));
      if (want.defined()) r.err = RelErr(dsa_out.narrow(1, 0, rows), want);
    } catch (const c10::Error& e) {
      Report(len, "DSA prefill", e);
    }
    prefill_rows.push_back(r);
  }
  want = Tensor();

  // The last chunk over L cached keys: caches of all L positions built untimed.
  try {
    auto [cos, sin] = CosSin(s, 0, len, device);
    Mla m = Project(s, w, x, cos, sin);
    DenseCache dc;
    std::tie(dc.k, dc.v) = DenseKeysValues(s, w, m);
    dc.k_prefix = dc.k.narrow(2, 0, offset).contiguous();
    dc.v_prefix = dc.v.narrow(2, 0, offset).contiguous();
    DsaCache sc;
    sc.kv = LatentRows(m);
    sc.index = IndexerKeys(s, w, x, cos, sin);
    // FP8 index keys: QuantizeIndexerFp8 quantizes k per key; the one-query q and weights beside it are unused.
    spargo::kernels::IndexerFp8Inputs k8 = spargo::kernels::QuantizeIndexerFp8(
        torch::ones({1, 1, s.index_heads, s.index_dim}, sc.index.options()), sc.index,
        torch::ones({1, 1, s.index_heads}, sc.index.options().dtype(torch::kFloat32)));
    sc.index8 = k8.k;
    sc.index_scale = k8.k_scale;
    m = Mla();
    auto opts = torch::TensorOptions().device(device).dtype(torch::kInt64);
    const Tensor mask = torch::arange(len, opts).view({1, len}).le(torch::arange(offset, len, opts).view({chunk, 1}))
                            .view({1, 1, chunk, len});                                    // [1, 1, C, L] bool
    try {
      Timed d = TimeLayer(device, reps, 3, [&](Laps* laps) {
        dense_chunk_out = DenseLayer(s, w, x_chunk, offset, &dc, mask, DenseMask::kBottomRight, laps,
                                     laps == nullptr ? &dense_chunk.backend : nullptr);
      });
      dense_chunk.dense_ms = d.whole_ms;
      dense_chunk.dense_attn_ms = d.ms[1];
      dense_chunk.dense_gib = d.gib;
      if (dense_out.defined()) dense_chunk.err_mask = RelErr(dense_chunk_out, dense_out);
    } catch (const c10::Error& e) {
      Report(len, "dense chunk", e);
    }
    try {
      std::string split_backend;
      Timed d = TimeLayer(device, reps, 3, [&](Laps* laps) {
        DenseLayer(s, w, x_chunk, offset, &dc, Tensor(), DenseMask::kSplit, laps,
                   laps == nullptr ? &split_backend : nullptr);
      });
      if (device.is_cuda()) {
        dense_chunk.split_ms = d.ms[1];
        dense_chunk.bound_ms = d.whole_ms;
        dense_chunk.backend += " (split: " + split_backend + ")";
      }
    } catch (const c10::Error& e) {
      Report(len, "dense split", e);
    }
    dc = DenseCache();
    double err_all = -1;
    try {
      if (dense_chunk_out.defined()) {
        err_all = RelErr(DsaLayer(s, w, x_chunk, offset, &sc, Selection::kAll, nullptr), dense_chunk_out);
      }
    } catch (const c10::Error& e) {
      Report(len, "DSA chunk check", e);
    }
    for (Selection sel : indexers) {
      Row r = dense_chunk;
      r.indexer = SelectionName(sel);
      r.err = err_all;
      try {
        r.SetDsa(TimeLayer(device, reps, 5, [&](Laps* laps) { DsaLayer(s, w, x_chunk, offset, &sc, sel, laps); }));
      } catch (const c10::Error& e) {
        Report(len, "DSA chunk", e);
      }
      chunk_rows.push_back(r);
    }
  } catch (const c10::Error& e) {
    Report(len, "chunk caches", e);
  }
  prefill_rows.insert(prefill_rows.end(), chunk_rows.begin(), chunk_rows.end());
  return prefill_rows;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string device_name = absl::GetFlag(FLAGS_device);
  if (device_name == "cuda" && !torch::cuda::is_available()) {
    std::cerr << "--device cuda needs a CUDA libtorch and a device (--device cpu --small for a smoke test)\n";
    return 2;
  }
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const bool small = absl::GetFlag(FLAGS_small);
  const Shape s = small ? kSmall : kDeepSeek;
  std::string lengths = absl::GetFlag(FLAGS_lengths);
  if (lengths.empty()) lengths = small ? "48,96" : "8192,32768,65536,131072";
  int64_t chunk = absl::GetFlag(FLAGS_chunk);
  if (chunk == 0) chunk = small ? 16 : 2048;
  const int reps = std::max(1, absl::GetFlag(FLAGS_reps));
  std::vector<int64_t> lens = spargo::bench::ParsePositiveList(lengths);
  for (int64_t len : lens) {
    if (chunk < 1 || chunk >= len) {
      std::cerr << "--chunk must be in [1, L) for every L (L " << len << ", chunk " << chunk << ")\n";
      return 2;
    }
  }
  std::vector<Selection> indexers;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_indexer), ',')) {
    if (name != "bf16" && name != "fp8") {
      std::cerr << "--indexer takes bf16 and/or fp8, comma-separated; got '" << name << "'\n";
      return 2;
    }
    indexers.push_back(name == "bf16" ? Selection::kBf16 : Selection::kFp8);
  }
  std::printf("One attention layer, %s shapes (hidden %lld, q_lora %lld, kv_lora %lld, H %lld, nope %lld, rope %lld, "
              "v %lld, indexer %lld x %lld, top-k %lld), bf16, batch 1, forward, %s; sparse MLA kernel %s, indexer "
              "kernel %s; chunk C = %lld; median of %d\n",
              small ? "small" : "DeepSeek-V3.2", static_cast<long long>(s.hidden), static_cast<long long>(s.q_lora),
              static_cast<long long>(s.kv_lora), static_cast<long long>(s.heads), static_cast<long long>(s.nope),
              static_cast<long long>(s.rope), static_cast<long long>(s.v), static_cast<long long>(s.index_heads),
              static_cast<long long>(s.index_dim), static_cast<long long>(s.topk), device_name.c_str(),
              spargo::kernels::SparseMlaHasCudaKernel() ? "built" : "NOT built (reference)",
              spargo::kernels::IndexerTopkHasCudaKernel() ? "built" : "NOT built (reference)",
              static_cast<long long>(chunk), reps);
  torch::manual_seed(0);
  Weights w;
  {
    torch::NoGradGuard no_grad;
    w = RandomWeights(s, device);
  }
  std::printf("| L | mode | indexer | dense ms | dense attn ms | split attn ms | dense bound ms | SDPA backend | "
              "dense GiB | DSA ms | MLA proj ms | indexer proj ms | top-k ms | sparse MLA ms | DSA GiB | dense/DSA | "
              "bound/DSA | rel err DSA (all keys) vs dense | rel err dense chunk vs prefill |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
              "| --- | --- | --- |\n");
  for (int64_t len : lens) {
    for (const Row& r : MeasureLength(s, w, device, len, chunk, reps, indexers)) PrintRow(r);
  }
  return 0;
}
