#include "learner/memory_estimate.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "learner/run_setup.h"
#include "model/dsv32_config.h"
#include "model/model_factory.h"
#include "tokenizer/tokenizer.h"

namespace spargo::learner {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr char kOverrideVariable[] = "SPARGO_IGNORE_MEMORY_ESTIMATE";

std::string Bytes(double bytes) {
  if (bytes >= kGiB) return absl::StrFormat("%.1f GiB", bytes / kGiB);
  return absl::StrFormat("%.1f MiB", bytes / (1024.0 * 1024.0));
}

std::string DeviceName(const std::string& spec) { return spec == "cuda" ? "cuda:0" : spec; }

ModelShape Dsv32Shape(const model::Dsv32Config& c) {
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, ql = c.q_lora_rank, kvl = c.kv_lora_rank;
  const int64_t rope = c.qk_rope_head_dim, nope = c.qk_nope_head_dim, v = c.v_head_dim, dqk = c.qk_head_dim();
  const int64_t hi = c.index_n_heads, di = c.index_head_dim, e = c.n_routed_experts;
  const int64_t moe_i = c.moe_intermediate_size, shared_i = c.moe_intermediate_size * c.n_shared_experts;
  ModelShape s;
  s.vocab_size = c.vocab_size;
  s.num_layers = c.num_hidden_layers;
  s.hidden_size = h;
  s.attention_heads = nh;
  s.indexer_heads = hi;
  s.selected_keys = c.index_topk;
  s.indexer_head_dim = di;
  s.cache_width = kvl + rope + di;  // latent, k_rope, indexer key (model/dsv32_model.h's Dsv32Cache)
  s.indexer_token_width = 2 * hi * di + 2 * di + hi;
  // Weights, as Dsv32Model's constructor makes them.
  const int64_t attention_weights = 2 * h + ql * h + ql + nh * dqk * ql + (kvl + rope) * h + kvl +
                                    nh * (nope + v) * kvl + h * nh * v + hi * di * ql + di * h + 2 * di + hi * h;
  // What a layer's training forward keeps per token: norms, projections, the RoPE parts, queries and keys, the
  // attention output, and the MLP's gate, up, activation and product.
  const int64_t attention_width =
      2 * h + 2 * ql + nh * dqk + 2 * nh * rope + 2 * (kvl + rope) + nh * (nope + v) + 2 * nh * dqk + nh * v + h;
  s.parameters = 2 * c.vocab_size * h + h;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const bool moe = layer < static_cast<int64_t>(c.moe_layer.size()) && c.moe_layer[layer];
    int64_t width = attention_width;
    s.parameters += attention_weights;
    if (moe) {
      s.parameters += e * h + e + e * 3 * moe_i * h + 3 * shared_i * h;
      width += 3 * h + 2 * e + c.num_experts_per_tok * (2 * h + 4 * moe_i) + (shared_i > 0 ? 4 * shared_i + h : 0);
    } else {
      s.parameters += 3 * c.intermediate_size * h;
      width += 3 * h + 4 * c.intermediate_size;
    }
    s.token_width_sum += width;
    s.token_width_max = std::max(s.token_width_max, width);
  }
  return s;
}

ModelShape TinyShape(const config::ModelConfig& m, int64_t vocab_size) {
  const int64_t h = m.hidden_size(), inter = m.intermediate_size(), layers = m.num_layers();
  ModelShape s;
  s.vocab_size = vocab_size;
  s.num_layers = layers;
  s.hidden_size = h;
  s.attention_heads = m.num_heads();
  s.cache_width = 2 * h;  // keys and values
  // Embeddings, per block two LayerNorms, qkv, proj, fc1, fc2 (with biases), the final LayerNorm, lm_head.
  s.parameters = vocab_size * h + m.max_seq_len() * h + 2 * h + h * vocab_size +
                 layers * (4 * h + 3 * h * h + 3 * h + h * h + h + h * inter + inter + inter * h + h);
  const int64_t width = 9 * h + 2 * inter;
  s.token_width_sum = layers * width;
  s.token_width_max = width;
  return s;
}

// The dtypes' sizes in bytes.
double ElementBytes(config::Dtype dtype) { return dtype == config::BFLOAT16 ? 2 : 4; }

// One layer's attention maps for `rows` sequences of `t` tokens: those kept for the backward pass, and those that
// exist only while the layer is computed.
struct LayerMaps {
  double kept = 0, transient = 0;
};

