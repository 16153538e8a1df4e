#include "rollout/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "rollout/choice_rows.h"
#include "rollout/device_rows.h"
#include "rollout/token_sampler.h"

namespace spargo::rollout {
namespace {

constexpr double kMinTemperature = 1e-3;
constexpr double kMaxTemperature = 100;

absl::Status Validate(const model::CausalLm& model, const std::vector<GroupRequest>& prompts,
                      const std::vector<int>& group_sizes, const SamplingOptions& o) {
  if (group_sizes.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat(group_sizes.size(), " group sizes for ", prompts.size(), " prompts"));
  }
  for (size_t i = 0; i < group_sizes.size(); ++i) {
    if (group_sizes[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("group_size ", group_sizes[i], " <= 0 (prompt ", i, ")"));
    }
  }
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

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks one request may take: its prompt's, and for each sample the blocks from the prompt's last (partial,
// copied on write) one up to the last position a sample feeds (prompt + max_new_tokens - 1).
int64_t RequestWorstCase(int64_t prompt, int64_t group, int64_t max_new, int64_t bs) {
  return CeilDiv(prompt, bs) + group * std::max<int64_t>(0, CeilDiv(prompt + max_new - 1, bs) - prompt / bs);
}

// Appends row r's kept ids (kept [N, V] bool) to `out`.
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

torch::TensorOptions CacheOptions(const model::CausalLm& model) {
  for (const torch::Tensor& p : model.parameters()) {
    if (p.is_floating_point()) return p.options().requires_grad(false);
  }
  return torch::TensorOptions().dtype(torch::kFloat);
}

}  // namespace

// One Generate call.
struct GenerationEngine::Call {
  const SamplingOptions* options = nullptr;
  TokenSampling sampling;
  bool records_kept = false;  // kept sets are recorded (truncation on and asked for)
  std::vector<SampleGroup>* out = nullptr;
  int64_t remaining = 0;  // requests not finished
  absl::Status status;
  bool done = false;
};

// One prompt of a call.
struct GenerationEngine::Request {
  Call* call = nullptr;
  size_t index = 0;
  const GroupRequest* prompt = nullptr;
  int group_size = 0;
  int64_t reserved = 0;  // blocks of its reservation not yet used
  int64_t live = 0;      // sequences running
  int64_t environments = 0;  // environment turns not yet applied
  bool admitted = false;
  std::vector<SampleRecord> samples;
  std::list<std::unique_ptr<Request>>::iterator self;
};

// A prompt being fed (sample -1) or one sample.
struct GenerationEngine::Sequence {
  Request* request = nullptr;
  int sample = -1;
  std::vector<int64_t> blocks;  // the block table
  int64_t cached = 0;           // tokens in the cache
  std::vector<int64_t> pending;  // tokens to feed, in order
  int64_t turn_start = 0;
  bool finished = false;
  ChoiceRows choices;           // when recording: the choices of positions [0, cached)
  int64_t slot = -1;            // its row in device_rows_, from its first model call on
  uint64_t prefix_key = 0;  // the prompt's full blocks published or found so far: their chain key and count
  int64_t prefix_blocks = 0;
};

absl::StatusOr<std::unique_ptr<GenerationEngine>> GenerationEngine::Create(model::CausalLm* model,
                                                                           const EngineOptions& options) {
  if (model->KvFieldDims().empty()) {
    return absl::InvalidArgumentError("the model has no paged decoding; the engine cannot run it");
  }
  if (options.block_size <= 0 || options.max_rows <= 0 || options.prefill_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("engine: block_size ", options.block_size, ", max_rows ",
                                                   options.max_rows, " and prefill_tokens ", options.prefill_tokens,
                                                   " must be positive"));
  }
  if (options.prefix_choice_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("engine: prefix_choice_bytes ", options.prefix_choice_bytes,
                                                   " < 0"));
  }
  const torch::TensorOptions cache = CacheOptions(*model);
  const std::vector<model::KvFieldSpec> fields = model->KvFields(cache.dtype().toScalarType());
  int64_t blocks = options.num_blocks;
  if (blocks <= 0) {
    const int64_t per_block = model::KvPool::BytesPerBlock(model->num_kv_layers(), fields, options.block_size);
    blocks = options.cache_bytes / per_block;
    if (blocks <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("engine: a cache of ", options.cache_bytes,
                                                     " bytes holds no block of ", per_block, " bytes"));
    }
  }
  std::optional<DecodeGraphs::Mode> graphs;
  if (options.graphs == DecodeGraphMode::kEagerPadded) graphs = DecodeGraphs::Mode::kEager;
  if (options.graphs == DecodeGraphMode::kAuto && cache.device().is_cuda() && DecodeGraphs::CaptureCompiled() &&
      model->CapturablePagedDecode()) {
    const char* env = std::getenv("SPARGO_CUDA_GRAPHS");
    if (env == nullptr || std::string(env) != "0") graphs = DecodeGraphs::Mode::kCapture;
  }
  std::unique_ptr<model::KvPool> pool;
  SPARGO_RETURN_IF_ERROR(CallCatching("engine cache", [&] {
    // With padding, one more block: block 0, the padding rows' scratch block.
    pool = std::make_unique<model::KvPool>(model->num_kv_layers(), fields, blocks + (graphs ? 1 : 0),
                                           options.block_size, cache.device());
  }));
  return std::unique_ptr<GenerationEngine>(new GenerationEngine(model, options, std::move(pool), graphs));
}

