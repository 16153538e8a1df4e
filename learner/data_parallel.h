// A data-parallel run: rank 0 runs the trainer; every other rank holds a replica of the policy and does what rank 0
// asks, in the same order (learner/collective.h's rule for collective calls):
//  - CommandChannel (rank 0): a command is a name posted on the group's store under a sequence number, then its
//    payload broadcast over the process group (so large payloads travel at the interconnect's speed).
//  - FollowRankZero (the other ranks): awaits the commands in sequence and runs each one's handler until rank 0
//    sends "shutdown" (then OK) or disappears (then an error). A handler error ends the loop: the group can no
//    longer stay in step, and rank 0's next collective call then fails with the group's timeout.
//  - NewDataParallelPolicyLearner (rank 0): the PolicyLearner the trainer talks to. Each call is sent to the other
//    ranks as a command, then run on rank 0's own replica (a local learner holding the collective);
//    LearnerCommandHandlers are the other ranks' side of the same calls. The trainer sees one learner whose steps
//    take every rank's share of the batch.
#ifndef SPARGO_LEARNER_DATA_PARALLEL_H_
#define SPARGO_LEARNER_DATA_PARALLEL_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "learner/collective.h"
#include "learner/policy_learner.h"

namespace spargo::learner {

class CommandChannel {
 public:
  explicit CommandChannel(std::shared_ptr<Collective> collective) : collective_(std::move(collective)) {}
  // Sends `command` with `payload` to every other rank (which run its handler with the payload).
  absl::Status Send(const std::string& command, std::string payload);
  Collective& collective() const { return *collective_; }

 private:
  std::shared_ptr<Collective> collective_;
  absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
};

using CommandHandler = std::function<absl::Status(const std::string& payload)>;
using CommandHandlers = std::map<std::string, CommandHandler>;

// Runs rank 0's commands on this rank until "shutdown".
absl::Status FollowRankZero(Collective& collective, const CommandHandlers& handlers);

// Rank 0's learner over `local` (a local learner built with the channel's collective). Destroying it sends
// "shutdown" to the other ranks.
std::unique_ptr<PolicyLearner> NewDataParallelPolicyLearner(std::unique_ptr<PolicyLearner> local,
                                                            std::shared_ptr<CommandChannel> channel);

// The other ranks' handlers of the learner's commands, running them on `local` (a local learner holding the
// collective). `local` must outlive the handlers.
CommandHandlers LearnerCommandHandlers(PolicyLearner* local);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_DATA_PARALLEL_H_
