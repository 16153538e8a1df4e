// The rollout engine's decode calls (one new token per row) through CUDA graphs (rollout/engine.h):
//  - A call is padded to a bucketed shape (PadRows rows, PadWidth table columns; rollout/device_rows.h pads it) and
//    run through CausalLm::DecodePagedFull, which has no host synchronisation and no data-dependent shapes.
//  - kCapture (CUDA, a model whose CapturablePagedDecode() is true, and a libtorch built with CUDA): the first call
//    of a shape (rows, width, recording or not) runs eagerly and is then captured, after a warm-up run on a side
//    stream, into a graph with static input buffers; later calls of that shape copy their inputs into those buffers
//    and replay it. All graphs draw on one memory pool; each row count has one set of output buffers (logits and
//    recorded choices), valid until the next call.
//  - kEager: the same padded calls without capture (any device; the CPU tests run the padding this way).
// Header-only (the engine is its one user); the CUDA parts compile in builds with a CUDA libtorch and toolkit
// (SPARGO_ROLLOUT_CUDA_GRAPHS, a public definition of spargo_rollout, so every includer sees the same class).
// Weights: a graph reads the model's tensors at the addresses they had when it was captured. Before each call the
// model's parameters and buffers are checked (their addresses and version counters, a few microseconds): when any
// moved (To, a dtype or device change) every graph is dropped and captured again on demand; when values changed in
// place (a weight update, an optimiser step) the call runs eagerly once, so that the model refreshes in place what it
// derives from them (Dsv32Model's stacked experts), and the graphs are replayed from the next call on.
// Not thread-safe (the engine's driver owns it). Clear() drops every graph (after a failure).
#ifndef SPARGO_ROLLOUT_DECODE_GRAPHS_H_
#define SPARGO_ROLLOUT_DECODE_GRAPHS_H_

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "model/causal_lm.h"
#include "model/kv_pages.h"

