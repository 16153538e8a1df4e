// Fuzz target: experiment configs in protobuf text format (common/text_proto.h). Input: the config text, then
// "\n---\n" and one `path.to.field=value` override per line. Invariants: no crash, no exception; every error
// names its source; a failed override leaves the message unchanged; a parsed config printed with ToTextProto
// parses back to an equal message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/text_proto.h"
#include "fuzz/fuzz_util.h"
#include "spargo/config.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using spargo::config::ExperimentConfig;
  const std::vector<std::string> f = spargo::fuzz::SplitFields(data, size, 2);
  ExperimentConfig config;
  const absl::Status parsed = spargo::ParseTextProto(f[0], "fuzz.txtpb", &config);
  if (!parsed.ok()) {
    FUZZ_CHECK(absl::StrContains(parsed.message(), "fuzz.txtpb"), parsed.message());
    return 0;
  }
  for (absl::string_view line : absl::StrSplit(f[1], '\n', absl::SkipEmpty())) {
    const ExperimentConfig before = config;
    const absl::Status applied = spargo::ApplyFieldOverride(line, &config);
    // Printed forms, not MessageDifferencer: a NaN field is not equal to itself.
    if (!applied.ok()) FUZZ_CHECK(spargo::ToTextProto(before) == spargo::ToTextProto(config), applied.message());
  }
  const std::string printed = spargo::ToTextProto(config);
  ExperimentConfig again;
  const absl::Status reparsed = spargo::ParseTextProto(printed, "printed", &again);
  FUZZ_CHECK(reparsed.ok(), reparsed.ToString() + "\n" + printed);
  FUZZ_CHECK(spargo::ToTextProto(again) == printed, printed);
  return 0;
}
