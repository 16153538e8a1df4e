// Plain-libtorch baselines of the DeepSeek-V3.2 model (model/dsv32_model.h): prefill (full forward) and cached
// greedy decode tokens/s, for a named configuration with random weights, on CPU or CUDA, float32 or bfloat16.
// Medians over --reps timed runs after one warm-up (CUDA synchronised). Prints one table row per batch size.
//   spargo_model_bench [--config tiny|160m] [--device cpu|cuda] [--dtype float32|bfloat16] [--batches 1,64]
//                      [--prompt 128] [--new_tokens 64] [--reps 3]
// "tiny" is the fixture's shape (2 layers, hidden 64, MoE, vocab 320); "160m" is the 8-layer dense model of the
// GPU notes (hidden 1024, 16 heads, q_lora 384, kv_lora 256, nope 64, rope 32, v 64, indexer 8 x 64, top-k 256,
// vocab 32000, MLP 2816).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "model/dsv32_model.h"

ABSL_FLAG(std::string, config, "tiny", "tiny or 160m.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "float32", "float32 or bfloat16.");
ABSL_FLAG(std::string, batches, "1,8", "Comma-separated batch sizes.");
ABSL_FLAG(int32_t, prompt, 128, "Prompt tokens per sequence (the prefill length).");
ABSL_FLAG(int32_t, new_tokens, 64, "Greedy tokens decoded per sequence.");
ABSL_FLAG(int32_t, reps, 3, "Timed repetitions (median reported).");
ABSL_FLAG(bool, train, false,
          "Instead: one training step's forward + backward (language-model loss plus the sparse-stage indexer loss, "
          "the learner's ForwardForTraining) on --batches x --prompt tokens.");

namespace spargo {
namespace {

model::Dsv32Config Config(const std::string& name) {
  model::Dsv32Config c;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-6;
  if (name == "tiny") {
    c.vocab_size = 320; c.hidden_size = 64; c.num_hidden_layers = 2; c.num_attention_heads = 4;
    c.q_lora_rank = 48; c.kv_lora_rank = 32; c.qk_nope_head_dim = 16; c.qk_rope_head_dim = 8; c.v_head_dim = 16;
    c.index_n_heads = 4; c.index_head_dim = 16; c.index_topk = 12; c.intermediate_size = 128;
    c.moe_intermediate_size = 32; c.n_routed_experts = 8; c.n_shared_experts = 1; c.num_experts_per_tok = 2;
    c.n_group = 2; c.topk_group = 1; c.routed_scaling_factor = 2.5; c.max_position_embeddings = 4096;
    c.moe_layer = {false, true};
  } else {
    c.vocab_size = 32000; c.hidden_size = 1024; c.num_hidden_layers = 8; c.num_attention_heads = 16;
    c.q_lora_rank = 384; c.kv_lora_rank = 256; c.qk_nope_head_dim = 64; c.qk_rope_head_dim = 32; c.v_head_dim = 64;
    c.index_n_heads = 8; c.index_head_dim = 64; c.index_topk = 256; c.intermediate_size = 2816;
    c.moe_intermediate_size = 256; c.n_routed_experts = 8; c.n_shared_experts = 1; c.num_experts_per_tok = 2;
    c.max_position_embeddings = 65536;
    c.moe_layer.assign(8, false);
  }
  return c;
}

void Sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

template <typename Fn>
double MedianSeconds(int reps, const torch::Device& d, Fn&& fn) {
  fn();  // warm-up
  Sync(d);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    Sync(d);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace
}  // namespace spargo

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  const std::string name = absl::GetFlag(FLAGS_config), device_name = absl::GetFlag(FLAGS_device);
  if ((name != "tiny" && name != "160m") || (device_name == "cuda" && !torch::cuda::is_available())) {
    std::cerr << "--config tiny|160m; --device cuda needs a CUDA libtorch and device\n";
    return 2;
  }
  const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
  const torch::ScalarType dtype = absl::GetFlag(FLAGS_dtype) == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  model::Dsv32Model m(Config(name));
  m.To(device, dtype);
  int64_t params = 0;
  for (const auto& p : m.parameters()) params += p.numel();
  const int prompt = absl::GetFlag(FLAGS_prompt), fresh = absl::GetFlag(FLAGS_new_tokens), reps = absl::GetFlag(FLAGS_reps);
  std::printf("DeepSeek-V3.2 %s (%.1fM parameters), %s, %s, prompt %d, %d new tokens, median of %d\n", name.c_str(),
              params / 1e6, device_name.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), prompt, fresh, reps);
  if (absl::GetFlag(FLAGS_train)) {
    std::printf("| batch | tokens | forward + backward ms | training tokens/s |\n| --- | --- | --- | --- |\n");
    for (absl::string_view b_text : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
      int64_t b = 0;
      if (!absl::SimpleAtoi(b_text, &b) || b < 1) return 2;
      torch::Tensor ids = torch::randint(0, m.vocab_size(), {b, prompt}, torch::TensorOptions(torch::kInt64).device(device));
      const double step = MedianSeconds(reps, device, [&] {
        model::TrainingForward out = m.ForwardForTraining(ids);
        torch::Tensor lm = torch::nn::functional::cross_entropy(
            out.logits.narrow(1, 0, prompt - 1).reshape({-1, m.vocab_size()}), ids.narrow(1, 1, prompt - 1).reshape({-1}));
        (lm + out.aux_loss).backward();
        for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
      });
      std::printf("| %lld | %lld | %.2f | %.0f |\n", static_cast<long long>(b), static_cast<long long>(b * prompt),
                  step * 1e3, b * prompt / step);
      std::fflush(stdout);
    }
    return 0;
  }
  std::printf("| batch | prefill ms | prefill tokens/s | decode ms per step | decode tokens/s |\n| --- | --- | --- | --- | --- |\n");
  torch::NoGradGuard no_grad;
  for (absl::string_view b_text : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int64_t b = 0;
    if (!absl::SimpleAtoi(b_text, &b) || b < 1) return 2;
    torch::Tensor ids = torch::randint(0, m.vocab_size(), {b, prompt}, torch::TensorOptions(torch::kInt64).device(device));
    const double prefill = MedianSeconds(reps, device, [&] { m.Forward(ids); });
    // Decode: prefill into the cache (not timed), then `fresh` greedy steps.
    double decode = 0;
    {
      std::vector<double> runs;
      for (int r = 0; r <= reps; ++r) {
        auto cache = m.NewCache(b, prompt + fresh);
        torch::Tensor logits = m.Decode(ids, cache.get());
        Sync(device);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < fresh; ++i) {
          torch::Tensor next = logits.select(1, logits.size(1) - 1).argmax(-1, true);
          logits = m.Decode(next, cache.get());
        }
        Sync(device);
        if (r > 0) runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::sort(runs.begin(), runs.end());
      decode = runs[runs.size() / 2];
    }
    std::printf("| %lld | %.2f | %.0f | %.3f | %.0f |\n", static_cast<long long>(b), prefill * 1e3, b * prompt / prefill,
                decode * 1e3 / fresh, b * fresh / decode);
    std::fflush(stdout);
  }
  return 0;
}
