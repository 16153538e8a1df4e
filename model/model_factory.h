// Builds the model a ModelConfig describes (the tiny transformer or DeepSeek-V3.2), validating it first; and
// copies weights between models.
#ifndef SPARGO_MODEL_MODEL_FACTORY_H_
#define SPARGO_MODEL_MODEL_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "model/causal_lm.h"
#include "model/dsv32_config.h"
#include "model/dsv32_model.h"
#include "spargo/config.pb.h"

namespace spargo::model {

// Fails with INVALID_ARGUMENT naming the field (e.g. "model.num_heads") when the config is inconsistent; refuses
// model.indexer_precision INDEXER_PRECISION_UNSPECIFIED, and FP8 for an architecture without an indexer.
absl::Status ValidateModelConfig(const config::ModelConfig& config);

// A DEEPSEEK_V32 ModelConfig's shapes as the model's config (no validation: ValidateModelConfig first).
Dsv32Config Dsv32ConfigFromModelConfig(const config::ModelConfig& config, int64_t vocab_size);

// The DEEPSEEK_V32 indexer precision a (validated) ModelConfig asks for (model.indexer_precision).
IndexerPrecision IndexerPrecisionOf(const config::ModelConfig& config);

// Initialises weights from libtorch's global generator (seed it first for reproducible runs), or, for DEEPSEEK_V32
// with pretrained_dir, loads them. A fresh DEEPSEEK_V32 model's config.json gets `bos_id` and `eos_id` (the
// tokenizer's; -1: none).
absl::StatusOr<std::shared_ptr<CausalLm>> CreateModel(const config::ModelConfig& config, int64_t vocab_size,
                                                      int64_t bos_id = -1, int64_t eos_id = -1);

// Copies every parameter and buffer of `from` into `to` (same architecture and shapes).
absl::Status CopyWeights(CausalLm& from, CausalLm& to);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_MODEL_FACTORY_H_