int64_t GenerationEngine::WorstCaseBlocks(const std::vector<GroupRequest>& prompts, const SamplingOptions& options,
                                          int64_t block_size) {
  int64_t n = 0;
  for (const GroupRequest& p : prompts) {
    n += RequestWorstCase(static_cast<int64_t>(p.prompt_ids.size()), std::max(options.group_size, 0),
                          std::max(options.max_new_tokens, 1), block_size);
  }
  return n;
}

GenerationEngine::GenerationEngine(model::CausalLm* model, const EngineOptions& options,
                                   std::unique_ptr<model::KvPool> pool, std::optional<DecodeGraphs::Mode> graphs)
    : model_(model),
      options_(options),
      pool_(std::move(pool)),
      device_(pool_->field(0, 0).device()),
      blocks_(pool_->num_blocks(), graphs ? 1 : 0),
      prefix_choices_(pool_->num_blocks(), options.prefix_choice_bytes),
      device_rows_(device_),
      graphs_(graphs ? std::make_unique<DecodeGraphs>(model, pool_.get(), *graphs) : nullptr),
      kept_out_(graphs ? 1 : 0) {}

GenerationEngine::~GenerationEngine() = default;

int64_t GenerationEngine::num_blocks() const { return pool_->num_blocks() - kept_out_; }

DecodeGraphMode GenerationEngine::decode_graph_mode() const {
  if (graphs_ == nullptr) return DecodeGraphMode::kOff;
  return graphs_->mode() == DecodeGraphs::Mode::kCapture ? DecodeGraphMode::kAuto : DecodeGraphMode::kEagerPadded;
}

EngineStats GenerationEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.waiting_requests = static_cast<int64_t>(waiting_.size());
  return s;
}

absl::StatusOr<std::vector<SampleGroup>> GenerationEngine::Generate(const std::vector<GroupRequest>& prompts,
                                                                    const SamplingOptions& options) {
  if (options.group_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("group_size ", options.group_size, " <= 0"));
  }
  return Generate(prompts, std::vector<int>(prompts.size(), options.group_size), options);
}

