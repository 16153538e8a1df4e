#include "model/weights_io.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace spargo::model {

absl::Status CopyNamedTensors(torch::nn::Module& module, const TensorMap& tensors,
                              const std::function<bool(const std::string&)>& skip_extra) {
  torch::NoGradGuard no_grad;
  TensorMap own;
  for (const auto& p : module.named_parameters(true)) own[p.key()] = p.value();
  for (const auto& p : module.named_buffers(true)) own[p.key()] = p.value();
  // Check everything before changing anything.
  for (const auto& [name, dst] : own) {
    auto it = tensors.find(name);
    if (it == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks tensor '", name, "'"));
    if (it->second.sizes() != dst.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", c10::str(it->second.sizes()),
                                                     "; the model needs ", c10::str(dst.sizes())));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (own.count(name) == 0 && !(skip_extra && skip_extra(name))) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint tensor '", name, "' is not a parameter of the model"));
    }
  }
  return CallCatching("copying weights", [&] {
    for (auto& [name, dst] : own) dst.copy_(tensors.at(name).to(dst.device(), dst.scalar_type()));
  });
}

absl::Status SaveWeights(torch::nn::Module& module, const std::string& path) {
  TensorMap tensors;
  SPARGO_RETURN_IF_ERROR(CallCatching("collecting weights", [&] {
    for (const auto& p : module.named_parameters(true)) tensors[p.key()] = p.value().detach().cpu().contiguous();
    for (const auto& p : module.named_buffers(true)) tensors[p.key()] = p.value().detach().cpu().contiguous();
  }));
  return WriteSafetensors(path, tensors);
}

absl::Status LoadWeights(torch::nn::Module& module, const std::string& path) {
  SPARGO_ASSIGN_OR_RETURN(TensorMap tensors, ReadSafetensors(path));
  return Annotate(CopyNamedTensors(module, tensors), path);
}

}  // namespace spargo::model
