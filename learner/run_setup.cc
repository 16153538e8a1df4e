#include "learner/run_setup.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agent/agent_config.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "model/dsv32_model.h"
#include "model/model_factory.h"
#include "model/parameter_groups.h"
#include "model/weights_io.h"
#include "nlohmann/json.hpp"
#include "learner/data_parallel.h"
#include "learner/data_parallel_rollout.h"
#include "learner/grpc_policy_learner.h"
#include "rollout/grpc_rollout_client.h"
#include "rollout/local_rollout_client.h"

namespace spargo::learner {
namespace {

std::string TokenizerSpec(const config::ModelConfig& m) {
  if (m.has_tokenizer() && !m.tokenizer().empty()) return m.tokenizer();
  if (m.has_pretrained_dir()) {
    const std::string candidate = (std::filesystem::path(m.pretrained_dir()) / "tokenizer.json").string();
    std::error_code ec;
    if (std::filesystem::exists(candidate, ec)) return candidate;
  }
  return "byte";
}

absl::StatusOr<SpecialIds> ResolveSpecialIds(const tokenizer::Tokenizer& tok, const model::CausalLm& policy) {
  SpecialIds ids;
  int64_t model_eos = -1, model_bos = -1;
  if (auto* dsv32 = dynamic_cast<const model::Dsv32Model*>(&policy)) {
    model_eos = dsv32->config().eos_token_id;
    model_bos = dsv32->config().bos_token_id;
  }
  ids.eos = model_eos >= 0 ? model_eos : tok.eos_id().value_or(-1);
  if (ids.eos < 0) {
    return absl::InvalidArgumentError(absl::StrCat("model.tokenizer = ", tok.spec(), ": no end-of-sequence token "
                                                   "(neither the model's config.json nor the tokenizer names one)"));
  }
  ids.pad = tok.pad_id().value_or(ids.eos);
  ids.bos = tok.bos_id() ? *tok.bos_id() : model_bos;
  ids.vocab_limit = tok.vocab_size() < policy.vocab_size() ? tok.vocab_size() : 0;
  if (ids.eos >= policy.vocab_size() || ids.pad >= policy.vocab_size() || ids.bos >= policy.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("model.tokenizer = ", tok.spec(), ": special ids (eos ", ids.eos,
                                                   ", pad ", ids.pad, ", bos ", ids.bos,
                                                   ") outside the model's vocabulary of ", policy.vocab_size()));
  }
  return ids;
}

absl::StatusOr<std::shared_ptr<model::CausalLm>> NewModel(const config::ExperimentConfig& c,
                                                          const tokenizer::Tokenizer& tok) {
  SPARGO_RETURN_IF_ERROR(CallCatching("seeding", [&] { torch::manual_seed(c.seed()); }));
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<model::CausalLm> m,
                          model::CreateModel(c.model(), tok.vocab_size(), tok.bos_id().value_or(-1),
                                             tok.eos_id().value_or(-1)));
  const auto& frozen = c.learner().frozen_parameter_groups();
  if (!frozen.empty()) {
    SPARGO_RETURN_IF_ERROR(Annotate(model::FreezeParameterGroups(*m, {frozen.begin(), frozen.end()}),
                                    "learner.frozen_parameter_groups"));
  }
  return m;
}

std::string DtypeName(torch::ScalarType t) { return t == torch::kBFloat16 ? "bfloat16" : "float32"; }

