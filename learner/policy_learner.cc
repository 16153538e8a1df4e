#include "learner/policy_learner.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "learner/optimizer.h"
#include "model/dsv32_model.h"
#include "model/weights_io.h"

namespace spargo::learner {
namespace {

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
    return CallCatching("creating the master weights", [&] {
      torch::NoGradGuard no_grad;
      for (const auto& p : model_->named_parameters(true)) {
        names_.push_back(p.key());
        params_.push_back(p.value());
        // float32 models train their own parameters; bfloat16 ones a float32 copy.
        master_.push_back(options_.dtype == torch::kFloat32 ? p.value()
                                                            : p.value().detach().to(torch::kFloat32).clone());
      }
    });
  }

  std::string Describe() const override {
    return absl::StrCat("in process (", options_.device.str(), ", ", c10::toString(options_.dtype), ")");
  }
  int64_t max_seq_len() const override { return model_->max_seq_len(); }
  std::shared_ptr<model::CausalLm> model() const override { return model_; }

  absl::Status ResetOptimizer(const config::OptimizerConfig& config) override {
    return CallCatching("creating the optimizer", [&] { optimizer_ = MakeAdamW(master_, config); });
  }
  absl::StatusOr<std::string> OptimizerState() override {
    if (optimizer_ == nullptr) return absl::FailedPreconditionError("policy learner: no optimizer (ResetOptimizer)");
    return SerializeOptimizer(*optimizer_);
  }
  absl::Status LoadOptimizerState(const std::string& bytes) override {
    if (optimizer_ == nullptr) return absl::FailedPreconditionError("policy learner: no optimizer (ResetOptimizer)");
    return RestoreOptimizer(bytes, optimizer_.get());
  }

  absl::StatusOr<TrainStepResult> TrainStep(const SequenceBatch& batch,
                                            const std::vector<std::vector<int64_t>>& micro_batches,
                                            const ForwardOptions& forward, const LossSpec& loss,
                                            const config::OptimizerConfig& oc, double lr) override {
    if (optimizer_ == nullptr) return absl::FailedPreconditionError("policy learner: no optimizer (ResetOptimizer)");
    SPARGO_RETURN_IF_ERROR(ValidateLossSpec(loss, batch));
    return CallCatching("training step", [&]() -> absl::StatusOr<TrainStepResult> {
      TrainStepResult result;
      ClearGradients(params_);
      if (options_.dtype != torch::kFloat32) ClearGradients(master_);
      for (const std::vector<int64_t>& rows : micro_batches) {
        if (rows.empty()) continue;
        MicroBatch mb = ForwardMicroBatch(*model_, batch, rows, options_.device, forward);
        torch::Tensor objective = MicroBatchObjective(loss, batch, mb, &result);
        if (objective.requires_grad()) objective.backward();
      }
      if (options_.dtype != torch::kFloat32) {
        for (size_t i = 0; i < params_.size(); ++i) {
          const torch::Tensor& g = params_[i].grad();
          master_[i].mutable_grad() = g.defined() ? g.to(torch::kFloat32) : torch::Tensor();
        }
      }
      result.grad_norm = ClipGradients(master_, oc);
      SetLr(optimizer_.get(), lr);
      optimizer_->step();
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
    return ModelLogProbs(*model_, options_.device, batch, micro_batches, forward);
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
    SPARGO_RETURN_IF_ERROR(model::CopyNamedTensors(*model_, weights));
    if (options_.dtype == torch::kFloat32) return absl::OkStatus();
    return CallCatching("loading the master weights", [&] {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < names_.size(); ++i) master_[i].copy_(weights.at(names_[i]).to(torch::kFloat32));
    });
  }

 private:
  std::shared_ptr<model::CausalLm> model_;
  PolicyLearnerOptions options_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_, master_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
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
