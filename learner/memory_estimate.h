// The peak memory of a `spargo train` process, estimated from its experiment config before anything is allocated,
// and the check that it fits the devices the config names (LoadExperimentConfig runs CheckRunMemory after
// validation, so a refusal stops `spargo train` with exit code 2 before a model exists).
//  - Per device (learner.device, learner.reference_device, rollout.device; "cuda" is cuda:0), what the run holds
//    throughout: the policy's weights in learner.dtype, its float32 master copy (bfloat16), its gradients (and their
//    float32 copy, bfloat16), AdamW's two float32 moments; the reference model when a KL needs one; the in-process
//    rollout's copy of the policy when it samples on another device or dtype (or the learner is a service). Plus the
//    largest of the phases: the update (one micro-batch's activations, layer by layer, with the attention and
//    indexer maps of this implementation's training forward: [T, T] for dense attention, [T, k] for DSA plus the
//    libtorch selection's transient [T, T] maps off CUDA, and the float32 logits with their log-softmax
//    and gradient), the reference pass, sampling (the decode cache of rollout.prompts_per_step x
//    rollout.group_size sequences and their float32 logits), evaluation (the same for eval.heldout_prompts, or the
//    warm-up probe's learner.warmup.probe_prompts) and the set-up's float32 copies on the CPU.
//  - Sequences count max_new_tokens plus one prompt token: RL steps do reach max_new_tokens, while prompt lengths
//    are unknown before the data is read. The estimate is therefore a floor for longer prompts: the check refuses
//    runs that cannot fit, not every run that might not.
//  - Not counted: the warm-up's activations (its demonstrations' lengths are unknown), optimizer-state sharding
//    across ranks and frozen parameter groups (counted as trained), allocator fragmentation, library workspaces,
//    the CUDA context.
//  - Device memory: MemAvailable of /proc/meminfo, lowered to what the cgroup's limit leaves, for the CPU; the
//    device's total memory from the CUDA driver (libcuda, loaded at run time) for cuda:N. A device whose memory
//    cannot be read (no driver, no /proc) is not checked.
//  - Overriding: SPARGO_IGNORE_MEMORY_ESTIMATE=1 in the environment turns a refusal into a warning.
#ifndef SPARGO_LEARNER_MEMORY_ESTIMATE_H_
#define SPARGO_LEARNER_MEMORY_ESTIMATE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spargo/config.pb.h"

namespace spargo::learner {

// What the estimate needs of the model: its size and, per layer, the widths of what it keeps per token.
struct ModelShape {
  int64_t parameters = 0;  // weights and buffers
  int64_t vocab_size = 0;
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t token_width_sum = 0;  // elements all layers keep per token for the backward pass, summed over layers
  int64_t token_width_max = 0;  // the same for the widest layer
  int64_t attention_heads = 0;  // dense attention: [T, T] score maps per layer and sequence
  int64_t indexer_heads = 0;    // dense attention: [T, T] float32 indexer maps while the indexer trains
  // DSA (selected_keys > 0, index_topk): the training forward attends to the selected keys only, so it keeps
  // [T, min(k, T)] maps per layer and sequence (the selection; while the indexer trains, its per-slot scores for
  // indexer_heads heads and its selected keys of indexer_head_dim) instead of [T, T] ones.
  int64_t selected_keys = 0;
  int64_t indexer_head_dim = 0;
  int64_t indexer_token_width = 0;  // elements the training indexer adds per token and layer
  int64_t cache_width = 0;          // elements the decode cache holds per token and layer in the sampler's dtype
  int64_t cache_fixed_bytes = 0;    // bytes it holds per token and layer whatever that dtype (the FP8 indexer key)
};

// The shape of the config's model: from model.* for a fresh model (the vocabulary is model.tokenizer's, else the
// byte tokenizer's), from pretrained_dir/config.json otherwise. Fails when those files cannot be read.
absl::StatusOr<ModelShape> ModelShapeOf(const config::ExperimentConfig& config);

// One item of the estimate: `phase` is empty for what is held for the whole run.
struct MemoryPart {
  std::string device;  // "cpu", "cuda:N"
  std::string phase;
  std::string what;    // names the config fields it grows with
  double bytes = 0;
};

struct MemoryEstimate {
  std::vector<MemoryPart> parts;
  int64_t sequence_tokens = 0;   // T of the update and of sampling
  int64_t micro_batch_rows = 0;  // rows of one forward/backward pass

  std::vector<std::string> Devices() const;
  // What is held on `device` plus its largest phase there.
  double PeakBytes(const std::string& device) const;
  // "cuda:0 41.2 GiB (update 30.1 GiB), cpu 1.3 GiB (set-up 0.6 GiB)".
  std::string Summary() const;
};

// The estimate for `config` and its model's shape (no file or device is read).
MemoryEstimate EstimateRunMemory(const config::ExperimentConfig& config, const ModelShape& shape);

// Bytes a process may use on `device` ("cpu", "cuda", "cuda:N"); nullopt when unknown.
std::optional<int64_t> DeviceMemoryBytes(const std::string& device);

// RESOURCE_EXHAUSTED when the estimate's peak on a device exceeds what `capacity` gives for it, naming the device,
// both figures, the largest parts and the fields that lower them.
absl::Status CheckEstimateFits(const MemoryEstimate& estimate,
                               const std::function<std::optional<int64_t>(const std::string&)>& capacity);

// ModelShapeOf, EstimateRunMemory and CheckEstimateFits against DeviceMemoryBytes, with one log line of the
// estimate; a model whose shape cannot be read is left to the run's set-up to report. Honours
// SPARGO_IGNORE_MEMORY_ESTIMATE.
absl::Status CheckRunMemory(const config::ExperimentConfig& config);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_MEMORY_ESTIMATE_H_
