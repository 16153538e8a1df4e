// The rollout engine: generation for many requests at once over a paged latent cache.
//  - Continuous batching: every step feeds, for each running sequence, either its next token (decode rows, one
//    model call) or a chunk of the tokens it still has to feed (its prompt, or an agent episode's tool results:
//    prefill rows, a second call limited to `prefill_tokens` tokens), then samples the sequences whose input is all
//    fed. Requests join at any step; a finished sequence frees its blocks at once.
//  - Paged cache (model/kv_pages.h, rollout/block_manager.h): blocks of `block_size` tokens of every layer's cache
//    fields. A request's prompt is fed once; its G samples then share the prompt's blocks and copy a shared block
//    only when they first write into it. Full prompt blocks are published in a prefix cache, so a later request
//    with the same prompt prefix (a system prompt, the same question) starts after it. A request that records
//    choices (the learner's sampling) gets them for the cached positions from rollout/prefix_choices.h, the
//    choices kept beside each cached block by the recording request that fed it; it reuses a cached block only
//    when the block has them (a block published without them gets them from the next recording request that feeds
//    that prefix). The prefix cache and its choices are forgotten when the weights change (Exclusive).
//  - Memory budget: a request is admitted only when the pool can hold its worst case (prompt + G x max_new_tokens);
//    otherwise it waits, first come first served. A request that could never fit is RESOURCE_EXHAUSTED at once.
//  - Block tables and cache lengths stay on the model's device (rollout/device_rows.h): a step sends only the
//    entries that changed and the tokens fed, in one copy, and gathers its rows' tables there.
//  - Decode calls (every row feeds one token) go through CausalLm::DecodePagedFull, without host synchronisation,
//    and on CUDA through CUDA graphs captured per padded shape (rollout/decode_graphs.h; EngineOptions::graphs).
//    With padding, block 0 of the pool is the padding rows' scratch block and holds no sequence's tokens. The graphs
//    outlive weight updates: they check the weights before each call (the first call after an in-place change runs
//    eagerly; weights that moved drop them).
//  - Sampling (rollout/token_sampler.h) is counter-based per (seed, step, sample_key, sample, token): results do not
//    depend on which requests shared a batch. The rows of every call with the same sampling options (temperature,
//    truncation, vocabulary limit, kept sets) are drawn together: one draw and one host copy per step, however many
//    concurrent calls (a server's clients, a learner's per-prompt calls) share the batch.
//  - Agent episodes (rollout/episode.h): a sample that ends a turn waits while its environment runs on one of
//    `environment_threads` threads (tools, sandboxed programs), and the other sequences keep decoding; the result
//    is applied at the next step. EndOfTurn may therefore run for several samples at once (0 threads: inline, on
//    the driving thread, one at a time). A call is cancelled only once its environment turns in flight are back.
//  - Threads: Generate is thread-safe and blocks until its requests are done; concurrent calls are served in the
//    same batch. The thread of any waiting caller drives the steps (there is no thread of the engine's own), so a
//    model is only ever run by one thread at a time. Exclusive runs a function (a weight update) with no request
//    in flight: admission stops, the running requests finish, then the function runs alone.
// The model must implement paged decoding (CausalLm::KvFieldDims non-empty).
#ifndef SPARGO_ROLLOUT_ENGINE_H_
#define SPARGO_ROLLOUT_ENGINE_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "model/causal_lm.h"
#include "rollout/block_manager.h"
#include "rollout/decode_graphs.h"
#include "rollout/device_rows.h"
#include "rollout/group_sampler.h"
#include "rollout/prefix_choices.h"
#include "rollout/sample.h"