LayerMaps AttentionMaps(const ModelShape& s, double rows, double t, double e, bool indexer_trains, bool on_cuda) {
  LayerMaps m;
  if (s.selected_keys == 0) {
    // Dense: the scores in the compute dtype and their float32 softmax per head, the training indexer's float32
    // maps per indexer head, the masks.
    m.kept = rows * t * t * (s.attention_heads * (4 + e) + (indexer_trains ? s.indexer_heads * 4.0 : 0) + 5);
    return m;
  }
  // DSA (model/dsv32_model.h, Attention): the selection [T, k] int64; while the indexer trains, its per-slot
  // float32 scores (three maps per head) and its selected keys in float32.
  const double slots = std::min<double>(static_cast<double>(s.selected_keys), t);
  m.kept = rows * t * slots * (8 + (indexer_trains ? 4.0 * (3 * s.indexer_heads + s.indexer_head_dim) : 0));
  // Off CUDA the selection runs the libtorch reference: [T, T] float32 scores, int64 sort order and bool masks.
  if (!on_cuda) m.transient = rows * t * t * 13;
  return m;
}

// MemAvailable, lowered to what the cgroup's (v2) limit leaves; nullopt without /proc/meminfo.
std::optional<int64_t> CpuMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::optional<int64_t> available;
  for (std::string line; std::getline(meminfo, line);) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (fields >> key >> kib && key == "MemAvailable:") available = kib * 1024;
  }
  if (!available.has_value()) return std::nullopt;
  std::ifstream max_file("/sys/fs/cgroup/memory.max"), current_file("/sys/fs/cgroup/memory.current");
  std::string max_text, current_text;
  int64_t limit = 0, current = 0;
  if (max_file >> max_text && current_file >> current_text && absl::SimpleAtoi(max_text, &limit) &&
      absl::SimpleAtoi(current_text, &current)) {
    available = std::min(*available, std::max<int64_t>(0, limit - current));
  }
  return available;
}

// The total memory of CUDA device `index` (as CUDA_VISIBLE_DEVICES numbers them) from the driver's API, loaded at
// run time so that CPU-only builds and machines need nothing; nullopt without a driver or such a device.
std::optional<int64_t> CudaMemoryBytes(int index) {
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);  // kept loaded: libtorch may use it too
  if (driver == nullptr) return std::nullopt;
  using Init = int (*)(unsigned int);
  using DeviceGet = int (*)(int*, int);
  using TotalMem = int (*)(size_t*, int);
  auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
  auto device_get = reinterpret_cast<DeviceGet>(dlsym(driver, "cuDeviceGet"));
  auto total_mem = reinterpret_cast<TotalMem>(dlsym(driver, "cuDeviceTotalMem_v2"));
  int device = 0;
  size_t bytes = 0;
  if (init == nullptr || device_get == nullptr || total_mem == nullptr || init(0) != 0 ||
      device_get(&device, index) != 0 || total_mem(&bytes, device) != 0) {
    return std::nullopt;
  }
  return static_cast<int64_t>(bytes);
}

}  // namespace

absl::StatusOr<ModelShape> ModelShapeOf(const config::ExperimentConfig& config) {
  const config::ModelConfig& m = config.model();
  if (m.architecture() == config::ModelConfig::DEEPSEEK_V32) {
    model::Dsv32Config c;
    if (m.has_pretrained_dir()) {
      SPARGO_ASSIGN_OR_RETURN(c, model::LoadDsv32Config(m.pretrained_dir() + "/config.json"));
    } else {
      const std::string spec = m.has_tokenizer() && !m.tokenizer().empty() ? m.tokenizer() : "byte";
      SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<const tokenizer::Tokenizer> tok, tokenizer::LoadTokenizer(spec));
      c = model::Dsv32ConfigFromModelConfig(m, tok->vocab_size());
    }
    ModelShape s = Dsv32Shape(c);
    if (m.indexer_precision() == config::ModelConfig::FP8) {
      // The indexer key as e4m3 bytes and a float32 scale (Dsv32Model::KvFields).
      s.cache_width -= c.index_head_dim;
      s.cache_fixed_bytes = c.index_head_dim + 4;
    }
    return s;
  }
  const std::string spec = m.has_tokenizer() && !m.tokenizer().empty() ? m.tokenizer() : "byte";
  SPARGO_ASSIGN_OR_RETURN(std::shared_ptr<const tokenizer::Tokenizer> tok, tokenizer::LoadTokenizer(spec));
  return TinyShape(m, tok->vocab_size());
}

std::vector<std::string> MemoryEstimate::Devices() const {
  std::vector<std::string> out;
  for (const MemoryPart& p : parts) {
    if (std::find(out.begin(), out.end(), p.device) == out.end()) out.push_back(p.device);
  }
  return out;
}

double MemoryEstimate::PeakBytes(const std::string& device) const {
  double held = 0;
  std::map<std::string, double> phases;
  for (const MemoryPart& p : parts) {
    if (p.device != device) continue;
    (p.phase.empty() ? held : phases[p.phase]) += p.bytes;
  }
  double largest = 0;
  for (const auto& [phase, bytes] : phases) largest = std::max(largest, bytes);
  return held + largest;
}