// The in-process rollout of `c`: the policy itself when rollout.device and rollout.dtype are the learner's (and the
// policy lives here), else a copy there starting from `initial`; agent episodes over the config's environments.
struct InProcessRollout {
  std::unique_ptr<rollout::LocalRolloutClient> client;
  std::unique_ptr<agent::ToolBox> tools;
};
absl::StatusOr<InProcessRollout> NewInProcessRollout(const config::ExperimentConfig& c,
                                                     std::shared_ptr<model::CausalLm> policy,
                                                     const model::TensorMap& initial,
                                                     const tokenizer::Tokenizer& tok) {
  const config::LearnerConfig& l = c.learner();
  const config::RolloutConfig& r = c.rollout();
  SPARGO_ASSIGN_OR_RETURN(torch::Device learner_device, ParseDevice(l.device(), "learner.device"));
  const torch::ScalarType learner_dtype = TorchDtype(l.dtype());
  SPARGO_ASSIGN_OR_RETURN(torch::Device rollout_device,
                          ParseDevice(r.device().empty() ? l.device() : r.device(), "rollout.device"));
  const torch::ScalarType rollout_dtype =
      r.dtype() == config::DTYPE_UNSPECIFIED ? learner_dtype : TorchDtype(r.dtype());
  const std::string where = absl::StrCat("in process (", rollout_device.str(), ", ", DtypeName(rollout_dtype));
  std::unique_ptr<rollout::LocalRolloutClient> local;
  if (policy != nullptr && rollout_device == learner_device && rollout_dtype == learner_dtype) {
    local = std::make_unique<rollout::LocalRolloutClient>(policy, true, where + ")");
  } else {
    SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<model::CausalLm> copy, NewModel(c, tok));
    SPARGO_RETURN_IF_ERROR(model::CopyNamedTensors(*copy, initial));
    for (auto& p : copy->parameters()) p.set_requires_grad(false);
    SPARGO_RETURN_IF_ERROR(MoveModel(*copy, rollout_device, rollout_dtype));
    copy->eval();
    local = std::make_unique<rollout::LocalRolloutClient>(copy, false, where + ", a copy of the policy)");
  }
  InProcessRollout out;
  if (r.has_agent()) {
    SPARGO_ASSIGN_OR_RETURN(out.tools, agent::ToolBoxFromConfig(r.agent(), "rollout.agent"));
    const agent::ToolBox* tools = out.tools.get();
    const tokenizer::Tokenizer* tokenizer = &tok;
    const agent::EpisodeLimits limits = agent::LimitsFromConfig(r.agent());
    const std::set<config::Domain> domains = agent::EpisodeDomains(r.agent());
    local->set_episodes([=] { return std::make_unique<agent::ToolEpisodes>(tools, tokenizer, limits, domains); });
    SPARGO_LOG(INFO) << "agent episodes in process: tools " << absl::StrJoin(tools->ToolNames(), ", ")
                     << ", at most " << limits.max_turns << " tool turns";
  }
  out.client = std::move(local);
  return out;
}

}  // namespace

absl::StatusOr<torch::Device> ParseDevice(const std::string& spec, const std::string& field) {
  if (spec == "cpu") return torch::Device(torch::kCPU);
  if (spec != "cuda" && !absl::StartsWith(spec, "cuda:")) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", spec, ": use cpu, cuda or cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", spec, ": this libtorch sees no CUDA device"));
  }
  int index = 0;
  if (spec != "cuda" && !absl::SimpleAtoi(spec.substr(5), &index)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", spec, ": use cpu, cuda or cuda:N"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index < 0 || index >= count) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", spec, ": this machine has ", count, " CUDA device(s)"));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

torch::ScalarType TorchDtype(config::Dtype dtype) { return dtype == config::BFLOAT16 ? torch::kBFloat16 : torch::kFloat32; }

bool NeedsReference(const config::ExperimentConfig& c) {
  const config::GrpoConfig& g = c.learner().grpo();
  if (g.kl_metric() || g.kl_coef() > 0) return true;
  for (const auto& d : g.domain_kl_coef()) {
    if (d.value() > 0) return true;
  }
  return false;
}

absl::StatusOr<RunModel> CreateRunModel(const config::ExperimentConfig& c) {
  RunModel out;
  out.tokenizer_spec = TokenizerSpec(c.model());
  absl::StatusOr<std::shared_ptr<const tokenizer::Tokenizer>> tok = tokenizer::LoadTokenizer(out.tokenizer_spec);
  if (!tok.ok()) return Annotate(tok.status(), absl::StrCat("model.tokenizer = ", out.tokenizer_spec));
  out.tokenizer = *tok;
  SPARGO_ASSIGN_OR_RETURN(out.model, NewModel(c, *out.tokenizer));
  SPARGO_ASSIGN_OR_RETURN(out.ids, ResolveSpecialIds(*out.tokenizer, *out.model));
  return out;
}

absl::StatusOr<PolicyLearnerOptions> PolicyLearnerOptionsFor(const config::ExperimentConfig& c) {
  PolicyLearnerOptions po;
  SPARGO_ASSIGN_OR_RETURN(po.device, ParseDevice(c.learner().device(), "learner.device"));
  po.dtype = TorchDtype(c.learner().dtype());
  po.activation_checkpointing = c.learner().activation_checkpointing();
  po.shard_optimizer_state = c.learner().shard_optimizer_state();
  return po;
}

