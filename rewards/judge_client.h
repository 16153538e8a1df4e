// Judge backends for the generative rubric reward: one chat completion per call.
// OpenAiJudgeBackend speaks the OpenAI-compatible POST {base_url}/chat/completions (vLLM, SGLang, hosted APIs)
// through cpp-httplib, http or https. Every call has a deadline; errors are typed so that callers can retry:
//   DEADLINE_EXCEEDED  no answer before the deadline
//   UNAVAILABLE        connection refused or reset, HTTP 429 or 5xx (worth retrying)
//   INVALID_ARGUMENT   other HTTP errors (4xx: a bad request or key; retrying will not help)
//   DATA_LOSS          a 200 answer that is not the expected JSON (choices[0].message.content as a string)
#ifndef SPARGO_REWARDS_JUDGE_CLIENT_H_
#define SPARGO_REWARDS_JUDGE_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rewards/rubric.h"
#include "spargo/config.pb.h"

namespace spargo::rewards {

struct JudgeRequest {
  JudgePrompt prompt;
  double temperature = 0.5;
  int max_tokens = 1024;
  uint64_t seed = 0;
};

class JudgeBackend {
 public:
  virtual ~JudgeBackend() = default;
  // Thread-safe.
  virtual absl::StatusOr<std::string> Complete(const JudgeRequest& request, absl::Time deadline) const = 0;
};

class OpenAiJudgeBackend : public JudgeBackend {
 public:
  // INVALID_ARGUMENT for a base_url that is not http(s)://host[:port][/path] or an empty model. The API key is
  // read from the environment variable named by api_key_env (unset or empty: no Authorization header).
  static absl::StatusOr<std::unique_ptr<OpenAiJudgeBackend>> Create(const config::OpenAiJudge& config);
  absl::StatusOr<std::string> Complete(const JudgeRequest& request, absl::Time deadline) const override;

 private:
  OpenAiJudgeBackend() = default;
  std::string scheme_host_port_;
  std::string path_;  // .../chat/completions
  std::string model_;
  std::string api_key_;
};

}  // namespace spargo::rewards

#endif  // SPARGO_REWARDS_JUDGE_CLIENT_H_