absl::StatusOr<std::vector<SampleGroup>> GenerationEngine::Generate(const std::vector<GroupRequest>& prompts,
                                                                    const std::vector<int>& group_sizes,
                                                                    const SamplingOptions& options) {
  SPARGO_RETURN_IF_ERROR(Validate(*model_, prompts, group_sizes, options));
  const int64_t bs = options_.block_size;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t need = RequestWorstCase(static_cast<int64_t>(prompts[i].prompt_ids.size()), group_sizes[i],
                                          options.max_new_tokens, bs);
    if (need > num_blocks()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "prompt ", i, " (", prompts[i].prompt_ids.size(), " tokens, ", group_sizes[i], " samples of up to ",
          options.max_new_tokens, " tokens) needs up to ", need, " cache blocks of ", bs,
          " tokens; the engine's cache has ", num_blocks()));
    }
  }
  std::vector<SampleGroup> out(prompts.size());
  Call call;
  call.options = &options;
  call.sampling = TokenSampling{options.temperature, options.top_k, options.top_p, options.vocab_limit,
                                options.record_kept};
  const bool truncates = options.temperature != 0 && ((options.top_k > 0 && options.top_k < model_->vocab_size()) ||
                                                      (options.top_p > 0 && options.top_p < 1));
  call.records_kept = options.record_kept && truncates;
  call.out = &out;
  call.remaining = static_cast<int64_t>(prompts.size());
  std::unique_lock<std::mutex> lock(mu_);
  if (prompts.empty()) return out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto r = std::make_unique<Request>();
    r->call = &call;
    r->index = i;
    r->prompt = &prompts[i];
    r->group_size = group_sizes[i];
    Request* raw = r.get();
    requests_.push_back(std::move(r));
    raw->self = std::prev(requests_.end());
    waiting_.push_back(raw);
  }
  while (!call.done) {
    const bool work = admitted_ > 0 || (!waiting_.empty() && !exclusive_);
    if (!driving_ && work) {
      driving_ = true;
      const int64_t calls_done = calls_done_;
      lock.unlock();
      const bool busy = StepCatching();
      lock.lock();
      driving_ = false;
      // This thread drives the next step too unless its call is done: the others (dozens of a server's calls) are
      // woken only when a call is done (theirs may be), a weight update waits, or this thread stops.
      if (call.done || !busy || exclusive_ || calls_done_ != calls_done) cv_.notify_all();
      // Only environments running: wait for one to come back (or a new request), checking stops now and then.
      if (!busy && !call.done) cv_.wait_for(lock, std::chrono::milliseconds(10));
    } else {
      cv_.wait(lock);
    }
  }
  if (!call.status.ok()) return call.status;
  return out;
}

void GenerationEngine::MarkDone(Call* call) {
  call->done = true;
  ++calls_done_;
}

absl::Status GenerationEngine::Exclusive(const std::function<absl::Status()>& fn) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !exclusive_; });
  exclusive_ = true;
  cv_.wait(lock, [&] { return admitted_ == 0 && !driving_; });
  driving_ = true;
  lock.unlock();
  absl::Status status = CallCatching("engine exclusive", fn);
  // The captured graphs stay: before each decode call they check the weights' addresses and versions, dropping
  // themselves when the weights moved and running one call eagerly when they changed in place
  // (rollout/decode_graphs.h), so a weight update costs no capture.
  blocks_.ClearPrefixes();
  prefix_choices_.Clear();
  lock.lock();
  stats_.prefix_choice_blocks = 0;
  stats_.prefix_choice_bytes = 0;
  driving_ = false;
  exclusive_ = false;
  cv_.notify_all();
  return status;
}

bool GenerationEngine::StepCatching() {
  bool busy = true;
  absl::Status status = CallCatching("generation", [&] {
    torch::NoGradGuard no_grad;
    busy = Step();
  });
  if (!status.ok()) FailAll(status);
  return busy;
}

void GenerationEngine::WaitForEnvironments() {
  std::unique_lock<std::mutex> lock(env_mu_);
  env_cv_.wait(lock, [&] { return env_running_ == 0; });
}

bool GenerationEngine::ApplyEnvironmentResults() {
  std::vector<EnvironmentResult> done;
  {
    std::lock_guard<std::mutex> lock(env_mu_);
    done.swap(env_done_);
  }
  for (EnvironmentResult& r : done) {
    --r.sequence->request->environments;
    AfterTurn(r.sequence, r.token, std::move(r.insert));
  }
  return !done.empty();
}

void GenerationEngine::FailAll(const absl::Status& status) {
  // The pool's bookkeeping may be half-way through the failed step: every admitted request fails and the blocks
  // start over (waiting requests keep their place). Environment turns write into the samples: they finish first.
  WaitForEnvironments();
  {
    std::lock_guard<std::mutex> lock(env_mu_);
    env_done_.clear();
  }
  running_.clear();
  blocks_ = BlockManager(pool_->num_blocks(), kept_out_);
  if (graphs_ != nullptr) CallCatching("engine graphs", [&] { graphs_->Clear(); }).IgnoreError();
  prefix_choices_.Clear();
  device_rows_.Reset();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.prefix_choice_blocks = 0;
  stats_.prefix_choice_bytes = 0;
  for (auto it = requests_.begin(); it != requests_.end();) {
    Request* r = it->get();
    if (!r->admitted) {
      ++it;
      continue;
    }
    r->call->status = status;
    if (--r->call->remaining == 0) MarkDone(r->call);
    --admitted_;
    it = requests_.erase(it);
  }
  // A call with requests still waiting is failed as a whole: drop those too.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    Request* r = *it;
    if (r->call->status.ok()) {
      ++it;
      continue;
    }
    if (--r->call->remaining == 0) MarkDone(r->call);
    requests_.erase(r->self);
    it = waiting_.erase(it);
  }
  cv_.notify_all();
}