absl::Status FollowDataParallelRun(const config::ExperimentConfig& c, std::shared_ptr<Collective> collective) {
  if (c.threads() > 0) torch::set_num_threads(c.threads());  // as rank 0's Train does
  SPARGO_ASSIGN_OR_RETURN(const std::string run_dir, collective->Await("run_dir"));
  const std::string records_dir = run_dir + "/ranks";
  std::error_code ec;
  std::filesystem::create_directories(records_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", records_dir, ": ", ec.message()));
  const std::string records_path = absl::StrCat(records_dir, "/rank", collective->rank(), ".jsonl");
  auto records = std::make_shared<std::ofstream>(records_path, std::ios::app);
  if (!*records) return absl::InternalError(absl::StrCat("cannot write ", records_path));
  SPARGO_ASSIGN_OR_RETURN(RunModel run_model, CreateRunModel(c));
  SPARGO_ASSIGN_OR_RETURN(PolicyLearnerOptions po, PolicyLearnerOptionsFor(c));
  po.collective = collective;
  SPARGO_ASSIGN_OR_RETURN(std::unique_ptr<PolicyLearner> local, NewLocalPolicyLearner(run_model.model, po));
  CommandHandlers handlers = LearnerCommandHandlers(local.get());
  // Rank 0 samples on every rank when it samples in process (learner/data_parallel_rollout.h).
  InProcessRollout rollout;
  if (c.rollout().workers_size() == 0) {
    SPARGO_ASSIGN_OR_RETURN(model::TensorMap initial, local->ModelWeights());
    SPARGO_ASSIGN_OR_RETURN(rollout, NewInProcessRollout(c, local->model(), initial, *run_model.tokenizer));
    const SpecialIds& ids = run_model.ids;
    handlers.merge(RolloutCommandHandlers(rollout.client.get(), local.get(), collective.get(), ids.eos, ids.pad,
                                          ids.vocab_limit));
  }
  // Every command's wall time, one JSON line each.
  for (auto& [name, handler] : handlers) {
    handler = [name = name, inner = std::move(handler), records, rank = collective->rank()](const std::string& p) {
      const absl::Time start = absl::Now();
      absl::Status s = inner(p);
      nlohmann::json line = {{"rank", rank},
                             {"command", name},
                             {"seconds", absl::ToDoubleSeconds(absl::Now() - start)},
                             {"payload_bytes", p.size()},
                             {"ok", s.ok()}};
      *records << line.dump() << "\n" << std::flush;
      return s;
    };
  }
  SPARGO_LOG(INFO) << "policy replica " << local->Describe() << ": following rank 0; records in " << records_path;
  return FollowRankZero(*collective, handlers);
}

absl::StatusOr<std::unique_ptr<rewards::RewardClient>> NewRewardClient(const config::ExperimentConfig& c) {
  if (!c.services().reward_address().empty()) {
    rewards::GrpcRewardOptions o;
    o.address = c.services().reward_address();
    o.endpoints = c.services();
    return rewards::NewGrpcRewardClient(o);
  }
  SPARGO_ASSIGN_OR_RETURN(rewards::RewardPipelines pipelines, rewards::RewardPipelines::FromConfig(c));
  const int threads = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  return rewards::NewLocalRewardClient(std::make_shared<const rewards::RewardPipelines>(std::move(pipelines)), threads);
}

absl::StatusOr<std::unique_ptr<TrainContext>> BuildTrainContext(const config::ExperimentConfig& c,
                                                                 MetricsRegistry* metrics,
                                                                 std::shared_ptr<Collective> collective) {
  auto ctx = std::make_unique<TrainContext>();
  // One channel carries the learner's and the rollout's commands to the other ranks, in one sequence.
  const std::shared_ptr<CommandChannel> channel =
      collective != nullptr && collective->world_size() > 1 ? std::make_shared<CommandChannel>(collective) : nullptr;
  ctx->config = c;
  ctx->metrics = metrics;
  SPARGO_ASSIGN_OR_RETURN(ctx->tasks, TaskMixture::FromConfig(c));
  const config::LearnerConfig& l = c.learner();
  SPARGO_RETURN_IF_ERROR(ParseDevice(l.device(), "learner.device").status());  // a bad device fails here, early
  const torch::ScalarType learner_dtype = TorchDtype(l.dtype());
  SPARGO_ASSIGN_OR_RETURN(RunModel run_model, CreateRunModel(c));
  const std::string& tokenizer_spec = run_model.tokenizer_spec;
  const std::shared_ptr<const tokenizer::Tokenizer>* tok = &run_model.tokenizer;
  {
    absl::StatusOr<std::optional<tokenizer::TokenizerFiles>> files = tokenizer::ReadTokenizerFiles(tokenizer_spec);
    if (!files.ok()) return Annotate(files.status(), absl::StrCat("model.tokenizer = ", tokenizer_spec));
    ctx->tokenizer_files = *std::move(files);
  }
  std::shared_ptr<model::CausalLm> policy_model = run_model.model;
  const SpecialIds ids = run_model.ids;
  ctx->codec = std::make_unique<PromptCodec>(*tok, ids);
  if (auto* dsv32 = dynamic_cast<model::Dsv32Model*>(policy_model.get())) {
    ctx->model_config_json = model::Dsv32ConfigToJson(dsv32->config());
  }

  // The reference and an in-process rollout copy start as copies of the policy's initial weights.
  const model::TensorMap initial = [&] {
    model::TensorMap t;
    for (const auto& p : policy_model->named_parameters(true)) t[p.key()] = p.value().detach().clone();
    for (const auto& b : policy_model->named_buffers(true)) t[b.key()] = b.value().detach().clone();
    return t;
  }();
  if (c.services().learner_address().empty()) {
    SPARGO_ASSIGN_OR_RETURN(PolicyLearnerOptions po, PolicyLearnerOptionsFor(c));
    po.collective = channel != nullptr ? collective : nullptr;
    SPARGO_ASSIGN_OR_RETURN(ctx->policy, NewLocalPolicyLearner(policy_model, po));
    if (channel != nullptr) ctx->policy = NewDataParallelPolicyLearner(std::move(ctx->policy), channel);
  } else {
    if (channel != nullptr) {
      return absl::InvalidArgumentError("services.learner_address: a data-parallel run trains in its own processes; "
                                        "leave the address empty or run one process");
    }
    // The learner service trains the run's architecture from the run's initial weights.
    GrpcPolicyLearnerOptions o;
    o.address = c.services().learner_address();
    o.endpoints = c.services();
    model::TensorMap parameters;
    for (const auto& p : policy_model->named_parameters(true)) parameters[p.key()] = p.value();
    SPARGO_ASSIGN_OR_RETURN(ctx->policy, NewGrpcPolicyLearner(o, parameters));
    SPARGO_RETURN_IF_ERROR(Annotate(ctx->policy->LoadWeights(initial), "giving the learner service the initial weights"));
  }

  if (NeedsReference(c)) {
    SPARGO_ASSIGN_OR_RETURN(ctx->reference_device,
                            ParseDevice(l.reference_device().empty() ? l.device() : l.reference_device(),
                                        "learner.reference_device"));
    SPARGO_ASSIGN_OR_RETURN(ctx->reference, NewModel(c, **tok));
    SPARGO_RETURN_IF_ERROR(model::CopyNamedTensors(*ctx->reference, initial));
    for (auto& p : ctx->reference->parameters()) p.set_requires_grad(false);
    SPARGO_RETURN_IF_ERROR(MoveModel(*ctx->reference, ctx->reference_device, learner_dtype));
    ctx->reference->eval();
  }

  const config::RolloutConfig& r = c.rollout();
  if (r.workers_size() > 0) {
    rollout::GrpcRolloutOptions o;
    o.workers.assign(r.workers().begin(), r.workers().end());
    o.endpoints = c.services();
    o.groups_per_request = r.groups_per_request();
    o.generate_deadline_seconds = r.generate_deadline_seconds();
    o.max_attempts = r.max_attempts();
    o.worker_wait_seconds = r.worker_wait_seconds();
    o.weight_chunk_bytes = r.weight_chunk_bytes();
    o.vocab_size = policy_model->vocab_size();
    SPARGO_ASSIGN_OR_RETURN(ctx->rollout, rollout::GrpcRolloutClient::Create(o, 0));
  } else {
    SPARGO_ASSIGN_OR_RETURN(InProcessRollout local,
                            NewInProcessRollout(c, ctx->policy->model(), initial, ctx->codec->tokenizer()));
    ctx->tools = std::move(local.tools);
    if (channel != nullptr) {
      ctx->rollout = NewDataParallelRollout(std::move(local.client), channel, policy_model->vocab_size());
    } else {
      ctx->rollout = std::move(local.client);
    }
  }

  SPARGO_ASSIGN_OR_RETURN(ctx->rewards, NewRewardClient(c));
  SPARGO_LOG(INFO) << "policy " << ctx->policy->Describe() << ", tokenizer "
                   << tokenizer_spec << " (" << (*tok)->vocab_size() << " ids, eos " << ids.eos << "), rollout "
                   << ctx->rollout->Describe() << ", rewards " << ctx->rewards->Describe()
                   << (ctx->reference ? absl::StrCat(", reference on ", ctx->reference_device.str()) : "");
  return ctx;
}

}  // namespace spargo::learner
