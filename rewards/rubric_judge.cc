#include "rewards/rubric_judge.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "rewards/rollout_judge.h"

namespace spargo::rewards {
namespace {

// The part of a completion the judge sees: what follows the reasoning.
absl::string_view AnswerPart(absl::string_view text) {
  const size_t end = text.rfind("</think>");
  return end == absl::string_view::npos ? text : text.substr(end + 8);
}

int CountAlnum(absl::string_view s) {
  int n = 0;
  for (unsigned char c : s) n += absl::ascii_isalnum(c) || c >= 0x80;  // non-ASCII letters count too
  return n;
}

// One unit of judge work: a call covering `samples` (one, or several listwise) in judgement `judgement`.
struct Task {
  int judgement;
  std::vector<int> samples;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RubricJudgeReward>> RubricJudgeReward::Create(const config::RubricJudgeReward& c) {
  auto bad = [](absl::string_view field, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("rubric_judge.", field, ": ", rule));
  };
  if (c.judgements() < 1 || c.judgements() > 64) return bad("judgements", "must be in 1..64");
  if (!(c.temperature() >= 0 && c.temperature() <= 2)) return bad("temperature", "must be in [0, 2]");
  if (c.max_tokens() < 1) return bad("max_tokens", "must be >= 1");
  if (c.responses_per_call() < 1 || c.responses_per_call() > 64) return bad("responses_per_call", "must be in 1..64");
  if (c.mode() == config::RubricJudgeReward::EXPLICIT && c.responses_per_call() != 1) {
    return bad("responses_per_call", "must be 1 in EXPLICIT mode");
  }
  if (c.mode() == config::RubricJudgeReward::MODE_UNSPECIFIED) return bad("mode", "IMPLICIT or EXPLICIT");
  if (c.prompt_style() == config::RubricJudgeReward::COMPACT) {
    if (c.mode() != config::RubricJudgeReward::IMPLICIT || c.responses_per_call() != 1) {
      return bad("prompt_style", "COMPACT needs mode IMPLICIT and responses_per_call 1");
    }
    if (c.compact_reply_chars() < 1) return bad("compact_reply_chars", "must be >= 1");
  }
  if (c.max_concurrency() < 1) return bad("max_concurrency", "must be >= 1");
  if (!(c.timeout_seconds() > 0)) return bad("timeout_seconds", "must be > 0");
  if (c.retries() < 0 || c.retries() > 10) return bad("retries", "must be in 0..10");
  std::unique_ptr<JudgeBackend> backend;
  switch (c.backend_case()) {
    case config::RubricJudgeReward::kOpenai: {
      auto b = OpenAiJudgeBackend::Create(c.openai());
      if (!b.ok()) return absl::InvalidArgumentError(absl::StrCat("rubric_judge.", b.status().message()));
      backend = std::move(b).value();
      break;
    }
    case config::RubricJudgeReward::kRollout: {
      auto b = RolloutJudgeBackend::Create(c.rollout());
      if (!b.ok()) return absl::InvalidArgumentError(absl::StrCat("rubric_judge.", b.status().message()));
      backend = std::move(b).value();
      break;
    }
    case config::RubricJudgeReward::BACKEND_NOT_SET:
      return bad("backend", "not set (e.g. openai { base_url: \"http://127.0.0.1:8000/v1\" model: \"judge\" })");
  }
  return std::make_unique<RubricJudgeReward>(c, std::move(backend));
}

absl::StatusOr<std::string> RubricJudgeReward::CallWithRetries(
    const JudgeRequest& request, absl::Time group_deadline,
    const std::function<absl::Status(const std::string&)>& accept) const {
  absl::Status last;
  for (int attempt = 0; attempt <= config_.retries(); ++attempt) {
    if (attempt > 0) {  // backoff 0.1 s, 0.2 s, 0.4 s ... within the deadline
      const absl::Duration wait = absl::Milliseconds(100) * (1 << std::min(attempt - 1, 6));
      if (absl::Now() + wait >= group_deadline) break;
      absl::SleepFor(wait);
    }
    const absl::Time deadline = std::min(group_deadline, absl::Now() + absl::Seconds(config_.timeout_seconds()));
    if (deadline <= absl::Now()) {
      last = absl::DeadlineExceededError("judge: the caller's deadline has passed");
      break;
    }
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](const RubricJudgeReward* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
            return r->in_flight_ < r->config_.max_concurrency();
          },
          this));
      ++in_flight_;
    }
    JudgeRequest attempt_request = request;
    attempt_request.seed = request.seed * 31 + attempt;
    absl::StatusOr<std::string> out = backend_->Complete(attempt_request, deadline);
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
    }
    if (out.ok()) {
      last = accept(*out);
      if (last.ok()) return out;
      continue;  // unparsable: a fresh sample may parse
    }
    last = out.status();
    if (absl::IsInvalidArgument(last)) break;  // a 4xx: the same request will fail again
  }
  return last;
}

