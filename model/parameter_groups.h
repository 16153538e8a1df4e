// Parameter groups of the DeepSeek-V3.2 model, by checkpoint name, for freezing parts of it during training:
//   "embedding"  model.embed_tokens
//   "attention"  self_attn.* outside the indexer (MLA projections and norms) and input_layernorm
//   "indexer"    self_attn.indexer.* (wq_b, wk, k_norm, weights_proj)
//   "router"     mlp.gate (the MoE router; its e_score_correction_bias is a buffer, never trained by gradient)
//   "mlp"        dense MLPs, routed and shared experts, post_attention_layernorm
//   "head"       model.norm and lm_head
// The dense warm-up stage of DSA trains "indexer" alone; the sparse stage and RL train every group.
#ifndef SPARGO_MODEL_PARAMETER_GROUPS_H_
#define SPARGO_MODEL_PARAMETER_GROUPS_H_

#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace spargo::model {

// All group names, in the order above.
const std::vector<std::string>& ParameterGroupNames();

// The group of a parameter name; INVALID_ARGUMENT for a name outside the DeepSeek-V3.2 layout.
absl::StatusOr<std::string> ParameterGroupOf(const std::string& name);

// Sets requires_grad = false on every parameter of the `frozen` groups and true on all others (clearing the
// frozen ones' gradients). INVALID_ARGUMENT, changing nothing, for an unknown group or a parameter of no group.
absl::Status FreezeParameterGroups(torch::nn::Module& model, const std::vector<std::string>& frozen);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_PARAMETER_GROUPS_H_
