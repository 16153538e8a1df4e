// The post-processor of an HF tokenizer.json, for one sequence: adds the special tokens a model expects around the
// ids of a text (Llama's BOS, BERT/RoBERTa's CLS and SEP) when the caller asks for special tokens. Supported types:
//   ByteLevel (ids unchanged), TemplateProcessing (the "single" template: SpecialToken items by their ids in
//   "special_tokens", Sequence "A" as the text's ids), RobertaProcessing and BertProcessing (cls + ids + sep),
//   Sequence of these (applied in order).
// Anything else is refused at load time, naming the type and JSON path.
#ifndef SPARGO_TOKENIZER_POST_PROCESSOR_H_
#define SPARGO_TOKENIZER_POST_PROCESSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace spargo::tokenizer {

class PostProcessor {
 public:
  static absl::StatusOr<PostProcessor> FromJson(const nlohmann::json& j, const std::string& where = "post_processor");

  std::vector<int32_t> AddSpecialTokens(const std::vector<int32_t>& ids) const;
  // The largest id the processor inserts (-1 when none), to check against the vocabulary.
  int32_t max_id() const;

 private:
  // One step's output: items of the template, an id each; kSequence stands for the text's ids.
  static constexpr int64_t kSequence = -1;
  static absl::Status AddStep(const nlohmann::json& j, const std::string& where, std::vector<std::vector<int64_t>>* steps);
  std::vector<std::vector<int64_t>> steps_;  // each: the single template, flattened
};

}  // namespace spargo::tokenizer

#endif  // SPARGO_TOKENIZER_POST_PROCESSOR_H_
