// Flags and helpers of the commands that run a model checkpoint or a tokenizer (logits, generate, tokenize):
// --model DIR, --tokenizer FILE|byte, --device cpu|cuda, --dtype float32|bfloat16.
#ifndef SPARGO_CLI_MODEL_FLAGS_H_
#define SPARGO_CLI_MODEL_FLAGS_H_

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "model/byte_tokenizer.h"
#include "tokenizer/bpe_tokenizer.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, tokenizer);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(std::string, dtype);

namespace spargo::cli {

// An HF tokenizer.json (byte-level BPE) or the tiny models' byte tokenizer ("byte").
class TextTokenizer {
 public:
  static absl::StatusOr<TextTokenizer> Load(const std::string& spec);
  bool is_byte() const { return !bpe_.has_value(); }
  int64_t vocab_size() const;
  // The byte tokenizer adds BOS when `add_bos`; BPE encodes the text as it is (special tokens included).
  std::vector<int64_t> Encode(const std::string& text, bool add_bos) const;
  // OUT_OF_RANGE for an id the tokenizer does not have.
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const;

 private:
  std::optional<tokenizer::BpeTokenizer> bpe_;
  model::ByteTokenizer byte_;
};

struct DeviceChoice {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
};
// --device and --dtype, checked (cuda only where libtorch sees a device); INVALID_ARGUMENT otherwise.
absl::StatusOr<DeviceChoice> DeviceFromFlags();

}  // namespace spargo::cli

#endif  // SPARGO_CLI_MODEL_FLAGS_H_
