// The rollout service's Generate request checks (rollout/generate_request_check.h) at each limit's boundary: the
// value at the limit is accepted, one past it is refused INVALID_ARGUMENT naming the group and field; refusals
// never quote the client's strings.
#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rollout/generate_request_check.h"

namespace spargo::rollout {
namespace {
using ::testing::HasSubstr;

// A server of 300 ids and 64 positions taking at most 3 groups of 4 samples and 16 new tokens.
GenerateLimits Limits() {
  GenerateLimits l;
  l.max_groups = 3;
  l.max_group_size = 4;
  l.max_new_tokens = 16;
  l.vocab_size = 300;
  l.max_seq_len = 64;
  return l;
}

// Two groups of 3-token prompts, 4 samples each, 16 new tokens.
GenerateRequest TwoGroups() {
  GenerateRequest r;
  for (int g = 0; g < 2; ++g) {
    PromptGroupRequest* group = r.add_groups();
    group->set_prompt_id(absl::StrCat("p", g));
    group->set_group_size(4);
    for (int id : {5, 6, 7}) group->add_prompt_token_ids(id + g);
  }
  SamplingParams* s = r.mutable_sampling();
  s->set_temperature(1.0);
  s->set_top_p(1.0);
  s->set_max_new_tokens(16);
  return r;
}

struct Case {
  const char* what;
  std::function<void(GenerateRequest*)> change;
  const char* refusal;  // nullptr: accepted
};

void Expect(const Case& c, const GenerateLimits& limits = Limits()) {
  GenerateRequest r = TwoGroups();
  c.change(&r);
  const absl::Status s = CheckGenerateRequest(r, limits);
  if (c.refusal == nullptr) {
    EXPECT_TRUE(s.ok()) << c.what << ": " << s;
    return;
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(c.refusal)) << c.what;
}

TEST(GenerateRequestCheck, AcceptsAWellFormedRequest) { EXPECT_TRUE(CheckGenerateRequest(TwoGroups(), Limits()).ok()); }

TEST(GenerateRequestCheck, GroupCountAndSizeAtTheirBounds) {
  const Case cases[] = {
      {"no groups", [](GenerateRequest* r) { r->clear_groups(); }, "groups: 0 groups; 1 to 3 accepted"},
      {"3 groups", [](GenerateRequest* r) { *r->add_groups() = r->groups(0); }, nullptr},
      {"4 groups",
       [](GenerateRequest* r) {
         *r->add_groups() = r->groups(0);
         *r->add_groups() = r->groups(0);
       },
       "groups: 4 groups; 1 to 3 accepted"},
      {"group_size 0", [](GenerateRequest* r) { r->mutable_groups(1)->set_group_size(0); },
       "groups[1].group_size = 0: must be in 1..4"},
      {"group_size 1", [](GenerateRequest* r) { r->mutable_groups(1)->set_group_size(1); }, nullptr},
      {"group_size 5", [](GenerateRequest* r) { r->mutable_groups(0)->set_group_size(5); },
       "groups[0].group_size = 5: must be in 1..4"},
  };
  for (const Case& c : cases) Expect(c);
}

TEST(GenerateRequestCheck, SamplingParametersAtTheirBounds) {
  auto sampling = [](std::function<void(SamplingParams*)> f) {
    return [f](GenerateRequest* r) { f(r->mutable_sampling()); };
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Case cases[] = {
      {"max_new_tokens 0", sampling([](SamplingParams* s) { s->set_max_new_tokens(0); }),
       "sampling.max_new_tokens = 0: must be in 1..16"},
      {"max_new_tokens 1", sampling([](SamplingParams* s) { s->set_max_new_tokens(1); }), nullptr},
      {"max_new_tokens 17", sampling([](SamplingParams* s) { s->set_max_new_tokens(17); }),
       "sampling.max_new_tokens = 17"},
      {"greedy", sampling([](SamplingParams* s) { s->set_temperature(0); }), nullptr},
      {"temperature 1e-3", sampling([](SamplingParams* s) { s->set_temperature(1e-3); }), nullptr},
      {"temperature below 1e-3", sampling([](SamplingParams* s) { s->set_temperature(9.99e-4); }),
       "sampling.temperature = 0.000999"},
      {"denormal temperature", sampling([](SamplingParams* s) { s->set_temperature(5e-324); }),
       "sampling.temperature = 4.94066e-324"},
      {"negative temperature", sampling([](SamplingParams* s) { s->set_temperature(-1); }), "sampling.temperature"},
      {"temperature 100", sampling([](SamplingParams* s) { s->set_temperature(100); }), nullptr},
      {"temperature above 100", sampling([](SamplingParams* s) { s->set_temperature(100.5); }),
       "sampling.temperature = 100.5"},
      {"NaN temperature", sampling([nan](SamplingParams* s) { s->set_temperature(nan); }), "sampling.temperature"},
      {"top_p 0", sampling([](SamplingParams* s) { s->set_top_p(0); }), nullptr},
      {"top_p above 1", sampling([](SamplingParams* s) { s->set_top_p(1.0000001); }), "sampling.top_p"},
      {"NaN top_p", sampling([nan](SamplingParams* s) { s->set_top_p(nan); }), "sampling.top_p"},
      {"top_k -1", sampling([](SamplingParams* s) { s->set_top_k(-1); }), "sampling.top_k = -1: must be >= 0"},
      {"vocab_limit 300", sampling([](SamplingParams* s) { s->set_vocab_limit(300); }), nullptr},
      {"vocab_limit 301", sampling([](SamplingParams* s) { s->set_vocab_limit(301); }),
       "sampling.vocab_limit = 301: must be in 0..300"},
      {"vocab_limit -1", sampling([](SamplingParams* s) { s->set_vocab_limit(-1); }), "sampling.vocab_limit = -1"},
      {"stop id 299", sampling([](SamplingParams* s) { s->add_stop_token_ids(299); }), nullptr},
      {"stop id 300",
       sampling([](SamplingParams* s) {
         s->add_stop_token_ids(2);
         s->add_stop_token_ids(300);
       }),
       "sampling.stop_token_ids[1] = 300: not in [0, 300)"},
      {"stop id -1", sampling([](SamplingParams* s) { s->add_stop_token_ids(-1); }), "sampling.stop_token_ids[0] = -1"},
  };
  for (const Case& c : cases) Expect(c);
}

TEST(GenerateRequestCheck, PromptsWithinTheVocabularyAndThePositions) {
  const Case cases[] = {
      {"empty prompt", [](GenerateRequest* r) { r->mutable_groups(0)->clear_prompt_token_ids(); },
       "groups[0].prompt_token_ids: empty"},
      {"id 299", [](GenerateRequest* r) { r->mutable_groups(1)->set_prompt_token_ids(2, 299); }, nullptr},
      {"id 300", [](GenerateRequest* r) { r->mutable_groups(1)->set_prompt_token_ids(2, 300); },
       "groups[1].prompt_token_ids[2] = 300: not in [0, 300)"},
      {"id -1", [](GenerateRequest* r) { r->mutable_groups(1)->set_prompt_token_ids(0, -1); },
       "groups[1].prompt_token_ids[0] = -1"},
      // 48 prompt tokens + 16 new = the model's 64 positions; one more does not fit.
      {"48 + 16 tokens",
       [](GenerateRequest* r) {
         while (r->groups(1).prompt_token_ids_size() < 48) r->mutable_groups(1)->add_prompt_token_ids(1);
       },
       nullptr},
      {"49 + 16 tokens",
       [](GenerateRequest* r) {
         while (r->groups(1).prompt_token_ids_size() < 49) r->mutable_groups(1)->add_prompt_token_ids(1);
       },
       "groups[1].prompt_token_ids: 49 tokens plus 16 new exceed the model's 64 positions"},
  };
  for (const Case& c : cases) Expect(c);
}

TEST(GenerateRequestCheck, RequestSizeAtTheLimit) {
  const GenerateRequest r = TwoGroups();
  const int64_t bytes = static_cast<int64_t>(r.ByteSizeLong());
  GenerateLimits limits = Limits();
  limits.max_request_bytes = bytes;
  EXPECT_TRUE(CheckGenerateRequest(r, limits).ok());
  limits.max_request_bytes = bytes - 1;
  const absl::Status s = CheckGenerateRequest(r, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("request of ", bytes, " bytes exceeds the limit of ", bytes - 1)));
}

TEST(GenerateRequestCheck, RefusalsDoNotQuoteTheClientsStrings) {
  // Issue 16: a 20 KB id echoed into an error once turned INVALID_ARGUMENT into RESOURCE_EXHAUSTED.
  GenerateRequest r = TwoGroups();
  r.mutable_groups(1)->set_prompt_id(std::string(20000, 'x'));
  r.mutable_groups(1)->set_tools_json(std::string(20000, '['));
  r.mutable_groups(1)->set_group_size(9);
  const absl::Status s = CheckGenerateRequest(r, Limits());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 100u) << s;
}

}  // namespace
}  // namespace spargo::rollout
