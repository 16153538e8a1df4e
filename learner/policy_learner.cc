#include "learner/policy_learner.h"

#include <algorithm>
#include <sstream>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "learner/optimizer.h"
#include "model/dsv32_model.h"
#include "model/weights_io.h"

namespace spargo::learner {
namespace {

// The key of a parameter's state in an optimizer's state map: libtorch 1.13 keys by the TensorImpl's address as
// text, later versions by the address.
using StateKeyType = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;
template <typename Key = StateKeyType>  // a template, so that only the branch of this libtorch's key is compiled
Key StateKey(const torch::optim::Optimizer&, const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;  // what libtorch 1.13 writes: the address through operator<<
    text << static_cast<const void*>(p.unsafeGetTensorImpl());
    return text.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

class LocalPolicyLearner final : public PolicyLearner {
 public:
  LocalPolicyLearner(std::shared_ptr<model::CausalLm> model, const PolicyLearnerOptions& o)
      : model_(std::move(model)), options_(o) {}

  absl::Status Init() {
    SPARGO_RETURN_IF_ERROR(MoveModel(*model_, options_.device, options_.dtype));
    if (options_.activation_checkpointing) {
      auto* dsv32 = dynamic_cast<model::Dsv32Model*>(model_.get());
      if (dsv32 == nullptr) {
        return absl::InvalidArgumentError("learner.activation_checkpointing needs model.architecture = DEEPSEEK_V32");
      }
      dsv32->set_activation_checkpointing(true);
    }
    SPARGO_RETURN_IF_ERROR(CallCatching("creating the master weights", [&] {
      torch::NoGradGuard no_grad;
      for (const auto& p : model_->named_parameters(true)) {
        names_.push_back(p.key());
        params_.push_back(p.value());
        // float32 models train their own parameters; bfloat16 ones a float32 copy.
        master_.push_back(options_.dtype == torch::kFloat32 ? p.value()
                                                            : p.value().detach().to(torch::kFloat32).clone());
      }
    }));
    if (collective() == nullptr) return absl::OkStatus();
    if (options_.shard_optimizer_state) AssignOwners();
    // Replicas start from rank 0's weights whatever each rank loaded or drew.
    return SyncFromRankZero(true);
  }

  std::string Describe() const override {
    return absl::StrCat("in process (", options_.device.str(), ", ", c10::toString(options_.dtype), ")",
                        collective() == nullptr ? ""
                                                : absl::StrCat(", rank ", collective()->rank(), " of ",
                                                               collective()->world_size(), " data-parallel ranks"));
  }
  int64_t max_seq_len() const override { return model_->max_seq_len(); }
  std::shared_ptr<model::CausalLm> model() const override { return model_; }

  absl::Status ResetOptimizer(const config::OptimizerConfig& config) override {
    optimizer_config_ = config;
    return CallCatching("creating the optimizer", [&] { optimizer_ = MakeAdamW(OptimizedMasters(), config); });
  }
  absl::StatusOr<std::string> OptimizerState() override {
    if (optimizer_ == nullptr) return absl::FailedPreconditionError("policy learner: no optimizer (ResetOptimizer)");
    if (!owner_.empty()) return GatherShardedState();
    if (collective() != nullptr && collective()->rank() != 0) return std::string();
    return SerializeOptimizer(*optimizer_);
  }
  absl::Status LoadOptimizerState(const std::string& bytes) override {
    if (optimizer_ == nullptr) return absl::FailedPreconditionError("policy learner: no optimizer (ResetOptimizer)");
    if (collective() == nullptr) return RestoreOptimizer(bytes, optimizer_.get());
    std::string state = collective()->rank() == 0 ? bytes : std::string();
    SPARGO_RETURN_IF_ERROR(BroadcastBytes(*collective(), &state, 0));
    if (owner_.empty()) return RestoreOptimizer(state, optimizer_.get());
    // The whole state into an optimizer over every master weight, then this rank's entries into its own.
    std::unique_ptr<torch::optim::AdamW> full;
    SPARGO_RETURN_IF_ERROR(CallCatching("loading the optimizer state", [&] {
      full = MakeAdamW(master_, optimizer_config_);
    }));
    SPARGO_RETURN_IF_ERROR(RestoreOptimizer(state, full.get()));
    optimizer_->state().clear();
    for (size_t i = 0; i < master_.size(); ++i) {
      if (owner_[i] != collective()->rank()) continue;
      auto it = full->state().find(StateKey(*full, master_[i]));
      if (it != full->state().end()) {
        optimizer_->state()[StateKey(*optimizer_, master_[i])] = std::move(it->second);
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<TrainStepResult> TrainStep(const SequenceBatch& batch,
                                            const std::vector<std::vector<int64_t>>& micro_batches,
                                            const ForwardOptions& forward, const LossSpec& loss,
                                            const config::OptimizerConfig& oc, double lr) override {
    if (optimizer_ == nullptr) return absl::FailedPreconditionError("policy learner: no optimizer (ResetOptimizer)");
    SPARGO_RETURN_IF_ERROR(ValidateLossSpec(loss, batch));
    TrainStepResult result;
    // This rank's share: forward and backward over its slice of every micro-batch.
    absl::Status share = CallCatching("training step", [&] {
      ClearGradients(params_);
      if (options_.dtype != torch::kFloat32) ClearGradients(master_);
      for (const std::vector<int64_t>& rows : MyMicroBatches(micro_batches)) {
        if (rows.empty()) continue;
        MicroBatch mb = ForwardMicroBatch(*model_, batch, rows, options_.device, forward);
        torch::Tensor objective = MicroBatchObjective(loss, batch, mb, &result);
        if (objective.requires_grad()) objective.backward();
      }
    });
    if (collective() == nullptr && !share.ok()) return share;
    return CallCatching("training step", [&]() -> absl::StatusOr<TrainStepResult> {
      if (collective() != nullptr) {
        SPARGO_RETURN_IF_ERROR(ReduceStep(share, &result));
      } else if (options_.dtype != torch::kFloat32) {
        for (size_t i = 0; i < params_.size(); ++i) {
          const torch::Tensor& g = params_[i].grad();
          master_[i].mutable_grad() = g.defined() ? g.to(torch::kFloat32) : torch::Tensor();
        }
      }
      result.grad_norm = ClipGradients(master_, oc);
      SetLr(optimizer_.get(), lr);
      optimizer_->step();
      // Sharded state: each rank stepped its own parameters; every rank takes every owner's new weights.
      if (!owner_.empty()) {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < master_.size(); ++i) {
          SPARGO_RETURN_IF_ERROR(collective()->Broadcast({master_[i].detach()}, owner_[i]));
        }
      }
      if (options_.dtype != torch::kFloat32) {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < params_.size(); ++i) params_[i].copy_(master_[i]);
      }
      return result;
    });
  }

  absl::StatusOr<torch::Tensor> LogProbs(const SequenceBatch& batch,
                                         const std::vector<std::vector<int64_t>>& micro_batches,
                                         const ForwardOptions& forward) override {
    if (collective() == nullptr) return ModelLogProbs(*model_, options_.device, batch, micro_batches, forward);
    absl::StatusOr<torch::Tensor> part =
        ModelLogProbs(*model_, options_.device, batch, MyMicroBatches(micro_batches), forward);
    // [N, T-1] sums of the ranks' parts (zeros outside a rank's rows), then one more element counting failures.
    return CallCatching("log-probs", [&]() -> absl::StatusOr<torch::Tensor> {
      torch::Tensor sum = torch::zeros({batch.old_logprobs.numel() + 1}, torch::TensorOptions(options_.device));
      if (part.ok()) {
        sum.narrow(0, 0, batch.old_logprobs.numel()).copy_(part->reshape(-1));
      } else {
        sum[batch.old_logprobs.numel()] = 1;
      }
      SPARGO_RETURN_IF_ERROR(collective()->AllReduceSum({sum}));
      sum = sum.to(torch::kCPU);
      const double failed = sum[batch.old_logprobs.numel()].item<double>();
      if (failed > 0) {
        return absl::InternalError(absl::StrCat(static_cast<int>(failed),
                                                " data-parallel rank(s) failed their log-probs",
                                                part.ok() ? "" : absl::StrCat(": ", part.status().message())));
      }
      return sum.narrow(0, 0, batch.old_logprobs.numel()).reshape(batch.old_logprobs.sizes()).clone();
    });
  }

  absl::StatusOr<model::TensorMap> ModelWeights() const override {
    model::TensorMap out;
    for (const auto& p : model_->named_parameters(true)) out[p.key()] = p.value();
    for (const auto& b : model_->named_buffers(true)) out[b.key()] = b.value();
    return out;
  }

  absl::StatusOr<model::TensorMap> MasterWeights() const override {
    model::TensorMap out;
    SPARGO_RETURN_IF_ERROR(CallCatching("collecting the master weights", [&] {
      for (size_t i = 0; i < names_.size(); ++i) out[names_[i]] = master_[i].detach().to(torch::kCPU).contiguous();
      for (const auto& b : model_->named_buffers(true)) out[b.key()] = b.value().detach().to(torch::kCPU).contiguous();
    }));
    return out;
  }

  absl::Status LoadWeights(const model::TensorMap& weights) override {
    if (collective() != nullptr && collective()->rank() != 0) return SyncFromRankZero(true);
    absl::Status copied = model::CopyNamedTensors(*model_, weights);
    if (copied.ok() && options_.dtype != torch::kFloat32) {
      copied = CallCatching("loading the master weights", [&] {
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < names_.size(); ++i) master_[i].copy_(weights.at(names_[i]).to(torch::kFloat32));
      });
    }
    if (collective() == nullptr) return copied;
    SPARGO_RETURN_IF_ERROR(SyncFromRankZero(copied.ok()));
    return copied;
  }

 private:
  Collective* collective() const { return options_.collective.get(); }


  // Sharded state: parameter i's owner, every parameter to the rank with the fewest elements so far (the same
  // answer on every rank).
  void AssignOwners() {
    std::vector<int64_t> load(collective()->world_size(), 0);
    owner_.assign(master_.size(), 0);
    for (size_t i = 0; i < master_.size(); ++i) {
      owner_[i] = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
      load[owner_[i]] += master_[i].numel();
    }
  }

  // The master weights this rank's optimizer updates: its own share when the state is sharded, else all.
  std::vector<torch::Tensor> OptimizedMasters() const {
    if (owner_.empty()) return master_;
    std::vector<torch::Tensor> mine;
    for (size_t i = 0; i < master_.size(); ++i) {
      if (owner_[i] == collective()->rank()) mine.push_back(master_[i]);
    }
    return mine;
  }

  // Every rank's share of the AdamW state (safetensors: "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.step")
  // gathered on rank 0 into an optimizer over every master weight, saved in the single-process format.
  absl::StatusOr<std::string> GatherShardedState() {
    model::TensorMap mine;
    SPARGO_RETURN_IF_ERROR(CallCatching("collecting the optimizer state", [&] {
      for (size_t i = 0; i < master_.size(); ++i) {
        if (owner_[i] != collective()->rank()) continue;
        auto it = optimizer_->state().find(StateKey(*optimizer_, master_[i]));
        if (it == optimizer_->state().end()) continue;
        const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        mine[names_[i] + ".exp_avg"] = st.exp_avg().to(torch::kCPU).contiguous();
        mine[names_[i] + ".exp_avg_sq"] = st.exp_avg_sq().to(torch::kCPU).contiguous();
        mine[names_[i] + ".step"] = torch::full({1}, st.step(), torch::kLong);
      }
    }));
    SPARGO_ASSIGN_OR_RETURN(std::string bytes, model::EncodeSafetensors(mine));
    std::vector<std::string> all;
    SPARGO_RETURN_IF_ERROR(GatherBytes(*collective(), bytes, &all));
    if (collective()->rank() != 0) return std::string();
    std::unique_ptr<torch::optim::AdamW> full;
    SPARGO_RETURN_IF_ERROR(CallCatching("creating the optimizer", [&] { full = MakeAdamW(master_, optimizer_config_); }));
    for (size_t r = 0; r < all.size(); ++r) {
      SPARGO_ASSIGN_OR_RETURN(model::TensorMap part,
                              model::DecodeSafetensors(all[r], absl::StrCat("rank ", r, "'s optimizer state")));
      SPARGO_RETURN_IF_ERROR(CallCatching("assembling the optimizer state", [&] {
        for (size_t i = 0; i < master_.size(); ++i) {
          auto step = part.find(names_[i] + ".step");
          if (step == part.end()) continue;
          auto st = std::make_unique<torch::optim::AdamWParamState>();
          st->step(step->second.item<int64_t>());
          st->exp_avg(part.at(names_[i] + ".exp_avg").to(master_[i].device()));
          st->exp_avg_sq(part.at(names_[i] + ".exp_avg_sq").to(master_[i].device()));
          full->state()[StateKey(*full, master_[i])] = std::move(st);
        }
      }));
    }
    return SerializeOptimizer(*full);
  }

  // This rank's micro-batches (all of them in a single process).
  std::vector<std::vector<int64_t>> MyMicroBatches(const std::vector<std::vector<int64_t>>& micro_batches) const {
    return collective() == nullptr ? micro_batches
                                   : RankMicroBatches(micro_batches, collective()->rank(), collective()->world_size());
  }

  // Rank 0 says whether it has weights to give (`ok`); if so, every rank takes rank 0's parameters, buffers and
  // master weights.
  absl::Status SyncFromRankZero(bool ok) {
    return CallCatching("taking rank 0's weights", [&]() -> absl::Status {
      torch::Tensor flag = torch::full({1}, ok ? 1 : 0, torch::TensorOptions(options_.device).dtype(torch::kInt));
      SPARGO_RETURN_IF_ERROR(collective()->Broadcast({flag}, 0));
      if (flag.to(torch::kCPU).item<int>() == 0) {
        return absl::FailedPreconditionError("rank 0 could not load the weights; every rank keeps its own");
      }
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> all = params_;
      for (const auto& b : model_->named_buffers(true)) all.push_back(b.value());
      if (options_.dtype != torch::kFloat32) all.insert(all.end(), master_.begin(), master_.end());
      for (torch::Tensor& t : all) {
        torch::Tensor flat = t.is_contiguous() ? t.detach() : t.detach().contiguous();
        SPARGO_RETURN_IF_ERROR(collective()->Broadcast({flat}, 0));
        if (!t.is_contiguous()) t.copy_(flat);
      }
      return absl::OkStatus();
    });
  }

  // Sums the ranks' gradients into the master gradients (float32, in buckets) and their statistics into `result`.
  // A gradient none of the ranks has stays undefined (AdamW then skips the parameter, as in a single process).
  // `share` is this rank's forward/backward outcome: when any rank failed, every rank fails with no update.
  absl::Status ReduceStep(const absl::Status& share, TrainStepResult* result) {
    const torch::TensorOptions f32 = torch::TensorOptions(options_.device).dtype(torch::kFloat32);
    const int64_t num = static_cast<int64_t>(params_.size());
    if (!share.ok()) {
      ClearGradients(params_);
      *result = TrainStepResult();
    }
    // [P] how many ranks hold each gradient, then the step's statistics and the failure count.
    GrpoLossTerms& t = result->terms;
    const std::vector<double> stats = {result->loss,  result->aux_loss,    t.tokens,           t.sequences,
                                       t.policy_loss, t.kl_sum,            t.ratio_sum,        t.clip_low_count,
                                       t.clip_high_count, t.dual_clip_count, t.masked_sequences, t.tis_clipped_count,
                                       t.entropy_sum, share.ok() ? 0.0 : 1.0};
    torch::Tensor counts = torch::zeros({num + static_cast<int64_t>(stats.size())},
                                        torch::TensorOptions(options_.device).dtype(torch::kDouble));
    {
      torch::Tensor host = torch::zeros({counts.size(0)}, torch::kDouble);
      auto h = host.accessor<double, 1>();
      for (int64_t i = 0; i < num; ++i) h[i] = params_[i].grad().defined() ? 1 : 0;
      for (size_t i = 0; i < stats.size(); ++i) h[num + static_cast<int64_t>(i)] = stats[i];
      counts.copy_(host);
    }
    SPARGO_RETURN_IF_ERROR(collective()->AllReduceSum({counts}));
    const torch::Tensor summed = counts.to(torch::kCPU);
    auto c = summed.accessor<double, 1>();
    double v[14];
    for (int i = 0; i < 14; ++i) v[i] = c[num + i];
    result->loss = v[0];
    result->aux_loss = v[1];
    t.tokens = v[2], t.sequences = v[3], t.policy_loss = v[4], t.kl_sum = v[5], t.ratio_sum = v[6];
    t.clip_low_count = v[7], t.clip_high_count = v[8], t.dual_clip_count = v[9], t.masked_sequences = v[10];
    t.tis_clipped_count = v[11], t.entropy_sum = v[12];
    // Buckets of at most 2^26 elements (256 MiB of float32) keep the extra memory bounded.
    constexpr int64_t kBucket = int64_t{1} << 26;
    int64_t first = 0;
    while (first < num) {
      int64_t last = first, elements = 0;
      while (last < num && (last == first || elements + params_[last].numel() <= kBucket)) {
        elements += params_[last].numel();
        ++last;
      }
      torch::Tensor bucket = torch::zeros({elements}, f32);
      int64_t offset = 0;
      for (int64_t i = first; i < last; ++i) {
        const torch::Tensor& g = params_[i].grad();
        if (g.defined()) bucket.narrow(0, offset, g.numel()).copy_(g.reshape(-1));
        offset += params_[i].numel();
      }
      SPARGO_RETURN_IF_ERROR(collective()->AllReduceSum({bucket}));
      offset = 0;
      for (int64_t i = first; i < last; ++i) {
        const int64_t n = params_[i].numel();
        torch::Tensor g = c[i] > 0 ? bucket.narrow(0, offset, n).view(params_[i].sizes()) : torch::Tensor();
        if (options_.dtype == torch::kFloat32) {
          params_[i].mutable_grad() = g;
        } else {
          master_[i].mutable_grad() = g;
        }
        offset += n;
      }
      first = last;
    }
    if (v[13] > 0) {
      ClearGradients(master_);
      ClearGradients(params_);
      return absl::InternalError(absl::StrCat(static_cast<int>(v[13]), " data-parallel rank(s) failed their share of ",
                                              "the step; no update",
                                              share.ok() ? "" : absl::StrCat(": ", share.message())));
    }
    return absl::OkStatus();
  }

  std::shared_ptr<model::CausalLm> model_;
  PolicyLearnerOptions options_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_, master_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  config::OptimizerConfig optimizer_config_;
  std::vector<int> owner_;  // sharded optimizer state: each parameter's rank; empty otherwise
};

}  // namespace

absl::Status MoveModel(model::CausalLm& m, torch::Device device, torch::ScalarType dtype) {
  return CallCatching("moving the model", [&] {
    if (auto* dsv32 = dynamic_cast<model::Dsv32Model*>(&m)) {
      dsv32->To(device, dtype);
    } else {
      m.to(device, dtype);
    }
  });
}

absl::StatusOr<std::unique_ptr<PolicyLearner>> NewLocalPolicyLearner(std::shared_ptr<model::CausalLm> model,
                                                                     const PolicyLearnerOptions& options) {
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kBFloat16) {
    return absl::InvalidArgumentError("policy learner: dtype must be float32 or bfloat16");
  }
  if (options.collective != nullptr && options.collective->device() != options.device) {
    return absl::InvalidArgumentError(absl::StrCat("policy learner on ", options.device.str(),
                                                   " with a process group on ", options.collective->device().str()));
  }
  auto learner = std::make_unique<LocalPolicyLearner>(std::move(model), options);
  SPARGO_RETURN_IF_ERROR(learner->Init());
  return std::unique_ptr<PolicyLearner>(std::move(learner));
}

absl::StatusOr<torch::Tensor> ModelLogProbs(model::CausalLm& model, torch::Device device, const SequenceBatch& batch,
                                            const std::vector<std::vector<int64_t>>& micro_batches,
                                            const ForwardOptions& forward) {
  return CallCatching("log-probs", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    torch::Tensor out = torch::zeros(batch.old_logprobs.sizes(), torch::kFloat);  // [N, T-1]
    for (const std::vector<int64_t>& rows : micro_batches) {
      if (rows.empty()) continue;
      MicroBatch mb = ForwardMicroBatch(model, batch, rows, device, forward);
      out.index_put_({mb.rows, torch::indexing::Slice(0, mb.targets)}, mb.logprobs.to(torch::kCPU, torch::kFloat));
    }
    // Positions past a row's end (padding of a shorter row in its micro-batch) hold no log-prob.
    torch::Tensor positions = torch::arange(out.size(1), torch::kLong).unsqueeze(0);  // [1, T-1]
    return out * (positions < (batch.lengths - 1).unsqueeze(1)).to(torch::kFloat);
  });
}

}  // namespace spargo::learner