#ifdef SPARGO_ROLLOUT_CUDA_GRAPHS  // rollout/CMakeLists.txt: set for every user of spargo_rollout in CUDA builds
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace spargo::rollout {

class DecodeGraphs {
 public:
  enum class Mode { kEager, kCapture };
  DecodeGraphs(model::CausalLm* model, model::KvPool* pool, Mode mode) : model_(model), pool_(pool), mode_(mode) {}
  ~DecodeGraphs() { Clear(); }

  // Whether this build can capture CUDA graphs.
  static bool CaptureCompiled() {
#ifdef SPARGO_ROLLOUT_CUDA_GRAPHS
    return true;
#else
    return false;
#endif
  }

  // The row count a call of `rows` rows is padded to: 1, 2, 4, 8, 16, 24, 32, then multiples of 32 up to 256, then
  // of 64; at most max(rows, max_rows).
  static int64_t PadRows(int64_t rows, int64_t max_rows) {
    int64_t p = rows <= 2 ? rows : rows <= 4 ? 4 : rows <= 8 ? 8 : rows <= 16 ? 16 : rows <= 24 ? 24 : 0;
    if (p == 0) p = rows <= 256 ? (rows + 31) / 32 * 32 : (rows + 63) / 64 * 64;
    return std::max(rows, std::min(p, max_rows));
  }
  // The table width a call whose longest row needs `blocks` blocks is padded to: two sizes per octave (1, 2, 3, 4,
  // 6, 8, 12, 16, 24, ...), so that the key range is at most 1.5x the longest row's.
  static int64_t PadWidth(int64_t blocks) {
    int64_t p = 1;
    while (p < blocks) {
      if (p >= 2 && p + p / 2 >= blocks) return p + p / 2;
      p *= 2;
    }
    return p;
  }

  Mode mode() const { return mode_; }
  int64_t graphs() const { return static_cast<int64_t>(graphs_.size()); }
  int64_t replays() const { return replays_; }
  // Calls run eagerly because the weights had changed in place since the previous call.
  int64_t weight_refreshes() const { return refreshes_; }

  // ids [B, 1] and rows (block_table [B, W], lengths [B]) as DeviceRows::Prepare padded them; logits [B, 1, V]
  // float32 and, when `record` is given, the recorded choices, both valid until the next call.
  torch::Tensor Run(const torch::Tensor& ids, const model::PagedRows& rows, model::TokenChoices* record) {
#ifdef SPARGO_ROLLOUT_CUDA_GRAPHS
    if (mode_ == Mode::kCapture) return RunCaptured(ids, rows, record);
#endif
    return model_->DecodePagedFull(ids, rows, pool_, record);
  }

  void Clear() {
#ifdef SPARGO_ROLLOUT_CUDA_GRAPHS
    if (!graphs_.empty() || !outputs_.empty()) c10::cuda::device_synchronize();
#endif
    graphs_.clear();
    outputs_.clear();
  }

 private:
  // What the graphs depend on of the model's tensors: a hash of their addresses, dtypes and devices, and the sum of
  // their version counters (every in-place write increments one).
  struct WeightState {
    uint64_t layout = 0;
    int64_t versions = 0;
  };
  WeightState Weights() {
    if (tensors_.empty()) {
      tensors_ = model_->parameters(/*recurse=*/true);
      for (const torch::Tensor& b : model_->buffers(/*recurse=*/true)) tensors_.push_back(b);
    }
    WeightState w;
    w.layout = 1469598103934665603ull;
    for (const torch::Tensor& t : tensors_) {
      for (uint64_t v : {static_cast<uint64_t>(reinterpret_cast<uintptr_t>(t.data_ptr())),
                         static_cast<uint64_t>(t.scalar_type()), static_cast<uint64_t>(t.device().index()) + 1}) {
        w.layout = (w.layout ^ v) * 1099511628211ull;
      }
      w.versions += t._version();
    }
    return w;
  }

  // The outputs of every graph with this row count (and recording flag).
  struct Outputs {
    torch::Tensor logits;        // [B, 1, V] float32
    model::TokenChoices record;  // [B, 1, width] int64 by name
  };
#ifdef SPARGO_ROLLOUT_CUDA_GRAPHS
  struct Graph {
    torch::Tensor ids, table, lengths, new_tokens;  // the static inputs
    std::unique_ptr<at::cuda::CUDAGraph> graph;
  };
#else
  struct Graph {};
#endif
  using Key = std::tuple<int64_t, int64_t, bool>;  // rows, width, recording

#ifdef SPARGO_ROLLOUT_CUDA_GRAPHS
  // One call into the static buffers: the model's outputs copied into `out`.
  void CallInto(Graph& g, Outputs& out, bool record) {
    model::PagedRows rows{g.table, g.lengths, g.new_tokens};
    model::TokenChoices rec;
    torch::Tensor logits = model_->DecodePagedFull(g.ids, rows, pool_, record ? &rec : nullptr);
    out.logits.copy_(logits);
    for (auto& [name, t] : rec) out.record.at(name).copy_(t);
  }

  torch::Tensor RunCaptured(const torch::Tensor& ids, const model::PagedRows& rows, model::TokenChoices* record) {
    const int64_t b = ids.size(0), w = rows.block_table.size(1);
    const bool recording = record != nullptr;
    const Key key{b, w, recording};
    const WeightState weights = Weights();
    const bool moved = weights_known_ && weights.layout != weights_.layout;
    const bool changed = weights_known_ && weights.versions != weights_.versions;
    weights_ = weights;
    weights_known_ = true;
    if (moved) Clear();
    if (changed && !moved) {  // eagerly, once: the model refreshes what it derives from the weights, in place
      ++refreshes_;
      return model_->DecodePagedFull(ids, rows, pool_, record);
    }
    auto found = graphs_.find(key);
    if (found != graphs_.end()) {
      Graph& g = found->second;
      g.ids.copy_(ids);
      g.table.copy_(rows.block_table);
      g.lengths.copy_(rows.lengths);
      g.graph->replay();
      ++replays_;
      Outputs& out = outputs_.at(std::make_pair(b, recording));
      if (recording) *record = out.record;
      return out.logits;
    }
    // First call of this shape: the real step, eagerly, on the current stream; its outputs size the buffers.
    model::TokenChoices rec;
    torch::Tensor logits = model_->DecodePagedFull(ids, rows, pool_, recording ? &rec : nullptr);
    auto [slot, fresh] = outputs_.try_emplace(std::make_pair(b, recording));
    Outputs& out = slot->second;
    if (fresh) {
      out.logits = torch::empty_like(logits);
      for (auto& [name, t] : rec) out.record[name] = torch::empty_like(t);
    }
    out.logits.copy_(logits);
    for (auto& [name, t] : rec) out.record.at(name).copy_(t);
    Graph g;
    g.ids = ids.clone();
    g.table = rows.block_table.clone();
    g.lengths = rows.lengths.clone();
    g.new_tokens = rows.new_tokens.clone();
    // Capture on a side stream after a warm-up run there (it writes the same cache entries again, with the same
    // values); nothing else runs meanwhile.
    c10::cuda::device_synchronize();
    {
      c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, ids.device().index());
      c10::cuda::CUDAStreamGuard guard(side);
      Outputs scratch{torch::empty_like(out.logits), {}};
      for (auto& [name, t] : out.record) scratch.record[name] = torch::empty_like(t);
      CallInto(g, scratch, recording);
      side.synchronize();
      if (!pool_id_set_) {
        pool_id_ = at::cuda::graph_pool_handle();
        pool_id_set_ = true;
      }
      g.graph = std::make_unique<at::cuda::CUDAGraph>();
      g.graph->capture_begin(pool_id_, cudaStreamCaptureModeThreadLocal);
      try {
        CallInto(g, out, recording);
      } catch (const std::exception& e) {
        // Something in the step cannot be captured: end the capture and go on eagerly (the step's result is in hand).
        try {
          g.graph->capture_end();
        } catch (const std::exception&) {
        }
        std::cerr << "decode graphs: capture failed, decoding eagerly from now on: " << e.what() << "\n";
        mode_ = Mode::kEager;
        g.graph.reset();
      }
      if (g.graph != nullptr) g.graph->capture_end();
      side.synchronize();
    }
    if (g.graph != nullptr) graphs_.emplace(key, std::move(g));
    if (recording) {
      *record = model::TokenChoices();
      for (auto& [name, t] : rec) (*record)[name] = t;
    }
    return logits;
  }

  decltype(at::cuda::graph_pool_handle()) pool_id_{0, 0};
  bool pool_id_set_ = false;
#endif
  std::vector<torch::Tensor> tensors_;  // the model's parameters and buffers (the same tensors after To)
  WeightState weights_;                 // at the last captured-mode call
  bool weights_known_ = false;
  int64_t refreshes_ = 0;

  model::CausalLm* model_;
  model::KvPool* pool_;
  Mode mode_;
  std::map<Key, Graph> graphs_;
  std::map<std::pair<int64_t, bool>, Outputs> outputs_;
  int64_t replays_ = 0;
};

}  // namespace spargo::rollout

#endif  // SPARGO_ROLLOUT_DECODE_GRAPHS_H_
