// The processes of a data-parallel run and what they do together (libtorch's c10d underneath):
//  - DistributedEnv: who this process is, from torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK,
//    MASTER_ADDR, MASTER_PORT) or from Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR and
//    MASTER_PORT still name rank 0's store, defaulting to 127.0.0.1:29500 on a one-node allocation);
//  - Collective: in-place sums and broadcasts of tensors over a c10d process group (NCCL for CUDA tensors, Gloo for
//    CPU ones), plus a control plane on the group's TCP store: rank 0 posts small messages under keys that the
//    other ranks await without a deadline (rank 0 may spend minutes on rollout between two learner steps; a rank 0
//    that exits closes the store, which ends every wait with an error).
// Every rank must make the same collective calls in the same order with tensors of the same shapes and dtypes on
// the collective's device; a mismatch hangs until the group's timeout and then fails.
#ifndef SPARGO_LEARNER_COLLECTIVE_H_
#define SPARGO_LEARNER_COLLECTIVE_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace spargo::learner {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;  // ranks on this machine: LOCAL_WORLD_SIZE or SLURM_NTASKS_PER_NODE, else world_size
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source;  // "torchrun" or "slurm" ("" for a single process)
};

// Intra-op threads for one of `env`'s ranks when the config leaves them to libtorch: the machine's cores shared by the
// ranks on it (each rank's libtorch would otherwise start one thread per core, and the ranks' thread pools would
// fight over the cores: a sampler on the CPU then runs several times slower), unless OMP_NUM_THREADS is set.
// 0: leave libtorch's default.
int RankThreads(const DistributedEnv& env);

// The environment's description of this process; world_size 1 (and no error) when none is given. Inconsistent
// values (RANK >= WORLD_SIZE, a port out of range, a number that does not parse) are INVALID_ARGUMENT naming the
// variable.
absl::StatusOr<DistributedEnv> DistributedEnvFromEnvironment();

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Where the tensors given to AllReduceSum and Broadcast must live.
  virtual torch::Device device() const = 0;
  // Each tensor (contiguous, on device()) becomes the sum of every rank's.
  virtual absl::Status AllReduceSum(const std::vector<torch::Tensor>& tensors) = 0;
  // Each tensor (contiguous, on device()) becomes rank `root`'s.
  virtual absl::Status Broadcast(const std::vector<torch::Tensor>& tensors, int root) = 0;
  // Control plane: rank 0 sets `key`; any rank waits for it and reads it.
  virtual absl::Status Post(const std::string& key, const std::string& value) = 0;
  virtual absl::StatusOr<std::string> Await(const std::string& key) = 0;
};

struct CollectiveOptions {
  torch::Device device = torch::kCPU;    // cuda:N -> NCCL, cpu -> Gloo
  absl::Duration timeout = absl::Minutes(30);  // of one collective call and of joining the group
};

// Joins (rank 0: creates) the group that `env` describes. UNIMPLEMENTED when this build has no backend for the
// device (Gloo needs its headers at build time, NCCL a CUDA libtorch).
absl::StatusOr<std::shared_ptr<Collective>> JoinCollective(const DistributedEnv& env,
                                                           const CollectiveOptions& options);

// `bytes` on every rank becomes rank `root`'s (two broadcasts: the length, then the bytes).
absl::Status BroadcastBytes(Collective& collective, std::string* bytes, int root);
// Every rank's `mine` reaches every rank: (*all)[r] is rank r's (one BroadcastBytes per rank).
absl::Status GatherBytes(Collective& collective, const std::string& mine, std::vector<std::string>* all);

// Rows of `rows` that rank `rank` of `world_size` takes: the rank-th of world_size contiguous, near-equal slices.
std::vector<int64_t> RankSlice(const std::vector<int64_t>& rows, int rank, int world_size);

// A rank's share of a step's micro-batches: the rank's slice of all their rows (in order), cut into micro-batches
// no larger than the largest given one. Every row goes to exactly one rank, and the ranks' row counts differ by at
// most one, whatever the micro-batch size (micro-batches of one row are not left to one rank each).
std::vector<std::vector<int64_t>> RankMicroBatches(const std::vector<std::vector<int64_t>>& micro_batches, int rank,
                                                   int world_size);

}  // namespace spargo::learner

#endif  // SPARGO_LEARNER_COLLECTIVE_H_
