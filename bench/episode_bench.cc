// Agent episodes per second on the CPU: the in-process sampler (rollout/group_sampler.h) running built-in agent
// tasks (learner/builtin_tasks.h: calculator and town-document questions) as real episodes (agent/tool_episodes.h:
// the model's DSML calls executed by the calculator and the built-in document search, the results fed back) with
// a trained checkpoint, e.g. the mixed run's (configs/cpu_mixed.txtpb). For each batch size (groups x group_size
// episodes decoded together) it prints episodes/s, tool calls per episode, mean tokens per episode (tool results
// included) and decoded tokens/s.
//   spargo_episode_bench --model RUN/checkpoints/grpo-000040 [--groups 1,4,8] [--group_size 8] [--rounds 3]
//                        [--temperature 1] [--threads 0]
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/agent_config.h"
#include "common/blas_kernels.h"
#include "learner/builtin_tasks.h"
#include "learner/experiment_config.h"
#include "learner/prompt_codec.h"
#include "model/model_factory.h"
#include "rollout/group_sampler.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "Checkpoint folder (config.json, model.safetensors) trained on the built-in tasks.");
ABSL_FLAG(std::string, groups, "1,4,8", "Comma-separated numbers of groups decoded together.");
ABSL_FLAG(int32_t, group_size, 8, "Episodes per group (one prompt each).");
ABSL_FLAG(int32_t, rounds, 3, "Measured calls per row.");
ABSL_FLAG(double, temperature, 1.0, "Sampling temperature (0: greedy).");
ABSL_FLAG(int32_t, threads, 0, "Torch threads (0: libtorch's default).");

namespace spargo {
namespace {

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_threads) > 0) torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  absl::StatusOr<config::ExperimentConfig> cfg = learner::LoadExperimentConfig("embedded:cpu_mixed", {});
  if (!cfg.ok() || absl::GetFlag(FLAGS_model).empty()) {
    std::cerr << (cfg.ok() ? "--model is required" : cfg.status().ToString()) << "\n";
    return 2;
  }
  config::ModelConfig mc = cfg->model();
  mc.set_pretrained_dir(absl::GetFlag(FLAGS_model));
  // The run's tokenizer (chat-bytes in the embedded config): the checkpoint was trained on its ids.
  auto tok = tokenizer::LoadTokenizer(mc.tokenizer().empty() ? "byte" : mc.tokenizer());
  auto model = tok.ok() ? model::CreateModel(mc, (*tok)->vocab_size()) : tok.status();
  auto tools = agent::ToolBoxFromConfig(cfg->rollout().agent(), "rollout.agent");
  if (!model.ok() || !tools.ok()) {
    std::cerr << (model.ok() ? tools.status() : model.status()) << "\n";
    return 1;
  }
  learner::SpecialIds ids{(*tok)->eos_id().value_or(-1), (*tok)->pad_id().value_or(0), (*tok)->bos_id().value_or(-1),
                          (*tok)->vocab_size()};
  learner::PromptCodec codec(*tok, ids);
  std::vector<std::unique_ptr<learner::BuiltinTaskSource>> sources;
  for (auto kind : {config::BuiltinTasks::CALCULATOR, config::BuiltinTasks::DOCUMENT_SEARCH}) {
    config::BuiltinTasks b;
    b.set_kind(kind);
    sources.push_back(*learner::BuiltinTaskSource::Create(b, "bench", config::AGENT, config::CHAT, "bench"));
  }
  std::cout << "| groups x G | episodes/s | tool calls/episode | tokens/episode | decoded tokens/s |\n"
            << "| --- | --- | --- | --- | --- |\n";
  uint64_t counter = 0;
  for (absl::string_view g : absl::StrSplit(absl::GetFlag(FLAGS_groups), ',')) {
    int groups = 0;
    if (!absl::SimpleAtoi(g, &groups) || groups < 1) {
      std::cerr << "--groups: bad entry '" << g << "'\n";
      return 2;
    }
    int64_t episodes = 0, calls = 0, tokens = 0;
    double seconds = 0;
    for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
      std::vector<rollout::GroupRequest> requests;
      for (int i = 0; i < groups; ++i, ++counter) {
        learner::TaskPrompt p = sources[counter % 2]->Draw(1, 99, counter);
        rollout::GroupRequest r;
        r.prompt_id = p.id;
        r.sample_key = counter;
        r.domain = config::AGENT;
        r.prompt_ids = *codec.EncodePrompt(p);
        requests.push_back(std::move(r));
      }
      agent::ToolEpisodes episodes_driver(tools->get(), tok->get(), agent::LimitsFromConfig(cfg->rollout().agent()));
      rollout::SamplingOptions o;
      o.group_size = absl::GetFlag(FLAGS_group_size);
      o.max_new_tokens = cfg->rollout().max_new_tokens();
      o.temperature = absl::GetFlag(FLAGS_temperature);
      o.eos_id = ids.eos;
      o.vocab_limit = ids.vocab_limit;
      o.seed = 5;
      o.step = counter;
      o.episodes = &episodes_driver;
      const absl::Time start = absl::Now();
      absl::StatusOr<std::vector<rollout::SampleGroup>> out = rollout::SampleGroups(**model, requests, o);
      seconds += absl::ToDoubleSeconds(absl::Now() - start);
      if (!out.ok()) {
        std::cerr << out.status() << "\n";
        return 1;
      }
      for (const auto& group : *out) {
        for (const rollout::SampleRecord& s : group) {
          ++episodes;
          calls += static_cast<int64_t>(s.tool_trace.size());
          tokens += static_cast<int64_t>(s.completion_ids.size());
        }
      }
    }
    std::cout << absl::StrFormat("| %d x %d | %.2f | %.2f | %.0f | %.0f |\n", groups, absl::GetFlag(FLAGS_group_size),
                                 episodes / seconds, static_cast<double>(calls) / episodes,
                                 static_cast<double>(tokens) / episodes, tokens / seconds);
  }
  return 0;
}

}  // namespace
}  // namespace spargo

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  return spargo::Main(argc, argv);
}
