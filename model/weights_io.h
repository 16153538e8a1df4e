// A model's weights as named tensors: every parameter and buffer under the name the module registers it with
// (for DeepSeek-V3.2, the tensor names of DeepSeek's published checkpoints), saved to and loaded from safetensors.
#ifndef SPARGO_MODEL_WEIGHTS_IO_H_
#define SPARGO_MODEL_WEIGHTS_IO_H_

#include <torch/torch.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "model/safetensors.h"

namespace spargo::model {

// Copies `tensors` into the module's parameters and buffers (converted to their dtype and device). INVALID_ARGUMENT,
// naming the tensor, for one the module lacks, a shape mismatch, or a tensor the module does not have unless
// `skip_extra(name)` says to ignore it.
absl::Status CopyNamedTensors(torch::nn::Module& module, const TensorMap& tensors,
                              const std::function<bool(const std::string&)>& skip_extra = nullptr);

// Writes every parameter and buffer (on the CPU, in its dtype) to one safetensors file, atomically.
absl::Status SaveWeights(torch::nn::Module& module, const std::string& path);
// Reads a safetensors file into the module (CopyNamedTensors' checks; errors name the file).
absl::Status LoadWeights(torch::nn::Module& module, const std::string& path);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_WEIGHTS_IO_H_