void GenerationEngine::CancelStopped() {
  std::vector<Call*> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& r : requests_) {
      if (r->call->options->stop && std::find(calls.begin(), calls.end(), r->call) == calls.end()) {
        calls.push_back(r->call);
      }
    }
  }
  for (Call* call : calls) {
    if (!call->options->stop()) continue;
    bool environments = false;
    for (const auto& s : running_) environments = environments || (s->request->call == call && s->request->environments > 0);
    if (environments) continue;  // cancelled at a later step, once its environment turns are back
    for (auto& s : running_) {
      if (s->request->call == call && !s->finished) {
        if (s->slot >= 0) device_rows_.Release(s->slot);
        s->slot = -1;
        for (int64_t b : s->blocks) blocks_.Unref(b);
        s->blocks.clear();
        s->finished = true;
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    call->status = absl::CancelledError("sampling stopped: the caller gave up");
    for (auto it = requests_.begin(); it != requests_.end();) {
      Request* r = it->get();
      if (r->call != call) {
        ++it;
        continue;
      }
      if (r->admitted) {
        blocks_.Unreserve(r->reserved);
        --admitted_;
      } else {
        waiting_.remove(r);
      }
      it = requests_.erase(it);
    }
    call->remaining = 0;
    MarkDone(call);
  }
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->finished; });
}

void GenerationEngine::Admit() {
  std::lock_guard<std::mutex> lock(mu_);
  if (exclusive_) return;
  const int64_t bs = options_.block_size;
  while (!waiting_.empty()) {
    Request* r = waiting_.front();
    const SamplingOptions& o = *r->call->options;
    const std::vector<int64_t>& prompt = r->prompt->prompt_ids;
    const int64_t p = static_cast<int64_t>(prompt.size());
    const int64_t need = RequestWorstCase(p, r->group_size, o.max_new_tokens, bs);
    if (!blocks_.Reserve(need)) {
      ++stats_.waits;
      break;
    }
    waiting_.pop_front();
    r->admitted = true;
    r->reserved = need;
    r->live = 1;
    r->samples.resize(r->group_size);
    ++admitted_;
    auto s = std::make_unique<Sequence>();
    s->request = r;
    // Full blocks of the prompt already in the prefix cache (at least one token is left to feed: its logits start
    // the samples); a recording request takes only blocks with kept choices, and their choices.
    if (options_.prefix_cache) {
      while ((s->prefix_blocks + 1) * bs < p) {
        absl::Span<const int64_t> tokens(prompt.data() + s->prefix_blocks * bs, bs);
        const uint64_t key = BlockManager::ChainKey(s->prefix_key, tokens);
        const std::optional<int64_t> found = blocks_.Find(key, s->prefix_key, tokens);
        if (!found.has_value() || (o.record_choices && !prefix_choices_.Has(*found))) break;
        s->blocks.push_back(*blocks_.Lookup(key, s->prefix_key, tokens));  // with a reference
        --r->reserved;
        if (o.record_choices) s->choices.Append(prefix_choices_.Get(*found), bs);
        s->prefix_key = key;
        ++s->prefix_blocks;
      }
      s->cached = s->prefix_blocks * bs;
      stats_.prefix_hit_tokens += s->cached;
      if (o.record_choices) stats_.recorded_prefix_hit_tokens += s->cached;
    }
    s->pending.assign(prompt.begin() + s->cached, prompt.end());
    running_.push_back(std::move(s));
  }
  stats_.max_running = std::max<int64_t>(stats_.max_running, static_cast<int64_t>(running_.size()));
}

