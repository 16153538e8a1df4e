#include "cli/model_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, model, "", "Checkpoint folder: config.json and model.safetensors (or an index with shards).");
ABSL_FLAG(std::string, tokenizer, "",
          "An HF tokenizer.json, \"byte\" for the tiny models' byte tokenizer, or \"chat-bytes\" (bytes plus the chat "
          "format's markup as whole tokens).");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "float32", "float32 or bfloat16.");
ABSL_FLAG(std::string, indexer_precision, "model_dtype",
          "model_dtype or fp8: the lightning indexer's precision (as model.indexer_precision in a config).");

namespace spargo::cli {

absl::StatusOr<DeviceChoice> DeviceFromFlags() {
  const std::string device = absl::GetFlag(FLAGS_device), dtype = absl::GetFlag(FLAGS_dtype);
  if (device != "cpu" && device != "cuda") return absl::InvalidArgumentError("--device must be cpu or cuda");
  if (dtype != "float32" && dtype != "bfloat16") return absl::InvalidArgumentError("--dtype must be float32 or bfloat16");
  if (device == "cuda" && !torch::cuda::is_available()) {
    return absl::InvalidArgumentError("--device cuda, but this libtorch sees no CUDA device");
  }
  return DeviceChoice{device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU),
                      dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32};
}

absl::StatusOr<model::IndexerPrecision> IndexerPrecisionFromFlags() {
  const std::string precision = absl::GetFlag(FLAGS_indexer_precision);
  if (precision == "model_dtype") return model::IndexerPrecision::kModelDtype;
  if (precision == "fp8") return model::IndexerPrecision::kFp8;
  return absl::InvalidArgumentError(
      absl::StrCat("--indexer-precision must be model_dtype or fp8, got '", precision, "'"));
}

}  // namespace spargo::cli
