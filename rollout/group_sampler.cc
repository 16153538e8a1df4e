#include "rollout/group_sampler.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/counter_rng.h"
#include "common/status_macros.h"

namespace spargo::rollout {
namespace {

constexpr uint64_t kSamplingStream = 0x5a4d504c45ULL;
constexpr double kMinTemperature = 1e-3;
constexpr double kMaxTemperature = 100;

absl::Status Validate(const model::CausalLm& model, const std::vector<GroupRequest>& prompts,
                      const SamplingOptions& o) {
  if (o.group_size <= 0) return absl::InvalidArgumentError(absl::StrCat("group_size ", o.group_size, " <= 0"));
  if (o.max_new_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens ", o.max_new_tokens, " <= 0"));
  }
  // 0 decodes greedily; a positive temperature so small that logits / T overflow would give NaN log-probs.
  if (!(o.temperature == 0 || (o.temperature >= kMinTemperature && o.temperature <= kMaxTemperature))) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", o.temperature, " is not 0 (greedy) or in [",
                                                   kMinTemperature, ", ", kMaxTemperature, "]"));
  }
  if (o.vocab_limit < 0) return absl::InvalidArgumentError(absl::StrCat("vocab_limit ", o.vocab_limit, " < 0"));
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k ", o.top_k, " < 0"));
  if (!(o.top_p >= 0 && o.top_p <= 1)) return absl::InvalidArgumentError(absl::StrCat("top_p ", o.top_p, " not in [0, 1]"));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& ids = prompts[i].prompt_ids;
    if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " is empty"));
    if (static_cast<int64_t>(ids.size()) + o.max_new_tokens > model.max_seq_len()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " has ", ids.size(), " tokens; with ",
                                                     o.max_new_tokens, " new tokens it exceeds the model's ",
                                                     model.max_seq_len()));
    }
    for (int64_t id : ids) {
      if (id < 0 || id >= model.vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " has token id ", id, " outside [0, ",
                                                       model.vocab_size(), ")"));
      }
    }
  }
  return absl::OkStatus();
}

// On the CPU, whatever device the logits came from.
struct SampledRows {
  torch::Tensor tokens;    // [N] int64
  torch::Tensor logprobs;  // [N] float32
  torch::Tensor kept;      // [N, V] bool: the truncation's kept ids; undefined when nothing was truncated
};

// Samples one token per row of `logits` [N, V] float32, on the logits' device: only the rows' uniforms go there
// (drawn on the CPU from each row's counter RNG, so a draw does not depend on the device or the batch) and only
// the tokens, their log-probs and the recorded kept sets come back.
SampledRows SampleRows(torch::Tensor logits, const SamplingOptions& o, const std::vector<CounterRng*>& rngs) {
  if (o.vocab_limit > 0 && o.vocab_limit < logits.size(1)) logits = logits.narrow(1, 0, o.vocab_limit);
  if (o.temperature == 0) {
    torch::Tensor logp = torch::log_softmax(logits, -1);
    torch::Tensor tokens = logits.argmax(-1);  // [N]
    return {tokens.cpu(), logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).cpu(), {}};
  }
  torch::Tensor scaled = logits.to(torch::kDouble) / o.temperature;  // [N, V]
  const double inf = std::numeric_limits<double>::infinity();
  const bool truncated = (o.top_k > 0 && o.top_k < scaled.size(1)) || (o.top_p > 0 && o.top_p < 1);
  if (o.top_k > 0 && o.top_k < scaled.size(1)) {
    torch::Tensor kth = std::get<0>(scaled.topk(o.top_k, -1)).select(1, o.top_k - 1).unsqueeze(1);  // [N, 1]
    scaled = scaled.masked_fill(scaled < kth, -inf);
  }
  if (o.top_p > 0 && o.top_p < 1) {
    auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
    torch::Tensor probs = torch::softmax(sorted, -1);
    // Drop a token when the more likely ones already reach top_p (the most likely one always stays).
    torch::Tensor drop = (probs.cumsum(-1) - probs) >= o.top_p;
    scaled = scaled.scatter(1, order, sorted.masked_fill(drop, -inf));
  }
  torch::Tensor logp = torch::log_softmax(scaled, -1);  // [N, V]
  torch::Tensor cdf = logp.exp().cumsum(-1);                                               // [N, V]
  const int64_t n = logits.size(0);
  torch::Tensor uniform = torch::empty({n, 1}, torch::kDouble);  // [N, 1]
  auto acc = uniform.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) acc[i][0] = rngs[i]->Uniform();
  // Scaled by each row's total (1 up to rounding), so that the draw always falls inside the cdf.
  torch::Tensor u = uniform.to(cdf.device()) * cdf.narrow(1, cdf.size(1) - 1, 1);            // [N, 1]
  torch::Tensor tokens = torch::searchsorted(cdf, u).squeeze(-1).clamp_max(logits.size(1) - 1);  // [N]
  SampledRows out{tokens.cpu(), logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).to(torch::kFloat).cpu(), {}};
  if (truncated && o.record_kept) out.kept = torch::isfinite(scaled).cpu();  // [N, V]
  return out;
}

