// Flags and helpers of the commands that run a model checkpoint or a tokenizer (logits, generate, tokenize, rollout):
// --model DIR, --tokenizer FILE|byte, --device cpu|cuda, --dtype float32|bfloat16, and for the commands that run a
// checkpoint without an experiment config (logits, generate) --indexer_precision model_dtype|fp8 (what the config's
// model.indexer_precision sets for `spargo rollout`).
#ifndef SPARGO_CLI_MODEL_FLAGS_H_
#define SPARGO_CLI_MODEL_FLAGS_H_

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "model/dsv32_model.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, tokenizer);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(std::string, dtype);
ABSL_DECLARE_FLAG(std::string, indexer_precision);

namespace spargo::cli {

struct DeviceChoice {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
};
// --device and --dtype, checked (cuda only where libtorch sees a device); INVALID_ARGUMENT otherwise.
absl::StatusOr<DeviceChoice> DeviceFromFlags();

// --indexer_precision, checked; INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<model::IndexerPrecision> IndexerPrecisionFromFlags();

}  // namespace spargo::cli

#endif  // SPARGO_CLI_MODEL_FLAGS_H_