bool GenerationEngine::Step() {
  const auto started = std::chrono::steady_clock::now();
  draw_seconds_ = 0;
  const bool applied = ApplyEnvironmentResults();
  CancelStopped();
  Admit();
  std::vector<Sequence*> decode, prefill;
  std::vector<int64_t> decode_n, prefill_n;
  int64_t budget = options_.prefill_tokens;
  for (auto& s : running_) {
    const int64_t n = static_cast<int64_t>(s->pending.size());
    if (n == 0) continue;
    if (n == 1) {
      if (static_cast<int64_t>(decode.size()) < options_.max_rows) {
        decode.push_back(s.get());
        decode_n.push_back(1);
      }
    } else if (budget > 0 && static_cast<int64_t>(prefill.size()) < options_.max_rows) {
      const int64_t take = std::min(n, budget);
      budget -= take;
      prefill.push_back(s.get());
      prefill_n.push_back(take);
    }
  }
  std::vector<std::pair<Sequence*, int64_t>> ready;
  std::vector<torch::Tensor> lasts;
  int64_t offset = 0;
  for (auto [rows, counts] : {std::make_pair(&decode, &decode_n), std::make_pair(&prefill, &prefill_n)}) {
    if (rows->empty()) continue;
    torch::Tensor last;
    std::vector<std::pair<Sequence*, int64_t>> fed;
    Feed(*rows, *counts, &last, &fed);
    for (auto& [s, row] : fed) ready.emplace_back(s, row + offset);
    offset += last.size(0);
    lasts.push_back(last);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
    if (!decode.empty()) ++stats_.decode_calls;
    if (!prefill.empty()) ++stats_.prefill_calls;
    for (int64_t n : decode_n) stats_.decoded_tokens += n;
    for (int64_t n : prefill_n) stats_.prefilled_tokens += n;
    stats_.prefix_choice_blocks = prefix_choices_.blocks();
    stats_.prefix_choice_bytes = prefix_choices_.bytes();
    if (graphs_ != nullptr) {
      stats_.decode_graphs = graphs_->graphs();
      stats_.graph_replays = graphs_->replays();
      stats_.decode_weight_refreshes = graphs_->weight_refreshes();
    }
  }
  if (!ready.empty()) SampleReady(ready, lasts.size() == 1 ? lasts[0] : torch::cat(lasts, 0));
  running_.remove_if([](const std::unique_ptr<Sequence>& s) { return s->finished; });
  const bool busy = applied || !decode.empty() || !prefill.empty();
  if (busy) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::lock_guard<std::mutex> lock(mu_);
    stats_.step_seconds += seconds;
    stats_.draw_seconds += draw_seconds_;
  }
  return busy;
}

void GenerationEngine::EnsureWritable(Sequence* s, int64_t from, int64_t to) {
  const int64_t bs = options_.block_size;
  for (int64_t i = from / bs; i <= (to - 1) / bs; ++i) {
    if (i == static_cast<int64_t>(s->blocks.size())) {
      s->blocks.push_back(AllocateBlock(s));
    } else if (blocks_.refs(s->blocks[i]) > 1) {  // shared: copy before writing
      const int64_t copy = AllocateBlock(s);
      pool_->CopyBlock(s->blocks[i], copy);
      blocks_.Unref(s->blocks[i]);
      s->blocks[i] = copy;
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.copied_blocks;
    }
  }
}

int64_t GenerationEngine::AllocateBlock(Sequence* s) {
  const int64_t block = blocks_.Allocate();
  --s->request->reserved;
  prefix_choices_.Forget(block);  // an evicted prefix's
  return block;
}

void GenerationEngine::PublishPrompt(Sequence* s) {
  const int64_t bs = options_.block_size;
  const bool record = s->request->call->options->record_choices;
  const std::vector<int64_t>& prompt = s->request->prompt->prompt_ids;
  const int64_t full = std::min<int64_t>(s->cached, static_cast<int64_t>(prompt.size())) / bs;
  while (s->prefix_blocks < full) {
    absl::Span<const int64_t> tokens(prompt.data() + s->prefix_blocks * bs, bs);
    const uint64_t key = BlockManager::ChainKey(s->prefix_key, tokens);
    const int64_t holder = blocks_.Publish(key, s->prefix_key, tokens, s->blocks[s->prefix_blocks]);
    // The block that holds this prefix (ours, or an earlier publisher's that did not record) gets its choices.
    if (record && holder >= 0 && !prefix_choices_.Has(holder)) {
      prefix_choices_.Keep(holder, s->choices.Slice(s->prefix_blocks * bs, bs));  // none beyond the budget
    }
    s->prefix_key = key;
    ++s->prefix_blocks;
  }
}

