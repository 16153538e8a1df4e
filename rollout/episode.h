// Agent episodes in the sampler: multi-turn generation in which an environment answers the model's tool calls.
// The sampler (rollout/group_sampler.h) decodes every sample as usual; when a sample with an Episodes driver
// ends a turn (samples EOS or a stop token), the driver reads the turn and either
//  - returns the tokens to insert: the tool results and the opening of the model's next turn in the chat
//    format; the engine feeds them to the model as one chunk (the cache records the model's choices for them, and
//    the sample's random stream is keyed by completion index, so it does not shift), marks them in
//    SampleRecord::env_token_mask
//    (context for the loss, never targets; log-prob 0), then samples again; or
//  - returns nothing: the episode is over (a final answer, a limit, a call that could not be parsed), with
//    SampleRecord::episode_end saying why.
// The driver records the trace (calls, results, errors) in the sample; the reward sees it (rollout/sample.h).
// Tokens inserted count towards max_new_tokens; an insertion that would not fit ends the sample as kLength.
// The engine runs EndOfTurn off its step, on a pool of threads (rollout/engine.h): for several samples of one call at
// once, so a driver must be thread-safe across samples (each sample's turns come one after another).
#ifndef SPARGO_ROLLOUT_EPISODE_H_
#define SPARGO_ROLLOUT_EPISODE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "rollout/sample.h"

namespace spargo::rollout {

class Episodes {
 public:
  virtual ~Episodes() = default;
  // `sample` holds the completion so far (its last token is the EOS or stop token that ended the turn);
  // `turn_start` is the index in sample->completion_ids where this turn began. Returns the tokens to insert, or
  // nullopt when the episode ends here.
  virtual std::optional<std::vector<int64_t>> EndOfTurn(SampleRecord* sample, int64_t turn_start) = 0;
};

// Makes the driver of one generation call (rollout clients and servers hold one when they run episodes).
using EpisodesFactory = std::function<std::unique_ptr<Episodes>()>;

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_EPISODE_H_
