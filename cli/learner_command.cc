// `spargo learner`: serves the policy of an experiment config over gRPC (LearnerService, learner/learner_service.h)
// until SIGINT or SIGTERM, so that a training run (`spargo train` with services.learner_address) trains it on this
// process's device. The model comes from the config (model.pretrained_dir or a fresh model of its shapes) on
// learner.device in learner.dtype; the run gives it its initial weights when it connects. Address, TLS, bearer token
// and message limit come from the config's `services` (default 127.0.0.1:50153); --listen overrides the address. An
// address beyond loopback needs the token or TLS, or --trusted-network (it refuses to start otherwise, exit code 2:
// ListenAllowed in cli/shared_flags.h).
#include <csignal>
#include <iostream>

#include "absl/flags/flag.h"
#include "cli/command.h"
#include "cli/shared_flags.h"
#include "common/logging.h"
#include "learner/experiment_config.h"
#include "learner/learner_service.h"
#include "learner/run_setup.h"

namespace spargo::cli {

int RunLearner(const CommandArgs& args) {
  if (!args.positional.empty()) {
    std::cerr << "spargo learner: unexpected argument '" << args.positional[0] << "'\n";
    return kExitUsage;
  }
  absl::StatusOr<config::ExperimentConfig> cfg =
      learner::LoadExperimentConfig(absl::GetFlag(FLAGS_config), args.overrides);
  if (!cfg.ok()) {
    std::cerr << "spargo learner: invalid configuration:\n" << cfg.status().message() << "\n";
    return kExitUsage;
  }
  const std::string address =
      absl::GetFlag(FLAGS_listen).empty() ? cfg->services().learner() : absl::GetFlag(FLAGS_listen);
  if (!ListenAllowed("learner", address, cfg->services())) return kExitUsage;
  const sigset_t signals = BlockStopSignals();
  if (cfg->threads() > 0) torch::set_num_threads(cfg->threads());  // as `spargo train` does: the same arithmetic
  absl::StatusOr<learner::RunModel> model = learner::CreateRunModel(*cfg);
  absl::StatusOr<learner::PolicyLearnerOptions> po =
      model.ok() ? learner::PolicyLearnerOptionsFor(*cfg) : absl::StatusOr<learner::PolicyLearnerOptions>(model.status());
  absl::StatusOr<std::unique_ptr<learner::PolicyLearner>> policy =
      po.ok() ? learner::NewLocalPolicyLearner(model->model, *po)
              : absl::StatusOr<std::unique_ptr<learner::PolicyLearner>>(po.status());
  if (!policy.ok()) {
    SPARGO_LOG(ERROR) << "spargo learner: " << policy.status().ToString();
    return kExitFailure;
  }
  const std::string describe = (*policy)->Describe();
  learner::LearnerServerOptions options;
  options.endpoints = cfg->services();
  options.address = address;
  absl::StatusOr<std::unique_ptr<learner::LearnerServer>> server =
      learner::LearnerServer::Start(std::move(*policy), options);
  if (!server.ok()) {
    SPARGO_LOG(ERROR) << server.status().ToString();
    return kExitFailure;
  }
  SPARGO_LOG(INFO) << "learner service on " << options.address << " (port " << (*server)->port() << "), policy "
                   << describe << (options.endpoints.tls_cert_file().empty() ? "" : ", TLS")
                   << (options.endpoints.token_file().empty() ? "" : ", bearer token");
  const int signal_number = WaitForStopSignal(signals);
  SPARGO_LOG(INFO) << "signal " << signal_number << ": finishing the call in flight";
  (*server)->Shutdown(absl::Seconds(10));
  SPARGO_LOG(INFO) << "learner service stopped";
  return kExitOk;
}

}  // namespace spargo::cli