void GenerationEngine::Feed(const std::vector<Sequence*>& rows, const std::vector<int64_t>& counts,
                            torch::Tensor* last, std::vector<std::pair<Sequence*, int64_t>>* ready) {
  const int64_t b = static_cast<int64_t>(rows.size());
  bool record = false;
  for (int64_t i = 0; i < b; ++i) {
    EnsureWritable(rows[i], rows[i]->cached, rows[i]->cached + counts[i]);
    record = record || rows[i]->request->call->options->record_choices;
  }
  // The block tables and lengths live on the device (rollout/device_rows.h): only changes and the tokens travel.
  std::vector<DeviceRows::Row> inputs(b);
  for (int64_t i = 0; i < b; ++i) {
    Sequence* s = rows[i];
    if (s->slot < 0) s->slot = device_rows_.Acquire();
    inputs[i] = DeviceRows::Row{s->slot, &s->blocks, s->cached, s->pending.data(), counts[i]};
  }
  // A decode call (one token per row) has no padding: DecodePagedFull, without host synchronisation; padded to a
  // captured graph's shape where graphs are on. Prefill chunks go through DecodePaged.
  const bool decode = std::all_of(counts.begin(), counts.end(), [](int64_t n) { return n == 1; });
  model::TokenChoices recorded;
  torch::Tensor logits;  // [B or padded, T, V]
  DeviceRows::Call call;
  if (decode && graphs_ != nullptr) {
    int64_t width = 1;
    for (Sequence* s : rows) width = std::max(width, static_cast<int64_t>(s->blocks.size()));
    call = device_rows_.Prepare(inputs, DecodeGraphs::PadRows(b, options_.max_rows), DecodeGraphs::PadWidth(width));
    // Static output buffers, read before the next decode call.
    logits = graphs_->Run(call.ids, call.paged, record ? &recorded : nullptr);
  } else {
    call = device_rows_.Prepare(inputs);
    logits = decode ? model_->DecodePagedFull(call.ids, call.paged, pool_.get(), record ? &recorded : nullptr)
                    : model_->DecodePaged(call.ids, call.paged, pool_.get(), record ? &recorded : nullptr);
  }
  device_rows_.Advance(call);
  if (decode) {
    *last = logits.narrow(0, 0, b).select(1, 0);  // [B, V]
  } else {
    *last = logits.index({torch::arange(b, call.last.options()), call.last});  // [B, V]
  }
  std::map<std::string, torch::Tensor> host;
  for (auto& [name, tensor] : recorded) host[name] = tensor.cpu();  // [B, T, width]
  for (int64_t i = 0; i < b; ++i) {
    Sequence* s = rows[i];
    const int64_t n = counts[i];
    if (s->request->call->options->record_choices) {
      model::TokenChoices fed;
      for (auto& [name, tensor] : host) fed[name] = tensor[i].narrow(0, 0, n).clone();  // [n, width]
      s->choices.Append(fed, n);
    }
    s->cached += n;
    s->pending.erase(s->pending.begin(), s->pending.begin() + n);
    if (s->sample < 0 && options_.prefix_cache) PublishPrompt(s);
    if (s->pending.empty()) ready->emplace_back(s, i);
  }
}

