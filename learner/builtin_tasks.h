// Built-in generated tasks of every domain (config.proto's BuiltinTasks), tiny enough for a small model on the
// byte tokenizer: short prompts in DeepSeek-V3.2's chat format (no tool list in the prompt: the warm-up's
// demonstrations teach the tools), short replies. Task i of a kind is a pure function of i; whether it is held out
// is a fixed hash of the problem it poses (e.g. the operands, not the names around them), independent of the
// run's seed, so held-out problems are never trained on. Every task has a demonstration (TaskPrompt::
// demonstration): for the agent kinds the tool call, the result the real environment gives (agent/calculator.h,
// the built-in town documents of agent/town_documents.h) and the final answer.
//   WORD_PROBLEMS   "Ann has 3 pens and gets 5 more. How many pens now?" -> "\boxed{8}"; reference "8".
//   PROGRAMS        "Write a Python program that reads n and prints n+7." -> a fenced program; reference: the
//                   code_tests JSON with two tests. In the AGENT domain the prompt adds "Test it first." (a whole
//                   episode must fit in 544 byte tokens) and the demonstration calls run_code on n=3 (the sandboxed
//                   code runner, agent/code_runner.h; run once per problem, then remembered) before it gives the
//                   program.
//   CALCULATOR      "What is 347*29?" -> calculator(expression="347*29"), then "10063"; reference: agent_answer
//                   JSON {"answer": "10063", "calls": [{"name": "calculator"}]}.
//   DOCUMENT_SEARCH "What is the population of Corawick?" -> search(query="Corawick"), then the number;
//                   reference {"answer": "...", "calls": [{"name": "search"}]}.
//   INSTRUCTIONS    "Write cat in capital letters." -> "CAT" (also: a word twice, a word spelt with dashes);
//                   `rubric`: the rule as judge criteria; reference: an RE2 pattern of the same rule.
//   RUBRIC_JUDGING  demonstrations for a judge: rewards/rubric.h's CompactPrompt (what rubric_judge sends with
//                   prompt_style COMPACT) for an INSTRUCTIONS problem and a candidate reply, answered "Score: 10"
//                   (the right reply, half the tasks) or "Score: 1" (another word in the same form, the word in
//                   another form, the bare word); the reference is that verdict. Split by the instruction problem with
//                   INSTRUCTIONS' hash, so with a heldout_fraction at least INSTRUCTIONS' no training
//                   demonstration holds a held-out problem (its wrong candidates come from the same side too).
// The held-out set is every held-out problem (fewer than n when the kind has fewer), in a fixed order.
#ifndef SPARGO_LEARNER_BUILTIN_TASKS_H_
#define SPARGO_LEARNER_BUILTIN_TASKS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/code_runner.h"
#include "agent/document_search.h"
#include "learner/task_source.h"

namespace spargo::learner {

class BuiltinTaskSource : public TaskSource {
 public:
  // `where` names the config entry in errors (e.g. "tasks[2].builtin"). Only the CHAT prompt format is offered.
  static absl::StatusOr<std::unique_ptr<BuiltinTaskSource>> Create(const config::BuiltinTasks& config, std::string name,
                                                                   config::Domain domain, config::PromptFormat format,
                                                                   const std::string& where);

  TaskPrompt Draw(uint64_t seed, uint64_t stream, uint64_t k) const override;
  absl::StatusOr<std::vector<TaskPrompt>> Heldout(int n) const override;
  std::set<config::Domain> domains() const override { return {domain_}; }

  // Task i (0 <= i < size()) and whether its problem is held out.
  TaskPrompt Make(uint64_t i) const;
  bool IsHeldout(uint64_t i) const;
  uint64_t size() const;

 private:
  BuiltinTaskSource(const config::BuiltinTasks& config, std::string name, config::Domain domain,
                    std::unique_ptr<agent::DocumentSearch> towns, std::unique_ptr<agent::CodeRunner> code_runner)
      : config_(config),
        name_(std::move(name)),
        domain_(domain),
        towns_(std::move(towns)),
        code_runner_(std::move(code_runner)) {}
  // The problem task i poses (what held-out splits are keyed on).
  std::vector<uint64_t> ProblemKey(uint64_t i) const;

  config::BuiltinTasks config_;
  std::string name_;
  config::Domain domain_;
  std::unique_ptr<agent::DocumentSearch> towns_;  // DOCUMENT_SEARCH: the environment that answers the demos
  std::unique_ptr<agent::CodeRunner> code_runner_;  // PROGRAMS in the AGENT domain: likewise
  mutable absl::Mutex code_mu_;
  mutable std::map<uint64_t, std::vector<DemoSegment>> code_demos_ ABSL_GUARDED_BY(code_mu_);  // by task index
};

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_BUILTIN_TASKS_H_
