// Fuzz target: an experiment config parsed from text format (common/text_proto.h) and validated
// (learner/experiment_config.h), as `spargo train --config` does before anything runs. Invariants: no crash,
// no exception, no allocation the size of a typo (validation runs before anything is allocated from the config);
// refusals are short.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/text_proto.h"
#include "fuzz/fuzz_util.h"
#include "learner/experiment_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spargo::config::ExperimentConfig config;
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (!spargo::ParseTextProto(text, "fuzz.txtpb", &config).ok()) return 0;
  const absl::Status valid = spargo::learner::ValidateExperimentConfig(config);
  if (!valid.ok()) FUZZ_CHECK(valid.message().size() <= 4096, valid.message());
  return 0;
}