std::string MemoryEstimate::Summary() const {
  std::vector<std::string> out;
  for (const std::string& d : Devices()) {
    std::map<std::string, double> phases;
    for (const MemoryPart& p : parts) {
      if (p.device == d && !p.phase.empty()) phases[p.phase] += p.bytes;
    }
    auto top = std::max_element(phases.begin(), phases.end(),
                                [](const auto& a, const auto& b) { return a.second < b.second; });
    out.push_back(absl::StrCat(d, " ", Bytes(PeakBytes(d)),
                               top == phases.end() ? "" : absl::StrCat(" (", top->first, " ", Bytes(top->second), ")")));
  }
  return absl::StrJoin(out, ", ");
}

MemoryEstimate EstimateRunMemory(const config::ExperimentConfig& c, const ModelShape& s) {
  const config::LearnerConfig& l = c.learner();
  const config::RolloutConfig& r = c.rollout();
  const config::GrpoConfig& g = l.grpo();
  const std::string learner = DeviceName(l.device());
  const std::string reference = DeviceName(l.reference_device().empty() ? l.device() : l.reference_device());
  const std::string sampler = DeviceName(r.device().empty() ? l.device() : r.device());
  const double e = ElementBytes(l.dtype());
  const double e_sampler = r.dtype() == config::DTYPE_UNSPECIFIED ? e : ElementBytes(r.dtype());
  const double p = static_cast<double>(s.parameters), v = static_cast<double>(s.vocab_size);
  const bool local_learner = c.services().learner_address().empty();
  const bool local_rollout = r.workers_size() == 0;
  const bool indexer_trains = s.indexer_heads > 0 && l.aux_loss_weight() > 0;
  const bool bf16 = l.dtype() == config::BFLOAT16;

  MemoryEstimate out;
  const int64_t t = std::min<int64_t>(c.model().max_seq_len(), int64_t{r.max_new_tokens()} + 1);
  const int64_t minibatch_rows = int64_t{r.prompts_per_step()} / std::max(1, g.minibatches()) * r.group_size();
  const int64_t rows =
      g.micro_batch_rows() > 0 ? std::min<int64_t>(g.micro_batch_rows(), minibatch_rows) : minibatch_rows;
  out.sequence_tokens = t;
  out.micro_batch_rows = rows;
  auto add = [&out](const std::string& device, const char* phase, std::string what, double bytes) {
    out.parts.push_back({device, phase, std::move(what), bytes});
  };
  const double b = static_cast<double>(rows), tokens = static_cast<double>(t);
  const std::string batch = absl::StrCat(rows, " rows x ", t, " tokens (learner.grpo.micro_batch_rows or "
                                         "rollout.prompts_per_step / learner.grpo.minibatches x rollout.group_size; "
                                         "rollout.max_new_tokens + 1)");
  // Saved activations: per token, each layer's widths (and the training indexer's); per sequence, each layer's
  // attention maps. `widest` is one layer's, the widest, which the backward pass (or a recomputation) adds, with
  // its transient maps.
  const double indexer_width = indexer_trains ? s.indexer_token_width : 0;
  const LayerMaps maps = AttentionMaps(s, b, tokens, e, indexer_trains, absl::StartsWith(learner, "cuda"));
  const double widest = b * tokens * (s.token_width_max + indexer_width) * e + maps.kept + maps.transient;
  const double all_layers =
      b * tokens * (s.token_width_sum + s.num_layers * indexer_width) * e + s.num_layers * maps.kept;

  if (local_learner) {
    add(learner, "", absl::StrCat("policy weights (", s.parameters, " parameters, learner.dtype)"), p * e);
    if (bf16) add(learner, "", "float32 master weights", p * 4);
    add(learner, "", bf16 ? "gradients and their float32 copy" : "gradients", p * (bf16 ? e + 4 : e));
    add(learner, "", "AdamW moments (float32)", p * 8);
    // With activation checkpointing only the layers' inputs stay, and one layer is recomputed at a time.
    const double saved = l.activation_checkpointing() ? s.num_layers * b * tokens * s.hidden_size * e + 2 * widest
                                                      : all_layers + widest;
    add(learner, "update",
        absl::StrCat("activations of ", batch, l.activation_checkpointing() ? ", checkpointed" : ""), saved);
    add(learner, "update", "logits, float32 log-softmax and gradient", b * tokens * v * (12 + e));
  }
  if (NeedsReference(c)) {
    add(reference, "", "reference model (learner.grpo.kl_coef, domain_kl_coef or kl_metric)", p * e);
    add(reference, "reference pass", "reference forward of one micro-batch", widest + b * tokens * v * (8 + e));
  }
  if (local_rollout) {
    if (!local_learner || sampler != learner || e_sampler != e) {
      add(sampler, "", "rollout copy of the policy (rollout.device, rollout.dtype)", p * e_sampler);
    }
    // Decode caches at full length, and per row the float32 logits, probabilities and sorted ids of top-p.
    const double cache_token_bytes = s.num_layers * (s.cache_width * e_sampler + s.cache_fixed_bytes);
    const double per_row = tokens * cache_token_bytes + v * 20;
    const double sequences = static_cast<double>(r.prompts_per_step()) * r.group_size();
    add(sampler, "sampling",
        absl::StrCat("decode cache of ", r.prompts_per_step(), " x ", r.group_size(),
                     " sequences (rollout.prompts_per_step x rollout.group_size)"),
        sequences * per_row);
    const int64_t eval_new = c.eval().max_new_tokens() > 0 ? c.eval().max_new_tokens() : r.max_new_tokens();
    const double eval_tokens = static_cast<double>(std::min<int64_t>(c.model().max_seq_len(), eval_new + 1));
    const int64_t eval_rows =
        std::max<int64_t>(c.eval().heldout_prompts(), l.warmup().steps() > 0 ? l.warmup().probe_prompts() : 0);
    add(sampler, "evaluation",
        absl::StrCat("decode cache of ", eval_rows, " greedy sequences (eval.heldout_prompts, "
                     "learner.warmup.probe_prompts)"),
        eval_rows * (eval_tokens * cache_token_bytes + v * 20));
  }
  // The set-up builds the policy in float32 on the CPU and keeps a copy of its initial weights while it starts.
  add("cpu", "set-up", "policy built in float32 and its initial copy", p * 4 * (learner == "cpu" ? 1 : 2));
  return out;
}

