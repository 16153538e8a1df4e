// `spargo rollout`: serves RolloutService over gRPC (rollout/rollout_server.h) until SIGINT or SIGTERM, then drains
// calls in flight (up to 10 s). The model is the checkpoint folder --model DIR (config.json and safetensors, e.g. a
// training run's checkpoint) or, without it, a fresh model as the experiment config describes (seeded by its `seed`),
// waiting for UpdateWeights. With rollout.agent set, samples of the agent's domains run as episodes whose tool calls
// this worker's environments answer (the tokenizer: --tokenizer, the model folder's tokenizer.json, or the config's).
// Address, TLS, bearer token and message limit come from the config's `services` (default 127.0.0.1:50151); --listen
// overrides the address. An address beyond loopback needs the token or TLS, or --trusted-network (it refuses to start
// otherwise, exit code 2: ListenAllowed in cli/shared_flags.h). --tokenizer limits sampling to the tokenizer's ids.
// With metrics.port set, Prometheus metrics are served too.
// All Generate calls run on one generation engine (rollout/engine.h), batched together: --cache-mib sizes its paged
// cache (default: half the GPU's free memory once the model is loaded, 256 MiB on CPU), --block-size its blocks
// (tokens), --max-batch-rows the sequences of one decode call and --prefill-tokens the prompt tokens fed per step.
#include <filesystem>
#include <iostream>
#include <utility>

#include "absl/flags/flag.h"
#include "agent/agent_config.h"
#include "cli/command.h"
#include "cli/model_flags.h"
#include "cli/shared_flags.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "learner/experiment_config.h"
#include "learner/run_setup.h"
#include "model/dsv32_model.h"
#include "model/model_factory.h"
#include "rollout/rollout_server.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(int32_t, max_group_size, 64, "Most samples per prompt group.");
ABSL_FLAG(int64_t, cache_mib, 0,
          "The generation engine's cache in MiB (0: half the GPU's free memory on CUDA, 256 MiB on CPU). A group "
          "whose prompt and samples can never fit it is refused RESOURCE_EXHAUSTED; others wait for room.");
ABSL_FLAG(int64_t, block_size, 16, "Tokens per block of the engine's paged cache.");
ABSL_FLAG(int64_t, max_batch_rows, 512, "Most sequences the engine feeds in one decode call.");
ABSL_FLAG(int64_t, prefill_tokens, 2048, "Most prompt tokens the engine feeds per step (chunked prefill).");

namespace spargo::cli {
namespace {

struct LoadedModel {
  std::shared_ptr<model::CausalLm> model;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;  // null when none is known (--model without one)
  std::string name;
  int64_t eos_id = -1, pad_id = 0, vocab_limit = 0;
};

absl::StatusOr<LoadedModel> LoadModel(const config::ExperimentConfig& cfg) {
  LoadedModel out;
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (!dir.empty()) {
    SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<model::Dsv32Model> m, model::LoadDsv32Model(dir));
    m->set_indexer_precision(model::IndexerPrecisionOf(cfg.model()));  // the config's model.indexer_precision
    out.eos_id = m->config().eos_token_id;
    out.model = std::move(m);
    out.name = dir;
    const std::string spec = !absl::GetFlag(FLAGS_tokenizer).empty() ? absl::GetFlag(FLAGS_tokenizer)
                             : std::filesystem::exists(dir + "/tokenizer.json") ? dir + "/tokenizer.json"
                                                                                 : "";
    if (!spec.empty()) {
      SPARGO_ASSIGN_OR_RETURN(out.tokenizer, tokenizer::LoadTokenizer(spec));
    }
  } else {
    // The model a training run with this config trains (its tokenizer, special ids and initial weights).
    SPARGO_ASSIGN_OR_RETURN(learner::RunModel run, learner::CreateRunModel(cfg));
    out.model = run.model;
    out.tokenizer = run.tokenizer;
    out.name = cfg.name();
    out.eos_id = run.ids.eos;
    out.pad_id = run.ids.pad;
    out.vocab_limit = run.ids.vocab_limit;
  }
  SPARGO_ASSIGN_OR_RETURN(DeviceChoice where, DeviceFromFlags());
  SPARGO_RETURN_IF_ERROR(CallCatching("moving the model", [&] {
    if (auto* dsv32 = dynamic_cast<model::Dsv32Model*>(out.model.get())) {
      dsv32->To(where.device, where.dtype);
    } else {
      out.model->to(where.device, where.dtype);
    }
  }));
  out.model->eval();
  return out;
}

}  // namespace

