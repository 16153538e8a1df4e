// Activation checkpointing for libtorch's C++ API (which has no torch.utils.checkpoint): trade compute for memory
// by keeping only a function's inputs in the forward pass and recomputing its activations in backward.
//  - Forward: runs fn(inputs) with gradients off, so none of its intermediate activations are kept; the autograd
//    graph holds only the inputs (and references to the parameters, which exist anyway).
//  - Backward: reruns fn with gradients on, over detached copies of the inputs that require grad as the originals
//    did, and backpropagates the incoming gradients through that recomputation to the inputs and to `parameters`.
//    The parameters are inputs of the autograd node, so their gradients come back through it and accumulate into
//    .grad as any other use of them would (frozen ones, requires_grad false, get none).
// Contract for fn:
//  - Deterministic: its recomputation must return what its first call returned (no dropout, no random draws). A
//    function that makes discrete choices (top-k, routing) should record them on its first call and replay them
//    when called again; fn is called through one stored copy, so a mutable closure may keep that state.
//  - It reads no tensor that requires grad other than `inputs` and `parameters` (such gradients would be lost),
//    and it captures by value whatever else it needs: it runs again in backward, after the caller has returned.
//  - Outputs may be undefined (kept undefined) or of an integer type (never require grad); the recomputation must
//    return as many outputs, defined in the same places.
// Guarantees: outputs equal fn(inputs); gradients equal those of running fn without checkpointing (to the
// rounding of summing a parameter's gradient contributions in another order). Undefined incoming gradients (an
// output no loss reads) count as zero. With gradients off (torch::NoGradGuard), fn simply runs once. Double
// backward (create_graph) is not supported. Misuse (an undefined input, a recomputation that returns something
// else) throws c10::Error, like the rest of the model code.
#ifndef SPARGO_MODEL_ACTIVATION_CHECKPOINT_H_
#define SPARGO_MODEL_ACTIVATION_CHECKPOINT_H_

#include <torch/torch.h>

#include <functional>

namespace spargo::model {

using CheckpointFn = std::function<torch::autograd::variable_list(const torch::autograd::variable_list& inputs)>;

// Returns fn(inputs), computed as described above. `parameters`: the tensors fn reads through its closure whose
// gradients are wanted (typically a layer's weights); every input and parameter must be defined.
torch::autograd::variable_list Checkpoint(const CheckpointFn& fn, const torch::autograd::variable_list& inputs,
                                          const torch::autograd::variable_list& parameters);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_ACTIVATION_CHECKPOINT_H_