void GenerationEngine::SampleReady(const std::vector<std::pair<Sequence*, int64_t>>& ready, const torch::Tensor& last) {
  // One draw for every ready row whose call samples the same way (temperature, truncation, vocabulary, kept sets):
  // concurrent calls with equal options (a learner's requests, a server's clients) share the step's one draw and
  // its one host copy. Each row's uniform is its own call's (seed, step, key, sample, token): a draw depends not on
  // the rows drawn beside it. A ready prompt draws its G samples' first tokens.
  std::vector<std::pair<TokenSampling, std::vector<std::pair<Sequence*, int64_t>>>> draws;
  for (const auto& entry : ready) {
    TokenSampling t = entry.first->request->call->sampling;
    if (t.temperature == 0) t = TokenSampling{0, 0, 1, t.vocab_limit, false};  // greedy: nothing else matters
    auto same = std::find_if(draws.begin(), draws.end(), [&](const auto& d) {
      return d.first.temperature == t.temperature && d.first.top_k == t.top_k && d.first.top_p == t.top_p &&
             d.first.vocab_limit == t.vocab_limit && d.first.record_kept == t.record_kept;
    });
    if (same == draws.end()) {
      draws.emplace_back(t, std::vector<std::pair<Sequence*, int64_t>>());
      same = std::prev(draws.end());
    }
    same->second.push_back(entry);
  }
  for (auto& [sampling, entries] : draws) {
    std::vector<int64_t> rows;
    std::vector<double> uniforms;
    for (auto& [s, row] : entries) {
      const SamplingOptions& o = *s->request->call->options;
      const uint64_t key = s->request->prompt->sample_key;
      if (s->sample < 0) {
        for (int g = 0; g < s->request->group_size; ++g) {
          rows.push_back(row);
          uniforms.push_back(SampleUniform(o.seed, o.step, key, g, 0));
        }
      } else {
        rows.push_back(row);
        const auto t = static_cast<uint64_t>(s->request->samples[s->sample].completion_ids.size());
        uniforms.push_back(SampleUniform(o.seed, o.step, key, static_cast<uint64_t>(s->sample), t));
      }
    }
    // The rows in order, each once (a decode step of equal options): the logits as they are, no index to send.
    bool identity = static_cast<int64_t>(rows.size()) == last.size(0);
    for (size_t i = 0; identity && i < rows.size(); ++i) identity = rows[i] == static_cast<int64_t>(i);
    torch::Tensor picked = last;
    if (!identity) {
      torch::Tensor index = torch::empty({static_cast<int64_t>(rows.size())},
                                         torch::TensorOptions().dtype(torch::kLong).pinned_memory(last.is_cuda()));
      std::copy(rows.begin(), rows.end(), index.data_ptr<int64_t>());
      picked = last.index_select(0, index.to(last.device(), /*non_blocking=*/true));
    }
    const auto drawing = std::chrono::steady_clock::now();
    SampledRows drawn = SampleRows(picked, sampling, uniforms);
    draw_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - drawing).count();
    auto tok = drawn.tokens.accessor<int64_t, 1>();
    auto lp = drawn.logprobs.accessor<float, 1>();
    int64_t k = 0;
    for (auto& [s, row] : entries) {
      if (s->sample >= 0) {
        Accept(s, tok[k], lp[k], drawn.kept, k);
        ++k;
        continue;
      }
      // Fork: the samples share the prompt's blocks (each reference counted) and its recorded choices.
      Request* r = s->request;
      for (int g = 0; g < r->group_size; ++g, ++k) {
        auto sample = std::make_unique<Sequence>();
        sample->request = r;
        sample->sample = g;
        sample->blocks = s->blocks;
        for (int64_t block : s->blocks) blocks_.Ref(block);
        sample->cached = s->cached;
        sample->choices = s->choices;
        SampleRecord& rec = r->samples[g];
        rec.prompt_id = r->prompt->prompt_id;
        rec.index = g;
        rec.domain = r->prompt->domain;
        rec.prompt_ids = r->prompt->prompt_ids;
        rec.policy_version = r->call->options->policy_version;
        ++r->live;
        Sequence* raw = sample.get();
        running_.push_back(std::move(sample));
        Accept(raw, tok[k], lp[k], drawn.kept, k);
      }
      Release(s);
    }
  }
}

