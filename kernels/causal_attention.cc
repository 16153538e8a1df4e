#include "kernels/causal_attention.h"

#include <cmath>
#include <limits>

namespace spargo::kernels {

torch::Tensor CausalAttentionReference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       int64_t q_offset) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "CausalAttention: q, k, v must be [B, H, T, D]");
  const int64_t tq = q.size(2);
  const int64_t tk = k.size(2);
  TORCH_CHECK(q_offset >= 0 && q_offset + tq == tk, "CausalAttention: q_offset ", q_offset, " + Tq ", tq,
              " must equal Tk ", tk);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, Tq, Tk]
  if (tq > 1) {
    auto opts = torch::TensorOptions().dtype(torch::kLong).device(q.device());
    torch::Tensor qpos = torch::arange(q_offset, q_offset + tq, opts).unsqueeze(1);  // [Tq, 1]
    torch::Tensor kpos = torch::arange(0, tk, opts).unsqueeze(0);                     // [1, Tk]
    scores = scores.masked_fill(kpos > qpos, -std::numeric_limits<float>::infinity());
  }
  return torch::matmul(torch::softmax(scores, -1), v);  // [B, H, Tq, Dv]
}

torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              int64_t q_offset) {
  // Device-specific kernels register here as they land; the reference serves every device until then.
  return CausalAttentionReference(q, k, v, q_offset);
}

}  // namespace spargo::kernels
