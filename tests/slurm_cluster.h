// A real one-node Slurm cluster for tests: Debian's munged, slurmctld and slurmd, started in the foreground as
// children of the test with every file (munge key and socket, slurm.conf, state, spool, logs) in a fresh temporary
// folder, on free ports; nothing of the machine's own Slurm or munge configuration is read or changed (no systemd).
// SLURM_CONF points the test process (and so the Slurm commands it runs) at the cluster while it exists.
// Guarantees: the destructor cancels every job, stops the daemons (SIGTERM, then SIGKILL) and removes the folder,
// also when the test failed half-way. Start() fails (with the reason, for GTEST_SKIP) only when the daemons cannot
// run here: not root, a program missing, or the node not idle within the start limit.
#ifndef SPARGO_TESTS_SLURM_CLUSTER_H_
#define SPARGO_TESTS_SLURM_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/test_util.h"

namespace spargo::testing {

class SlurmCluster {
 public:
  // `cpus`: the node's CPUs as Slurm sees them.
  static absl::StatusOr<std::unique_ptr<SlurmCluster>> Start(int cpus);
  ~SlurmCluster();
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;

  // The cluster's temporary folder (removed by the destructor).
  const std::string& dir() const { return dir_; }
  // Runs a Slurm command (`sbatch`, `squeue`, ...) against this cluster.
  ProcessResult Run(const std::string& command, const std::vector<std::string>& args) const;
  // The daemons' logs, for failure messages.
  std::string Logs() const;

 private:
  SlurmCluster() = default;
  absl::Status Launch(int cpus);
  void Stop();

  std::string dir_;
  std::string saved_slurm_conf_;
  bool had_slurm_conf_ = false;
  std::vector<int> daemons_;  // munged, slurmctld, slurmd: stopped in reverse order
};

}  // namespace spargo::testing

#endif  // SPARGO_TESTS_SLURM_CLUSTER_H_
