#include "rollout/group_sampler.h"

#include <algorithm>

#include "common/status_macros.h"
#include "rollout/engine.h"

namespace spargo::rollout {

absl::StatusOr<std::vector<SampleGroup>> SampleGroups(model::CausalLm& model, const std::vector<GroupRequest>& prompts,
                                                      const SamplingOptions& options) {
  EngineOptions engine_options;
  engine_options.num_blocks =
      std::max<int64_t>(1, GenerationEngine::WorstCaseBlocks(prompts, options, engine_options.block_size));
  // Every sample of the call in one decode batch, as the call's pool holds them all.
  engine_options.max_rows = std::max<int64_t>(
      engine_options.max_rows, static_cast<int64_t>(prompts.size()) * std::max(options.group_size, 1));
  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<GenerationEngine> engine,
                          GenerationEngine::Create(&model, engine_options));
  return engine->Generate(prompts, options);
}

}  // namespace spargo::rollout