namespace spargo::rollout {

// How the engine runs decode calls:
//  - kAuto: CUDA graphs (rollout/decode_graphs.h) on CUDA where the build can capture them and the model's
//    DecodePagedFull is capturable (CausalLm::CapturablePagedDecode), unless the environment has
//    SPARGO_CUDA_GRAPHS=0; otherwise as kOff.
//  - kOff: eagerly, each call at its own shape.
//  - kEagerPadded: padded to the graphs' shapes, eagerly (any device: the padding without the capture, for tests).
enum class DecodeGraphMode { kAuto, kOff, kEagerPadded };

struct EngineOptions {
  int64_t block_size = 16;
  // The pool: num_blocks blocks, or when 0 as many as fit in cache_bytes. Both 0 only in OneShot sizing.
  int64_t num_blocks = 0;
  int64_t cache_bytes = 0;
  int64_t max_rows = 512;         // sequences in one decode call
  int64_t prefill_tokens = 2048;  // tokens fed per step over all prefill rows (chunked prefill)
  bool prefix_cache = true;
  // Host memory for the recorded choices kept beside cached prompt blocks (rollout/prefix_choices.h), which lets
  // requests that record choices reuse cached prefixes; beyond it, further blocks get none.
  int64_t prefix_choice_bytes = int64_t{1} << 30;
  int environment_threads = 8;    // threads for agent environments' turns (0: inline)
  DecodeGraphMode graphs = DecodeGraphMode::kAuto;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t decode_calls = 0, prefill_calls = 0;
  int64_t decoded_tokens = 0, prefilled_tokens = 0;  // fed to the model
  int64_t prefix_hit_tokens = 0;                     // prompt tokens found in the prefix cache, not fed
  int64_t recorded_prefix_hit_tokens = 0;            // of which for requests recording choices
  int64_t prefix_choice_blocks = 0;                  // now: cached blocks with kept choices
  int64_t prefix_choice_bytes = 0;                   // now: the bytes of those choices
  int64_t copied_blocks = 0;                         // copies on write of shared blocks
  int64_t max_running = 0;                           // most sequences running at once
  int64_t waits = 0;                                 // steps a request could not be admitted for lack of blocks
  int64_t waiting_requests = 0;                      // now: requests not yet admitted (prompts of calls in Generate)
  int64_t decode_graphs = 0;                         // now: CUDA graphs captured (shapes seen)
  int64_t graph_replays = 0;                         // decode calls replayed from a graph
  int64_t decode_weight_refreshes = 0;               // decode calls run eagerly after the weights changed in place
  // Wall time of the steps that fed or sampled, and of it the draws (SampleRows: the sampler's kernels and the host
  // copy of their results, which waits for the step's model calls to finish on the device).
  double step_seconds = 0, draw_seconds = 0;
};

class GenerationEngine {
 public:
  // INVALID_ARGUMENT when the model has no paged path or the options are unusable (the pool is allocated here).
  static absl::StatusOr<std::unique_ptr<GenerationEngine>> Create(model::CausalLm* model, const EngineOptions& options);
  // The blocks `prompts` need at worst under `options` (what admission reserves), for sizing a pool.
  static int64_t WorstCaseBlocks(const std::vector<GroupRequest>& prompts, const SamplingOptions& options,
                                 int64_t block_size);
  ~GenerationEngine();

  // [num_prompts][group_size] samples in input order (as SampleGroups). INVALID_ARGUMENT for bad options or
  // prompts; RESOURCE_EXHAUSTED for a prompt whose worst case exceeds the whole pool; CANCELLED when
  // options.stop said so (checked every step).
  absl::StatusOr<std::vector<SampleGroup>> Generate(const std::vector<GroupRequest>& prompts,
                                                    const SamplingOptions& options);
  // As above, with group_sizes[i] samples of prompt i (one entry per prompt; options.group_size is not used):
  // groups of several sizes in one call, drawn as separate calls of each size would draw them.
  absl::StatusOr<std::vector<SampleGroup>> Generate(const std::vector<GroupRequest>& prompts,
                                                    const std::vector<int>& group_sizes,
                                                    const SamplingOptions& options);
  // Runs fn with no request in flight and forgets the prefix cache afterwards.
  absl::Status Exclusive(const std::function<absl::Status()>& fn);
  EngineStats stats() const;
  int64_t num_blocks() const;
  int64_t block_size() const { return options_.block_size; }
  // How decode calls run: padded (kEagerPadded, or captured: kAuto in effect) or not (kOff).
  DecodeGraphMode decode_graph_mode() const;