std::vector<SampleScore> RubricJudgeReward::ScoreGroup(const ScoreGroupInput& group) const {
  const int n = static_cast<int>(group.completions.size());
  std::vector<SampleScore> out(n);
  absl::StatusOr<Rubric> rubric = ParseRubric(group.rubric);
  const bool explicit_mode = config_.mode() == config::RubricJudgeReward::EXPLICIT;
  if (rubric.ok() && explicit_mode && rubric->free_text) {
    rubric = absl::InvalidArgumentError("EXPLICIT mode needs a JSON list of criteria, not free text");
  }
  if (!rubric.ok()) {
    for (SampleScore& s : out) {
      s.status = ScoreStatus::kError;
      s.detail = absl::StrCat("rubric: ", rubric.status().message());
    }
    return out;
  }
  // Master-key guard, and the samples that need the judge.
  std::vector<int> judged;
  for (int i = 0; i < n; ++i) {
    if (CountAlnum(AnswerPart(group.completions[i].text)) < config_.min_response_chars()) {
      out[i].score = 0;
      out[i].detail = "response too short to judge";
    } else {
      judged.push_back(i);
    }
  }
  // Tasks: per judgement, each response alone or shuffled chunks of responses_per_call.
  const uint64_t base_seed = std::hash<std::string>()(group.prompt + '\x1f' + group.rubric);
  std::vector<Task> tasks;
  for (int j = 0; j < config_.judgements(); ++j) {
    std::vector<int> order = judged;
    if (config_.responses_per_call() > 1) {
      std::mt19937_64 rng(base_seed + j);
      std::shuffle(order.begin(), order.end(), rng);
    }
    for (size_t at = 0; at < order.size(); at += config_.responses_per_call()) {
      const size_t end = std::min(order.size(), at + config_.responses_per_call());
      tasks.push_back({j, std::vector<int>(order.begin() + at, order.begin() + end)});
    }
  }
  // Results: per sample, the scores of the judgements that parsed and the last failure.
  std::vector<std::vector<double>> scores(n);
  std::vector<absl::Status> failures(n);
  absl::Mutex results_mu;
  auto run = [&](const Task& task) {
    JudgeRequest request;
    request.temperature = config_.temperature();
    request.max_tokens = config_.max_tokens();
    request.seed = base_seed + static_cast<uint64_t>(task.judgement) * 1000003 + task.samples[0];
    std::vector<double> verdict;
    std::function<absl::Status(const std::string&)> accept;
    if (explicit_mode) {
      std::vector<int> order(rubric->criteria.size());
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 rng(request.seed);
      std::shuffle(order.begin(), order.end(), rng);
      request.prompt = ExplicitPrompt(group.prompt, *rubric, order, AnswerPart(group.completions[task.samples[0]].text));
      accept = [&, order](const std::string& text) {
        absl::StatusOr<std::vector<bool>> v = ParseExplicitVerdict(text, static_cast<int>(order.size()));
        if (!v.ok()) return v.status();
        double got = 0, total = 0;
        for (size_t label = 0; label < order.size(); ++label) {
          const double w = rubric->criteria[order[label]].weight;
          total += w;
          got += (*v)[label] ? w : 0;
        }
        verdict = {got / total};
        return absl::OkStatus();
      };
    } else if (task.samples.size() == 1 && config_.responses_per_call() == 1) {
      const absl::string_view answer = AnswerPart(group.completions[task.samples[0]].text);
      request.prompt = config_.prompt_style() == config::RubricJudgeReward::COMPACT
                           ? CompactPrompt(group.prompt, *rubric, answer, config_.compact_reply_chars())
                           : ImplicitPrompt(group.prompt, *rubric, answer);
      accept = [&](const std::string& text) {
        absl::StatusOr<double> v = ParseImplicitVerdict(text);
        if (!v.ok()) return v.status();
        verdict = {*v};
        return absl::OkStatus();
      };
    } else {
      std::vector<absl::string_view> responses;
      for (int i : task.samples) responses.push_back(AnswerPart(group.completions[i].text));
      request.prompt = ListwisePrompt(group.prompt, *rubric, responses);
      // `accept` runs after this block: it keeps the count, not a reference to `responses`.
      accept = [&verdict, count = static_cast<int>(responses.size())](const std::string& text) {
        absl::StatusOr<std::vector<double>> v = ParseListwiseVerdict(text, count);
        if (!v.ok()) return v.status();
        verdict = *v;
        return absl::OkStatus();
      };
    }
    absl::StatusOr<std::string> result = CallWithRetries(request, group.deadline, accept);
    absl::MutexLock lock(&results_mu);
    for (size_t k = 0; k < task.samples.size(); ++k) {
      if (result.ok()) {
        scores[task.samples[k]].push_back(verdict[k]);
      } else {
        failures[task.samples[k]] = result.status();
      }
    }
  };
  // Fan out: the shared in-flight cap bounds calls; threads only wait on it.
  std::atomic<size_t> next{0};
  const int workers = std::min<int>(static_cast<int>(tasks.size()), config_.max_concurrency());
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      for (size_t t = next++; t < tasks.size(); t = next++) run(tasks[t]);
    });
  }
  for (std::thread& t : threads) t.join();

  for (int i : judged) {
    SampleScore& s = out[i];
    if (!scores[i].empty()) {
      s.score = std::accumulate(scores[i].begin(), scores[i].end(), 0.0) / scores[i].size();
      if (static_cast<int>(scores[i].size()) < config_.judgements()) {
        s.detail = absl::StrCat(scores[i].size(), " of ", config_.judgements(), " judgements usable; last failure: ",
                                failures[i].message());
      }
      continue;
    }
    s.status = absl::IsDeadlineExceeded(failures[i]) ? ScoreStatus::kTimeout : ScoreStatus::kError;
    s.detail = std::string(failures[i].message());
  }
  return out;
}

}  // namespace spargo::rewards