void GenerationEngine::Accept(Sequence* s, int64_t token, float logprob, const torch::Tensor& kept, int64_t kept_row) {
  Call* call = s->request->call;
  const SamplingOptions& o = *call->options;
  SampleRecord& rec = s->request->samples[s->sample];
  rec.completion_ids.push_back(token);
  rec.logprobs.push_back(logprob);
  if (o.episodes != nullptr) rec.env_token_mask.push_back(0);
  if (kept.defined()) AppendKept(kept, kept_row, &rec.kept);
  const int64_t length = static_cast<int64_t>(rec.completion_ids.size());
  const bool stop =
      token == o.eos_id || std::find(o.stop_ids.begin(), o.stop_ids.end(), token) != o.stop_ids.end();
  if (stop) {
    if (o.episodes == nullptr) {
      AfterTurn(s, token, std::nullopt);
      return;
    }
    if (options_.environment_threads <= 0) {
      AfterTurn(s, token, o.episodes->EndOfTurn(&rec, s->turn_start));
      return;
    }
    // The environment runs off the step; this sequence waits (nothing pending) while the others go on.
    if (env_pool_ == nullptr) env_pool_ = std::make_unique<ThreadPool>(options_.environment_threads);
    ++s->request->environments;
    {
      std::lock_guard<std::mutex> lock(env_mu_);
      ++env_running_;
    }
    Episodes* episodes = o.episodes;
    SampleRecord* record = &rec;
    const int64_t turn_start = s->turn_start;
    env_pool_->Schedule([this, s, token, episodes, record, turn_start] {
      std::optional<std::vector<int64_t>> insert;
      try {
        insert = episodes->EndOfTurn(record, turn_start);
      } catch (const std::exception& e) {  // drivers report failures as tool results; this is a last resort
        record->episode_end = std::string("environment error: ") + e.what();
      }
      {
        std::lock_guard<std::mutex> lock(env_mu_);
        env_done_.push_back({s, token, std::move(insert)});
        --env_running_;
      }
      env_cv_.notify_all();
      {
        std::lock_guard<std::mutex> lock(mu_);  // the driver may be waiting on cv_ for this
      }
      cv_.notify_all();
    });
    return;
  }
  if (length >= o.max_new_tokens) {
    rec.finish = SampleFinish::kLength;
    rec.final_turn_start = s->turn_start;
    if (o.episodes != nullptr && rec.episode_end.empty()) rec.episode_end = "length";
    FinishSample(s);
    return;
  }
  s->pending.assign(1, token);
}

void GenerationEngine::AfterTurn(Sequence* s, int64_t token, std::optional<std::vector<int64_t>> insert) {
  Call* call = s->request->call;
  const SamplingOptions& o = *call->options;
  SampleRecord& rec = s->request->samples[s->sample];
  const int64_t length = static_cast<int64_t>(rec.completion_ids.size());
  if (!insert.has_value() || insert->empty()) {
    rec.finish = SampleFinish::kStop;
    rec.final_turn_start = s->turn_start;
    FinishSample(s);
    return;
  }
  if (length + static_cast<int64_t>(insert->size()) >= o.max_new_tokens) {
    rec.episode_end = "length";  // no room left for the results and a reply
    rec.finish = SampleFinish::kLength;
    rec.final_turn_start = s->turn_start;
    FinishSample(s);
    return;
  }
  // The stop token and the environment's tokens are fed together; the latter are context, not samples.
  s->pending.assign(1, token);
  for (int64_t id : *insert) {
    s->pending.push_back(id);
    rec.completion_ids.push_back(id);
    rec.logprobs.push_back(0.0f);
    rec.env_token_mask.push_back(1);
    if (call->records_kept) AppendNoKept(&rec.kept);
  }
  s->turn_start = static_cast<int64_t>(rec.completion_ids.size());
}

void GenerationEngine::FinishSample(Sequence* s) {
  SampleRecord& rec = s->request->samples[s->sample];
  if (s->request->call->options->record_choices) {
    // Positions [0, prompt + completion - 1): every token fed (the last one sampled never is).
    const int64_t length = static_cast<int64_t>(rec.prompt_ids.size() + rec.completion_ids.size()) - 1;
    rec.choices = s->choices.Slice(0, std::min<int64_t>(length, s->choices.size()));  // [length, width] each
  }
  Release(s);
}

void GenerationEngine::Release(Sequence* s) {
  if (s->slot >= 0) device_rows_.Release(s->slot);
  s->slot = -1;
  for (int64_t b : s->blocks) blocks_.Unref(b);
  s->blocks.clear();
  s->choices = ChoiceRows();
  s->finished = true;
  if (--s->request->live == 0) FinishRequest(s->request);
}

void GenerationEngine::FinishRequest(Request* r) {
  blocks_.Unreserve(r->reserved);
  std::lock_guard<std::mutex> lock(mu_);
  Call* call = r->call;
  (*call->out)[r->index] = std::move(r->samples);
  --admitted_;
  requests_.erase(r->self);
  if (--call->remaining == 0) MarkDone(call);
}

}  // namespace spargo::rollout
