// `spargo health ADDRESS...`: asks each spargo server (reward, rollout, learner, or any gRPC server with the
// standard health service) whether it is SERVING, through grpc.health.v1.Health/Check, using the config's
// `services` block for TLS (tls_ca_file) and the bearer token. With --wait-seconds N it polls each address until it
// serves or N seconds pass, for scripts that start services and must not go on before they are up (deploy/slurm).
// Prints "ADDRESS SERVING" per address on stdout; exit 0 when every address serves, 1 otherwise (the reason on
// stderr), 2 on a usage error.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "cli/command.h"
#include "cli/shared_flags.h"
#include "common/health_check.h"

ABSL_FLAG(double, wait_seconds, 0,
          "Poll each address until it serves or this many seconds pass; 0: ask once (a 5 s call).");

namespace spargo::cli {

int RunHealth(const CommandArgs& args) {
  if (args.positional.empty()) {
    std::cerr << "spargo health: give at least one HOST:PORT (see spargo health --help)\n";
    return kExitUsage;
  }
  absl::StatusOr<config::ExperimentConfig> cfg = LoadRewardConfig(args);
  if (!cfg.ok()) {
    std::cerr << "spargo health: invalid configuration:\n" << cfg.status().message() << "\n";
    return kExitUsage;
  }
  const double wait = absl::GetFlag(FLAGS_wait_seconds);
  if (!(wait >= 0)) {
    std::cerr << "spargo health: --wait-seconds must be >= 0\n";
    return kExitUsage;
  }
  int exit_code = kExitOk;
  for (const std::string& address : args.positional) {
    absl::Status s = absl::OkStatus();
    if (wait > 0) {
      s = WaitForServing(address, cfg->services(), absl::Seconds(wait));
    } else {
      absl::StatusOr<ServingStatus> one = CheckServing(address, cfg->services(), absl::Seconds(5));
      if (!one.ok()) {
        s = one.status();
      } else if (*one != ServingStatus::kServing) {
        s = absl::UnavailableError(address + " is not SERVING");
      }
    }
    if (s.ok()) {
      std::cout << address << " SERVING" << std::endl;
    } else {
      std::cerr << "spargo health: " << s.message() << "\n";
      exit_code = kExitFailure;
    }
  }
  return exit_code;
}

}  // namespace spargo::cli