// Appends row r's kept ids (kept [N, V] bool) to `kept`.
void AppendKept(const torch::Tensor& kept, int64_t r, KeptTokens* out) {
  if (out->offsets.empty()) out->offsets.push_back(0);
  torch::Tensor ids = kept[r].nonzero().view({-1}).to(torch::kInt32);  // [K]
  const int32_t* data = ids.data_ptr<int32_t>();
  out->ids.insert(out->ids.end(), data, data + ids.numel());
  out->offsets.push_back(static_cast<int64_t>(out->ids.size()));
}

// An empty kept set for a token the sampler did not draw (an environment token).
void AppendNoKept(KeptTokens* out) {
  if (out->offsets.empty()) out->offsets.push_back(0);
  out->offsets.push_back(static_cast<int64_t>(out->ids.size()));
}

// Generates for prompts of one common length; fills out[i] for each index in `members`. False when o.stop ended it.
bool SampleBucket(model::CausalLm& model, const std::vector<GroupRequest>& prompts, const std::vector<size_t>& members,
                  const SamplingOptions& o, std::vector<SampleGroup>* out) {
  const int64_t p = static_cast<int64_t>(members.size());
  const int64_t g = o.group_size;
  const int64_t len = static_cast<int64_t>(prompts[members[0]].prompt_ids.size());
  // The model runs where its weights are, and so does sampling; the counter RNG and the bookkeeping stay on the CPU.
  const std::vector<torch::Tensor> params = model.parameters();
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
  torch::Tensor ids = torch::empty({p, len}, torch::kLong);  // [P, T]
  for (int64_t i = 0; i < p; ++i) {
    const auto& src = prompts[members[i]].prompt_ids;
    std::copy(src.begin(), src.end(), ids[i].data_ptr<int64_t>());
  }
  std::vector<CounterRng> rng_storage;
  rng_storage.reserve(p * g);
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t j = 0; j < g; ++j) {
      rng_storage.emplace_back(o.seed, std::initializer_list<uint64_t>{kSamplingStream, o.step,
                                                                         prompts[members[i]].sample_key,
                                                                         static_cast<uint64_t>(j)});
    }
  }
  std::vector<CounterRng*> rngs;
  for (auto& r : rng_storage) rngs.push_back(&r);

  if (o.stop && o.stop()) return false;
  std::unique_ptr<model::DecodeCache> cache = model.NewCache(p, len + o.max_new_tokens);
  if (o.record_choices) cache->RecordChoices();
  torch::Tensor logits = model.Decode(ids.to(device), cache.get()).select(1, len - 1).to(torch::kFloat);  // [P, V]
  cache->ExpandBatch(g);
  logits = logits.repeat_interleave(g, 0);  // [P*G, V]

  std::vector<SampleRecord> samples(p * g);
  for (int64_t r = 0; r < p * g; ++r) {
    const GroupRequest& request = prompts[members[r / g]];
    samples[r].prompt_id = request.prompt_id;
    samples[r].index = static_cast<int>(r % g);
    samples[r].domain = request.domain;
    samples[r].prompt_ids = request.prompt_ids;
    samples[r].policy_version = o.policy_version;
  }
  std::vector<bool> done(p * g, false);
  std::vector<std::deque<int64_t>> forced(p * g);  // environment tokens still to feed, per row
  std::vector<int64_t> turn_start(p * g, 0);       // where each row's current turn began in its completion
  torch::Tensor tokens = torch::empty({p * g}, torch::kLong);  // [P*G] what each row feeds next
  for (int step = 0; step < o.max_new_tokens; ++step) {
    SampledRows drawn = SampleRows(logits, o, rngs);
    auto tok = drawn.tokens.accessor<int64_t, 1>();
    auto lp = drawn.logprobs.accessor<float, 1>();
    auto next = tokens.accessor<int64_t, 1>();
    bool all_done = true;
    for (int64_t r = 0; r < p * g; ++r) {
      SampleRecord& s = samples[r];
      if (done[r]) {
        next[r] = o.pad_id;  // finished rows keep decoding padding; their output is ignored
        continue;
      }
      if (!forced[r].empty()) {  // an environment token: fed, not sampled
        next[r] = forced[r].front();
        forced[r].pop_front();
        s.completion_ids.push_back(next[r]);
        s.logprobs.push_back(0.0f);
        s.env_token_mask.push_back(1);
        if (drawn.kept.defined()) AppendNoKept(&s.kept);
        if (forced[r].empty()) turn_start[r] = static_cast<int64_t>(s.completion_ids.size());
        all_done = false;
        continue;
      }
      next[r] = tok[r];
      s.completion_ids.push_back(tok[r]);
      s.logprobs.push_back(lp[r]);
      if (o.episodes != nullptr) s.env_token_mask.push_back(0);
      if (drawn.kept.defined()) AppendKept(drawn.kept, r, &s.kept);
      if (tok[r] == o.eos_id || std::find(o.stop_ids.begin(), o.stop_ids.end(), tok[r]) != o.stop_ids.end()) {
        std::optional<std::vector<int64_t>> insert;
        if (o.episodes != nullptr) insert = o.episodes->EndOfTurn(&s, turn_start[r]);
        if (insert.has_value() && !insert->empty()) {
          if (static_cast<int64_t>(s.completion_ids.size() + insert->size()) >= o.max_new_tokens) {
            s.episode_end = "length";  // no room left for the results and a reply
            s.finish = SampleFinish::kLength;
            done[r] = true;
          } else {
            forced[r].assign(insert->begin(), insert->end());
          }
        } else {
          done[r] = true;
          s.finish = SampleFinish::kStop;
          s.final_turn_start = turn_start[r];
        }
      }
      all_done = all_done && done[r];
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    if (o.stop && o.stop()) return false;
    logits = model.Decode(tokens.unsqueeze(1).to(device), cache.get()).select(1, 0).to(torch::kFloat);
  }
  for (int64_t r = 0; r < p * g; ++r) {
    if (done[r]) continue;
    samples[r].final_turn_start = turn_start[r];
    if (o.episodes != nullptr && samples[r].episode_end.empty()) samples[r].episode_end = "length";
  }
  if (o.record_choices) {
    for (int64_t r = 0; r < p * g; ++r) {
      samples[r].choices = cache->Choices(r, len + static_cast<int64_t>(samples[r].completion_ids.size()) - 1);
    }
  }
  for (int64_t i = 0; i < p; ++i) {
    auto& group = (*out)[members[i]];
    group.assign(samples.begin() + i * g, samples.begin() + (i + 1) * g);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<SampleGroup>> SampleGroups(model::CausalLm& model, const std::vector<GroupRequest>& prompts,
                                                      const SamplingOptions& options) {
  SPARGO_RETURN_IF_ERROR(Validate(model, prompts, options));
  std::map<size_t, std::vector<size_t>> buckets;  // prompt length -> prompt indices
  for (size_t i = 0; i < prompts.size(); ++i) buckets[prompts[i].prompt_ids.size()].push_back(i);
  std::vector<SampleGroup> out(prompts.size());
  bool finished = true;
  SPARGO_RETURN_IF_ERROR(CallCatching("sampling", [&] {
    torch::NoGradGuard no_grad;
    for (const auto& [len, members] : buckets) {
      finished = SampleBucket(model, prompts, members, options, &out);
      if (!finished) return;
    }
  }));
  if (!finished) return absl::CancelledError("sampling stopped: the caller gave up");
  return out;
}

}  // namespace spargo::rollout