int RunRollout(const CommandArgs& args) {
  if (!args.positional.empty()) {
    std::cerr << "spargo rollout: unexpected argument '" << args.positional[0] << "'\n";
    return kExitUsage;
  }
  absl::StatusOr<config::ExperimentConfig> cfg = learner::LoadExperimentConfig(absl::GetFlag(FLAGS_config), args.overrides);
  if (!cfg.ok()) {
    std::cerr << "spargo rollout: " << cfg.status().message() << "\n";
    return kExitUsage;
  }
  rollout::RolloutServerOptions options;
  options.endpoints = cfg->services();
  options.address = absl::GetFlag(FLAGS_listen).empty() ? cfg->services().rollout() : absl::GetFlag(FLAGS_listen);
  options.limits.max_groups = absl::GetFlag(FLAGS_max_groups);
  options.limits.max_group_size = absl::GetFlag(FLAGS_max_group_size);
  if (options.limits.max_groups < 1 || options.limits.max_group_size < 1) {
    std::cerr << "spargo rollout: --max-groups and --max-group-size must be >= 1\n";
    return kExitUsage;
  }
  const int64_t cache_mib = absl::GetFlag(FLAGS_cache_mib);
  options.engine.block_size = absl::GetFlag(FLAGS_block_size);
  options.engine.max_rows = absl::GetFlag(FLAGS_max_batch_rows);
  options.engine.prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
  // Beyond 2^40 MiB (1 EiB) the byte count would overflow.
  if (cache_mib < 0 || cache_mib > (int64_t{1} << 40)) {
    std::cerr << "spargo rollout: --cache-mib " << cache_mib << " is not in [0, 2^40] (0: the default)\n";
    return kExitUsage;
  }
  options.engine.cache_bytes = cache_mib << 20;
  for (const auto& [flag, value] : {std::pair<const char*, int64_t>{"--block-size", options.engine.block_size},
                                    {"--max-batch-rows", options.engine.max_rows},
                                    {"--prefill-tokens", options.engine.prefill_tokens}}) {
    if (value < 1) {
      std::cerr << "spargo rollout: " << flag << " " << value << " must be >= 1\n";
      return kExitUsage;
    }
  }
  if (!ListenAllowed("rollout", options.address, options.endpoints)) return kExitUsage;
  if (!absl::GetFlag(FLAGS_tokenizer).empty()) {
    absl::StatusOr<std::shared_ptr<const tokenizer::Tokenizer>> tok =
        tokenizer::LoadTokenizer(absl::GetFlag(FLAGS_tokenizer));
    if (!tok.ok()) {
      std::cerr << "spargo rollout: " << tok.status().message() << "\n";
      return kExitUsage;
    }
    options.vocab_limit = (*tok)->vocab_size();
  }
  const sigset_t signals = BlockStopSignals();
  absl::StatusOr<LoadedModel> loaded = LoadModel(*cfg);
  if (!loaded.ok()) {
    std::cerr << "spargo rollout: " << loaded.status().message() << "\n";
    return kExitFailure;
  }
  options.model_name = loaded->name;
  options.eos_id = loaded->eos_id;
  options.pad_id = loaded->pad_id;
  if (options.vocab_limit == 0) options.vocab_limit = loaded->vocab_limit;
  options.limits.max_new_tokens = static_cast<int>(loaded->model->max_seq_len());
  // Agent episodes: this worker's environments answer the tool calls of its samples.
  std::unique_ptr<agent::ToolBox> tools;
  if (cfg->rollout().has_agent()) {
    absl::StatusOr<std::unique_ptr<agent::ToolBox>> made = agent::ToolBoxFromConfig(cfg->rollout().agent(), "rollout.agent");
    if (!made.ok() || loaded->tokenizer == nullptr) {
      std::cerr << "spargo rollout: "
                << (made.ok() ? "rollout.agent needs a tokenizer (--tokenizer, or tokenizer.json in --model)"
                              : std::string(made.status().message()))
                << "\n";
      return kExitUsage;
    }
    tools = std::move(*made);
    const agent::ToolBox* box = tools.get();
    std::shared_ptr<const tokenizer::Tokenizer> tok = loaded->tokenizer;
    const agent::EpisodeLimits limits = agent::LimitsFromConfig(cfg->rollout().agent());
    const std::set<config::Domain> domains = agent::EpisodeDomains(cfg->rollout().agent());
    options.episodes = [box, tok, limits, domains] {
      return std::make_unique<agent::ToolEpisodes>(box, tok.get(), limits, domains);
    };
  }
  MetricsRegistry registry;
  MetricsServer metrics(&registry);
  if (!StartMetricsIfConfigured(*cfg, &metrics)) return kExitFailure;
  absl::StatusOr<std::unique_ptr<rollout::RolloutServer>> server =
      rollout::RolloutServer::Start(loaded->model, options, &registry);
  if (!server.ok()) {
    SPARGO_LOG(ERROR) << server.status().ToString();
    return kExitFailure;
  }
  SPARGO_LOG(INFO) << "rollout service for " << options.model_name << " on " << options.address << " (port "
                   << (*server)->port() << ")" << (options.endpoints.tls_cert_file().empty() ? "" : ", TLS")
                   << (options.endpoints.token_file().empty() ? "" : ", bearer token");
  const int signal_number = WaitForStopSignal(signals);
  SPARGO_LOG(INFO) << "signal " << signal_number << ": draining calls in flight";
  (*server)->Shutdown(absl::Seconds(10));
  SPARGO_LOG(INFO) << "rollout service stopped";
  return kExitOk;
}

}  // namespace spargo::cli