std::optional<int64_t> DeviceMemoryBytes(const std::string& device) {
  if (device == "cpu") return CpuMemoryBytes();
  if (device != "cuda" && device.rfind("cuda:", 0) != 0) return std::nullopt;
  int index = 0;
  if (device != "cuda" && !absl::SimpleAtoi(device.substr(5), &index)) return std::nullopt;
  return CudaMemoryBytes(index);
}

absl::Status CheckEstimateFits(const MemoryEstimate& estimate,
                               const std::function<std::optional<int64_t>(const std::string&)>& capacity) {
  for (const std::string& device : estimate.Devices()) {
    const std::optional<int64_t> have = capacity(device);
    const double need = estimate.PeakBytes(device);
    if (!have.has_value() || need <= static_cast<double>(*have)) continue;
    // The parts on this device, largest first: what they are and the fields they grow with.
    std::vector<const MemoryPart*> on;
    for (const MemoryPart& p : estimate.parts) {
      if (p.device == device) on.push_back(&p);
    }
    std::sort(on.begin(), on.end(), [](const MemoryPart* a, const MemoryPart* b) { return a->bytes > b->bytes; });
    std::vector<std::string> items;
    for (size_t i = 0; i < on.size() && i < 4; ++i) {
      items.push_back(absl::StrCat(on[i]->what, ": ", Bytes(on[i]->bytes),
                                   on[i]->phase.empty() ? "" : absl::StrCat(" (", on[i]->phase, ")")));
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "memory estimate: the run needs about ", Bytes(need), " on ", device, ", which has ", Bytes(*have),
        "; largest parts: ", absl::StrJoin(items, "; "),
        ". Lower those fields (or set learner.activation_checkpointing), or set ", kOverrideVariable,
        "=1 to run anyway"));
  }
  return absl::OkStatus();
}

absl::Status CheckRunMemory(const config::ExperimentConfig& config) {
  absl::StatusOr<ModelShape> shape = ModelShapeOf(config);
  if (!shape.ok()) return absl::OkStatus();  // the set-up reports an unreadable model or tokenizer
  const MemoryEstimate estimate = EstimateRunMemory(config, *shape);
  SPARGO_LOG(INFO) << "memory estimate (" << shape->parameters << " parameters, " << estimate.micro_batch_rows
                   << " rows x " << estimate.sequence_tokens << " tokens per micro-batch): " << estimate.Summary();
  absl::Status fits = CheckEstimateFits(estimate, DeviceMemoryBytes);
  const char* ignore = std::getenv(kOverrideVariable);
  if (!fits.ok() && ignore != nullptr && std::string(ignore) != "" && std::string(ignore) != "0") {
    SPARGO_LOG(WARNING) << fits.message() << " (ignored: " << kOverrideVariable << "=" << ignore << ")";
    return absl::OkStatus();
  }
  return fits;
}

}  // namespace spargo::learner
