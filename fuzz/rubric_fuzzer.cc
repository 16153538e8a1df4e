// Fuzz target: rubrics and the judge's verdicts (rewards/rubric.h). The input's first byte picks how many
// responses / criteria the verdict should cover (1..8); the rest is cut into a rubric and a judge output at
// "\n---\n". Invariants: no crash, no exception; parsed scores lie in [0, 1], one per response, one verdict per
// criterion; weights are finite; error messages are valid UTF-8 when the input is (they reach `spargo score`'s
// JSON details); the judge prompts built from a parsed rubric dump as JSON.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "rewards/rubric.h"

namespace {

void CheckMessage(const absl::Status& status, bool valid_input) {
  const std::string message(status.message());
  if (valid_input) {
    FUZZ_CHECK(spargo::fuzz::IsValidUtf8(message), message);
    spargo::fuzz::DumpsOrDie(nlohmann::json{{"detail", message}});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spargo::rewards;
  if (size == 0) return 0;
  const int n = 1 + data[0] % 8;
  const std::vector<std::string> f = spargo::fuzz::SplitFields(data + 1, size - 1, 2);
  const bool valid_input =
      spargo::fuzz::IsValidUtf8(absl::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  const std::string& rubric_text = f[0];
  const std::string& verdict = f[1];

  absl::StatusOr<Rubric> rubric = ParseRubric(rubric_text);
  if (!rubric.ok()) {
    CheckMessage(rubric.status(), valid_input);
  } else {
    FUZZ_CHECK(!rubric->criteria.empty(), "a parsed rubric has criteria");
    for (const RubricCriterion& c : rubric->criteria) FUZZ_CHECK(std::isfinite(c.weight), c.text);
    std::vector<int> order;
    for (int i = static_cast<int>(rubric->criteria.size()) - 1; i >= 0; --i) order.push_back(i);
    const std::vector<absl::string_view> responses = {verdict, "second response"};
    for (const JudgePrompt& p : {ImplicitPrompt("the prompt", *rubric, verdict),
                                 ListwisePrompt("the prompt", *rubric, responses),
                                 ExplicitPrompt("the prompt", *rubric, order, verdict)}) {
      if (valid_input) spargo::fuzz::DumpsOrDie(nlohmann::json{{"system", p.system}, {"user", p.user}});
    }
  }

  absl::StatusOr<double> implicit = ParseImplicitVerdict(verdict);
  if (implicit.ok()) {
    FUZZ_CHECK(*implicit >= 0 && *implicit <= 1, verdict);
  } else {
    CheckMessage(implicit.status(), valid_input);
  }
  absl::StatusOr<std::vector<double>> listwise = ParseListwiseVerdict(verdict, n);
  if (listwise.ok()) {
    FUZZ_CHECK(static_cast<int>(listwise->size()) == n, verdict);
    for (double s : *listwise) FUZZ_CHECK(s >= 0 && s <= 1, verdict);
  } else {
    CheckMessage(listwise.status(), valid_input);
  }
  absl::StatusOr<std::vector<bool>> explicit_verdict = ParseExplicitVerdict(verdict, n);
  if (explicit_verdict.ok()) {
    FUZZ_CHECK(static_cast<int>(explicit_verdict->size()) == n, verdict);
  } else {
    CheckMessage(explicit_verdict.status(), valid_input);
  }
  return 0;
}
