// `spargo logits --model DIR --input IN.safetensors --output OUT.safetensors [--greedy N]`: runs a DeepSeek-V3.2
// checkpoint folder (config.json + safetensors) on `input_ids` [B, T] (int64) and writes `logits` [B, T, V]
// (float32) and `topk_l<i>` [B, T, k] (int32, -1 for unused slots) per layer from one full forward; with
// --greedy N also `greedy_ids` [B, T + N]: the input followed by N greedy tokens decoded with the cache.
// --device cpu|cuda and --dtype float32|bfloat16 choose where and in what precision it runs, --indexer-precision
// model_dtype|fp8 the lightning indexer's (model.indexer_precision).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/command.h"
#include "cli/model_flags.h"
#include "common/status_macros.h"
#include "model/dsv32_model.h"
#include "model/safetensors.h"

ABSL_FLAG(std::string, input, "", "safetensors file holding input_ids [B, T] (int64).");
ABSL_FLAG(std::string, output, "", "safetensors file to write (replaced atomically).");
ABSL_FLAG(int32_t, greedy, 0, "Also decode this many greedy tokens with the cache (greedy_ids).");

namespace spargo::cli {

int RunLogits(const CommandArgs& args) {
  const std::string dir = absl::GetFlag(FLAGS_model), in = absl::GetFlag(FLAGS_input), out = absl::GetFlag(FLAGS_output);
  const int greedy = absl::GetFlag(FLAGS_greedy);
  if (!args.positional.empty() || dir.empty() || in.empty() || out.empty() || greedy < 0) {
    std::cerr << "spargo logits: needs --model DIR --input IN.safetensors --output OUT.safetensors, --greedy >= 0\n";
    return kExitUsage;
  }
  absl::StatusOr<DeviceChoice> where = DeviceFromFlags();
  if (!where.ok()) {
    std::cerr << "spargo logits: " << where.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<model::IndexerPrecision> precision = IndexerPrecisionFromFlags();
  if (!precision.ok()) {
    std::cerr << "spargo logits: " << precision.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<std::shared_ptr<model::Dsv32Model>> m = model::LoadDsv32Model(dir);
  if (!m.ok()) {
    std::cerr << "spargo logits: " << m.status().message() << "\n";
    return kExitFailure;
  }
  (*m)->set_indexer_precision(*precision);
  absl::StatusOr<model::TensorMap> input = model::ReadSafetensors(in);
  if (!input.ok() || !input->count("input_ids") || input->at("input_ids").dim() != 2 ||
      input->at("input_ids").scalar_type() != torch::kInt64) {
    std::cerr << "spargo logits: " << in << ": "
              << (input.ok() ? "needs input_ids [B, T] int64" : std::string(input.status().message())) << "\n";
    return kExitFailure;
  }
  (*m)->To(where->device, where->dtype);
  torch::Tensor ids = input->at("input_ids").to(where->device);
  if (ids.numel() == 0 || ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= (*m)->vocab_size()) {
    std::cerr << "spargo logits: input_ids must be in [0, " << (*m)->vocab_size() << ")\n";
    return kExitFailure;
  }
  torch::NoGradGuard no_grad;
  model::TensorMap result;
  absl::Status done = CallCatching("model", [&]() -> absl::Status {
    model::Dsv32Output forward = (*m)->ForwardDetailed(ids);
    result["logits"] = forward.logits.to(torch::kCPU, torch::kFloat32);
    const std::vector<torch::Tensor>& topk = forward.selections.topk;
    for (size_t i = 0; i < topk.size(); ++i) result[absl::StrCat("topk_l", i)] = topk[i].to(torch::kCPU, torch::kInt32);
    if (greedy > 0) {
      std::unique_ptr<model::DecodeCache> cache = (*m)->NewCache(ids.size(0), ids.size(1) + greedy);
      torch::Tensor logits = (*m)->Decode(ids, cache.get());
      torch::Tensor all = ids;
      for (int i = 0; i < greedy; ++i) {
        torch::Tensor next = logits.select(1, logits.size(1) - 1).argmax(-1, /*keepdim=*/true);
        all = torch::cat({all, next}, 1);
        if (i + 1 < greedy) logits = (*m)->Decode(next, cache.get());
      }
      result["greedy_ids"] = all.to(torch::kCPU);
    }
    return absl::OkStatus();
  });
  if (!done.ok()) {
    std::cerr << "spargo logits: " << done.message() << "\n";
    return kExitFailure;
  }
  if (absl::Status s = model::WriteSafetensors(out, result); !s.ok()) {
    std::cerr << "spargo logits: " << s.message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace spargo::cli
