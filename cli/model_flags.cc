#include "cli/model_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, model, "", "Checkpoint folder: config.json and model.safetensors (or an index with shards).");
ABSL_FLAG(std::string, tokenizer, "", "An HF tokenizer.json, or \"byte\" for the tiny models' byte tokenizer.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "float32", "float32 or bfloat16.");

namespace spargo::cli {

absl::StatusOr<TextTokenizer> TextTokenizer::Load(const std::string& spec) {
  TextTokenizer t;
  if (spec == "byte") return t;
  absl::StatusOr<tokenizer::BpeTokenizer> bpe = tokenizer::BpeTokenizer::FromFile(spec);
  if (!bpe.ok()) return bpe.status();
  t.bpe_ = *std::move(bpe);
  return t;
}

std::vector<int64_t> TextTokenizer::Encode(const std::string& text, bool add_bos) const {
  if (is_byte()) return byte_.Encode(text, add_bos);
  std::vector<int32_t> ids = bpe_->Encode(text);
  return {ids.begin(), ids.end()};
}

int64_t TextTokenizer::vocab_size() const { return is_byte() ? model::ByteTokenizer::kVocabSize : bpe_->vocab_size(); }

absl::StatusOr<std::string> TextTokenizer::Decode(const std::vector<int64_t>& ids) const {
  const int64_t vocab = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::OutOfRangeError(absl::StrCat("ids[", i, "] = ", ids[i], " is not a token of this tokenizer"));
    }
  }
  if (is_byte()) return byte_.Decode(ids);
  return bpe_->Decode(std::vector<int32_t>(ids.begin(), ids.end()));
}

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

}  // namespace spargo::cli
