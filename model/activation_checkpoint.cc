#include "model/activation_checkpoint.h"

#include <string>
#include <utility>
#include <vector>

namespace spargo::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs besides the saved tensors. Held by the autograd node (ctx->saved_data), so it lives as long
// as the graph does.
struct CheckpointState : torch::CustomClassHolder {
  CheckpointFn fn;
  size_t num_inputs = 0;
  // The tensors whose gradients backward computes for the parameter slots: the caller's own (leaf) tensors, which
  // fn's recomputation reads.
  variable_list parameters;
  // Per output of fn's forward call: whether it was defined. The node's outputs are the defined ones.
  std::vector<bool> defined;
};

constexpr char kStateKey[] = "spargo_checkpoint_state";

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // tensors: the inputs, then the parameters (the latter only so that the node has edges to them). Runs with
  // gradients off (Function::apply's doing) and returns fn's defined outputs.
  static variable_list forward(AutogradContext* ctx, const c10::intrusive_ptr<CheckpointState>& state,
                               at::TensorList tensors) {
    const variable_list inputs(tensors.begin(), tensors.begin() + static_cast<int64_t>(state->num_inputs));
    const variable_list outputs = state->fn(inputs);
    variable_list kept, integral;
    state->defined.clear();
    for (const torch::Tensor& out : outputs) {
      state->defined.push_back(out.defined());
      if (!out.defined()) continue;
      kept.push_back(out);
      if (!out.is_floating_point() && !out.is_complex()) integral.push_back(out);
    }
    ctx->mark_non_differentiable(integral);
    // Outputs that no loss reads arrive as undefined gradients rather than zero tensors.
    ctx->set_materialize_grads(false);
    // The parameters are saved too: an in-place change before backward (an optimizer step) then fails the version
    // check, as it would without checkpointing, instead of recomputing with other weights.
    ctx->save_for_backward(tensors.vec());
    ctx->saved_data[kStateKey] = c10::IValue::make_capsule(c10::intrusive_ptr<torch::CustomClassHolder>(state));
    return kept;
  }

  // Returns one gradient per forward argument: none for the state, then one per input and parameter.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto state = c10::static_intrusive_pointer_cast<CheckpointState>(ctx->saved_data.at(kStateKey).toCapsule());
    const variable_list saved = ctx->get_saved_variables();
    const size_t n = state->num_inputs;
    variable_list inputs;  // detached: the recomputation's graph ends here
    for (size_t i = 0; i < n; ++i) inputs.push_back(saved[i].detach().requires_grad_(saved[i].requires_grad()));
    variable_list outputs;
    {
      torch::AutoGradMode grad_on(true);
      outputs = state->fn(inputs);
    }
    variable_list roots, root_grads;
    CollectRoots(*state, outputs, grads, &roots, &root_grads);
    variable_list targets;
    std::vector<size_t> slots;  // targets[j] is forward tensor slots[j]
    for (size_t i = 0; i < saved.size(); ++i) {
      const torch::Tensor& t = i < n ? inputs[i] : state->parameters[i - n];
      if (t.requires_grad() && ctx->needs_input_grad(i)) {
        targets.push_back(t);
        slots.push_back(i);
      }
    }
    variable_list result(saved.size() + 1);
    if (roots.empty() || targets.empty()) return result;
    const variable_list g = torch::autograd::grad(roots, targets, root_grads, /*retain_graph=*/false,
                                                  /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t j = 0; j < slots.size(); ++j) result[slots[j] + 1] = g[j];
    return result;
  }

 private:
  // The recomputed outputs that carry gradient, each with its incoming gradient; checks that the recomputation
  // returned what the forward call did.
  static void CollectRoots(const CheckpointState& state, const variable_list& outputs, const variable_list& grads,
                           variable_list* roots, variable_list* root_grads) {
    TORCH_CHECK(outputs.size() == state.defined.size(), "Checkpoint: the recomputation returned ", outputs.size(),
                " outputs, the forward call ", state.defined.size(), " (the function must be deterministic)");
    size_t k = 0;  // index among the defined outputs, which are the node's
    for (size_t i = 0; i < outputs.size(); ++i) {
      TORCH_CHECK(outputs[i].defined() == state.defined[i], "Checkpoint: output ", i, " is ",
                  outputs[i].defined() ? "defined" : "undefined", " in the recomputation but not in the forward call");
      if (!state.defined[i]) continue;
      const torch::Tensor& grad = grads[k++];
      if (grad.defined() && outputs[i].requires_grad()) {
        roots->push_back(outputs[i]);
        root_grads->push_back(grad);
      }
    }
  }
};

}  // namespace

variable_list Checkpoint(const CheckpointFn& fn, const variable_list& inputs, const variable_list& parameters) {
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  auto state = c10::make_intrusive<CheckpointState>();
  state->fn = fn;
  state->num_inputs = inputs.size();
  state->parameters = parameters;
  variable_list tensors = inputs;
  tensors.insert(tensors.end(), parameters.begin(), parameters.end());
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].defined(), "Checkpoint: ", i < inputs.size() ? "input " : "parameter ",
                i < inputs.size() ? i : i - inputs.size(), " is undefined");
  }
  const variable_list kept = CheckpointFunction::apply(state, at::TensorList(tensors));
  variable_list outputs;
  size_t k = 0;
  for (bool defined : state->defined) outputs.push_back(defined ? kept[k++] : torch::Tensor());
  return outputs;
}

}  // namespace spargo::model