 private:
  struct Call;
  struct Request;
  struct Sequence;
  GenerationEngine(model::CausalLm* model, const EngineOptions& options, std::unique_ptr<model::KvPool> pool,
                   std::optional<DecodeGraphs::Mode> graphs);

  // One step; returns with mu_ unlocked. A model error fails every call in flight. False when the step had
  // nothing to do (every running sequence waits for its environment).
  bool StepCatching();
  bool Step();
  void Admit();
  void CancelStopped();
  // Feeds the given counts of the sequences' pending tokens in one model call; the sequences left with nothing
  // pending get their last logits row in *ready (index into `last`).
  void Feed(const std::vector<Sequence*>& rows, const std::vector<int64_t>& counts, torch::Tensor* last,
            std::vector<std::pair<Sequence*, int64_t>>* ready);
  void SampleReady(const std::vector<std::pair<Sequence*, int64_t>>& ready, const torch::Tensor& last);
  void Fork(Sequence* prompt, const torch::Tensor& token, const torch::Tensor& logprob, const torch::Tensor& kept,
            int64_t first_row);
  // Applies a sampled token to sample sequence `s`.
  void Accept(Sequence* s, int64_t token, float logprob, const torch::Tensor& kept, int64_t kept_row);
  // What follows a turn that ended with `token`: the environment's `insert` fed next, or the sample's end.
  void AfterTurn(Sequence* s, int64_t token, std::optional<std::vector<int64_t>> insert);
  // Applies the environment turns that came back; true when there were any.
  bool ApplyEnvironmentResults();
  // Blocks until no environment turn is running (before state they point into is dropped).
  void WaitForEnvironments();
  void EnsureWritable(Sequence* s, int64_t from, int64_t to);
  // A block of s's reservation (see BlockManager::Allocate); whatever prefix it held is forgotten with its choices.
  int64_t AllocateBlock(Sequence* s);
  // Publishes the prompt blocks of prompt sequence s that are full now, with their choices when s records them.
  void PublishPrompt(Sequence* s);
  void Release(Sequence* s);
  void FinishSample(Sequence* s);
  void FinishRequest(Request* r);
  void FailAll(const absl::Status& status);
  // Marks a call done (under mu_).
  void MarkDone(Call* call);

  model::CausalLm* model_;
  EngineOptions options_;
  std::unique_ptr<model::KvPool> pool_;
  torch::Device device_;
  BlockManager blocks_;                    // the driver's
  PrefixChoices prefix_choices_;           // the driver's
  DeviceRows device_rows_;                 // the driver's: block tables and lengths on the model's device
  std::unique_ptr<DecodeGraphs> graphs_;   // the driver's; null: decode calls unpadded
  int64_t kept_out_ = 0;                   // 1 with padding: block 0 is the padding rows' scratch block

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool driving_ = false;
  bool exclusive_ = false;
  int64_t calls_done_ = 0;                 // calls marked done so far; guarded by mu_
  std::list<Request*> waiting_;            // guarded by mu_
  int64_t admitted_ = 0;                   // requests admitted and not finished; guarded by mu_
  std::list<std::unique_ptr<Sequence>> running_;  // the driver's
  std::list<std::unique_ptr<Request>> requests_;  // every request not finished; guarded by mu_
  EngineStats stats_;                      // guarded by mu_
  double draw_seconds_ = 0;                // the driver's: this step's draws so far

  // Environment turns: run on env_pool_, their results queued here and applied by the driver.
  struct EnvironmentResult {
    Sequence* sequence;
    int64_t token;
    std::optional<std::vector<int64_t>> insert;
  };
  std::mutex env_mu_;
  std::condition_variable env_cv_;
  std::vector<EnvironmentResult> env_done_;  // guarded by env_mu_
  int64_t env_running_ = 0;                  // guarded by env_mu_
  std::unique_ptr<ThreadPool> env_pool_;     // made on first use; declared last, so joined first
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_ENGINE_H_
