#include "learner/arithmetic_task.h"

#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace spargo::learner {
namespace {

constexpr uint64_t kHeldoutSalt = 0x68656c646f7574ULL;
constexpr uint64_t kHeldoutStream = 0x6865766c;

}  // namespace

absl::StatusOr<std::unique_ptr<ArithmeticTask>> ArithmeticTask::Create(const config::ArithmeticTask& c,
                                                                        std::string name, config::Domain domain,
                                                                        config::PromptFormat format,
                                                                        const std::string& where) {
  if (c.min_operand() > c.max_operand()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": min_operand ", c.min_operand(), " > max_operand ",
                                                   c.max_operand()));
  }
  if (c.operators().empty() || c.operators().find_first_not_of("+-*") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".operators = \"", c.operators(), "\": use one or more of + - *"));
  }
  if (!(c.heldout_fraction() > 0 && c.heldout_fraction() < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".heldout_fraction = ", c.heldout_fraction(), ": must be in (0, 1)"));
  }
  return std::unique_ptr<ArithmeticTask>(new ArithmeticTask(c, std::move(name), domain, format));
}

ArithmeticTask::ArithmeticTask(const config::ArithmeticTask& c, std::string name, config::Domain domain,
                               config::PromptFormat format)
    : config_(c), name_(std::move(name)), domain_(domain), format_(format) {}

bool ArithmeticTask::IsHeldout(int64_t a, char op, int64_t b) const {
  CounterRng rng(kHeldoutSalt, {static_cast<uint64_t>(a), static_cast<uint64_t>(op), static_cast<uint64_t>(b)});
  return rng.Uniform() < config_.heldout_fraction();
}

TaskPrompt ArithmeticTask::Make(int64_t a, char op, int64_t b) const {
  int64_t answer = op == '+' ? a + b : op == '-' ? a - b : a * b;
  TaskPrompt p;
  p.prompt = absl::StrCat(a, std::string(1, op), b, "=");
  p.id = p.prompt;
  p.reference_answer = absl::StrCat(answer);
  p.domain = domain_;
  p.format = format_;
  p.source = name_;
  return p;
}

void ArithmeticTask::DrawAny(CounterRng* rng, int64_t* a, char* op, int64_t* b) const {
  const uint64_t span = static_cast<uint64_t>(config_.max_operand() - config_.min_operand()) + 1;
  *a = config_.min_operand() + static_cast<int64_t>(rng->Below(span));
  *b = config_.min_operand() + static_cast<int64_t>(rng->Below(span));
  *op = config_.operators()[rng->Below(config_.operators().size())];
}

TaskPrompt ArithmeticTask::Draw(uint64_t seed, uint64_t stream, uint64_t k) const {
  CounterRng rng(seed, {stream, k});
  int64_t a, b;
  char op;
  do {
    DrawAny(&rng, &a, &op, &b);
  } while (IsHeldout(a, op, b));  // terminates: heldout_fraction < 1
  return Make(a, op, b);
}

absl::StatusOr<std::vector<TaskPrompt>> ArithmeticTask::Heldout(int n) const {
  CounterRng rng(kHeldoutSalt, {kHeldoutStream});
  std::set<std::tuple<int64_t, char, int64_t>> seen;
  std::vector<TaskPrompt> out;
  const int64_t max_attempts = 1000 * static_cast<int64_t>(n) + 10000;
  for (int64_t attempt = 0; attempt < max_attempts && static_cast<int>(out.size()) < n; ++attempt) {
    int64_t a, b;
    char op;
    DrawAny(&rng, &a, &op, &b);
    if (!IsHeldout(a, op, b) || !seen.insert({a, op, b}).second) continue;
    out.push_back(Make(a, op, b));
  }
  if (static_cast<int>(out.size()) < n) {
    return absl::InvalidArgumentError(absl::StrCat("task '", name_, "': only ", out.size(),
                                                   " distinct held-out prompts found, ", n,
                                                   " asked; widen the operand range or raise heldout_fraction"));
  }
  return out;
}

}  // namespace spargo::learner
