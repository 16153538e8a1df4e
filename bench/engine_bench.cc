// The rollout engine (rollout/engine.h) on a named DeepSeek-V3.2 shape with random weights, CPU or CUDA:
//  - decode: --batches prompts of --prompt random tokens, one greedy sample each, --new_tokens new tokens (no EOS);
//    seconds for the whole generation (prefill included) and new tokens/s, as HF's `generate` is measured.
//  - grpo: --groups prompts x --group_size samples at temperature 1, each prompt its own call with a completion
//    budget drawn from [--min_new, --max_new] (the varied lengths of a GRPO batch; no EOS in a random model), all
//    calls concurrent on one engine: seconds to finish the batch and new tokens/s.
//  - prefill: one prompt of each --lengths tokens fed in chunks of --prefill_tokens, one token generated: seconds,
//    prefill tokens/s and peak CUDA memory above the weights.
//  - served: the decode loads of --batches and the grpo load, each run in process as above and then through the
//    real `spargo rollout` binary (--spargo) on loopback gRPC, in one table: seconds and new tokens/s both ways and
//    their ratio. The server loads this very model from a checkpoint written to a temporary folder, with the same
//    device, dtype, block size and prefill chunk, a cache that holds the largest load's worst case and as many rows
//    as its sequences. The load is sent as a GRPO learner's client sends it: a decode batch cut into Generate calls
//    of --groups_per_call prompts (the gRPC rollout client's groups_per_request), the grpo load one call per prompt
//    (each its own completion budget), all calls in flight at once; the server batches them on its engine. Each
//    load has prompts of its own (no prefix-cache hits); a decode load is run once untimed with other prompts
//    first, both ways (the grpo load neither way).
// --graphs picks how decode calls run (rollout/engine.h DecodeGraphMode): auto (CUDA graphs on CUDA), off (eager),
// padded (the graphs' padding, eagerly); decode mode runs each listed one, the other modes the first.
// Prints one markdown table per mode and the engine's counters.
#include <torch/torch.h>

#include <dirent.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "bench/kernel_profile.h"
#include "bench/served_rollout.h"
#include "common/atomic_file.h"
#include "common/blas_kernels.h"
#include "model/dsv32_model.h"
#include "rollout/engine.h"

#ifdef SPARGO_HAVE_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

ABSL_FLAG(std::string, config, "tiny", "tiny or 160m.");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda.");
ABSL_FLAG(std::string, dtype, "float32", "float32 or bfloat16.");
ABSL_FLAG(std::string, modes, "decode", "Comma-separated: decode, grpo, prefill, served.");
ABSL_FLAG(std::string, batches, "1,8", "decode: comma-separated batch sizes.");
ABSL_FLAG(int32_t, prompt, 128, "decode and grpo: prompt tokens.");
ABSL_FLAG(int32_t, new_tokens, 64, "decode: new tokens per sequence.");
ABSL_FLAG(int32_t, groups, 64, "grpo: prompts.");
ABSL_FLAG(int32_t, group_size, 8, "grpo: samples per prompt.");
ABSL_FLAG(int32_t, min_new, 64, "grpo: shortest completion budget.");
ABSL_FLAG(int32_t, max_new, 2048, "grpo: longest completion budget.");
ABSL_FLAG(std::string, lengths, "8192", "prefill: comma-separated prompt lengths.");
ABSL_FLAG(int32_t, prefill_tokens, 2048, "Tokens fed per engine step (chunked prefill).");
ABSL_FLAG(int32_t, block_size, 16, "Cache block size in tokens.");
ABSL_FLAG(std::string, spargo, "", "served: the spargo binary (default: cli/spargo of this build).");
ABSL_FLAG(int32_t, groups_per_call, 8, "served: prompts per Generate call of a decode load.");
ABSL_FLAG(std::string, graphs, "auto", "Comma-separated decode-call modes: auto, off, padded (decode mode runs each).");
ABSL_FLAG(int32_t, server_start_seconds, 600, "served: how long to wait for the server to load the model.");
ABSL_FLAG(int32_t, profile_top, 0,
          "decode: when > 0 (CUDA builds), one more call of each load under libtorch's Kineto profiler, and a summary "
          "of where its time went: the kernels with the most GPU time (this many), GPU busy and idle time, the "
          "longest host-side events.");

namespace {

using spargo::bench::ParsePositiveList;
using spargo::bench::ServedCall;
using spargo::bench::ServedRollout;
using spargo::rollout::EngineOptions;
using spargo::rollout::EngineStats;
using spargo::rollout::GenerationEngine;
using spargo::rollout::GroupRequest;
using spargo::rollout::SampleGroup;
using spargo::rollout::SamplingOptions;

// What the process was doing last (main thread), for the crash report below.
std::atomic<const char*> g_phase{"start"};
void Phase(const char* what) { g_phase.store(what); }

std::vector<GroupRequest> RandomPrompts(int64_t n, int64_t length, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<GroupRequest> out(n);
  for (int64_t i = 0; i < n; ++i) {
    out[i].prompt_id = "p" + std::to_string(i);
    out[i].sample_key = static_cast<uint64_t>(i);
    for (int64_t t = 0; t < length; ++t) out[i].prompt_ids.push_back(static_cast<int64_t>(rng() % vocab));
  }
  return out;
}

double Seconds(const torch::Device& d, const std::function<void()>& fn) {
  spargo::bench::Sync(d);
  const auto start = std::chrono::steady_clock::now();
  fn();
  spargo::bench::Sync(d);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void ResetPeak(const torch::Device& d) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#endif
}

// Peak bytes allocated since ResetPeak (CUDA builds on CUDA; else -1).
double PeakGib(const torch::Device& d) {
#ifdef SPARGO_HAVE_CUDA_KERNELS
  if (d.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
  }
#endif
  return -1;
}

void PrintStats(const EngineStats& s) {
  std::printf("engine: %lld steps, %lld decode calls, %lld prefill calls, %lld decoded / %lld prefilled tokens, "
              "%lld copied blocks, at most %lld sequences running, %lld admission waits, %lld decode graphs, "
              "%lld graph replays; %.3f ms per step, of which %.3f ms in draws (sampler + waiting for the device)\n",
              static_cast<long long>(s.steps), static_cast<long long>(s.decode_calls),
              static_cast<long long>(s.prefill_calls), static_cast<long long>(s.decoded_tokens),
              static_cast<long long>(s.prefilled_tokens), static_cast<long long>(s.copied_blocks),
              static_cast<long long>(s.max_running), static_cast<long long>(s.waits),
              static_cast<long long>(s.decode_graphs), static_cast<long long>(s.graph_replays),
              s.steps > 0 ? 1e3 * s.step_seconds / s.steps : 0.0, s.steps > 0 ? 1e3 * s.draw_seconds / s.steps : 0.0);
}

int64_t NewTokens(const std::vector<SampleGroup>& groups) {
  int64_t n = 0;
  for (const auto& g : groups) {
    for (const auto& s : g) n += static_cast<int64_t>(s.completion_ids.size());
  }
  return n;
}

// One load's samples and how long it took.
struct Timed {
  double seconds = 0;
  std::vector<SampleGroup> groups;
};

// The decode load's sampling: greedy, `fresh` new tokens, no EOS.
SamplingOptions DecodeOptions(int fresh) {
  SamplingOptions o;
  o.max_new_tokens = fresh;
  o.temperature = 0;
  return o;
}

// The time of `fn` under libtorch's Kineto profiler (CUDA builds; bench/kernel_profile.h): kernels by total GPU
// time, how much of the wall time the GPU was busy, the idle gaps between kernels (host-side waits), and the host
// events with the most time. fn returns the engine steps it took.
void ProfileCall(const torch::Device& d, const std::function<int64_t()>& fn) {
  int64_t steps_hint = 0;
  const spargo::bench::KernelProfile p = spargo::bench::ProfileKernels(d, [&] { steps_hint = fn(); });
  if (!p.profiled) {
    std::printf("profile: needs a CUDA build\n");
    return;
  }
  double busy_ms = 0, gap_ms = 0;
  int64_t gaps = 0;
  uint64_t end = p.spans.empty() ? 0 : p.spans[0].first;
  for (const auto& [s, e] : p.spans) {
    if (s > end) {
      const double g = static_cast<double>(s - end) / 1e6;
      if (g > 0.01) {
        ++gaps;
        gap_ms += g;
      }
    }
    if (e > end) {
      busy_ms += static_cast<double>(e - std::max(s, end)) / 1e6;
      end = e;
    }
  }
  const double span_ms = p.spans.empty() ? 0 : static_cast<double>(end - p.spans[0].first) / 1e6;
  const double steps = static_cast<double>(std::max<int64_t>(steps_hint, 1));
  std::printf("profile: wall %.1f ms (%.3f ms per step over %lld steps), kernels %zu (%.0f per step), GPU busy "
              "%.1f ms (%.3f per step) of a %.1f ms kernel span; %lld idle gaps over 10 us, %.1f ms (%.3f per step)\n",
              p.wall_ms, p.wall_ms / steps, static_cast<long long>(steps_hint), p.spans.size(),
              static_cast<double>(p.spans.size()) / steps, busy_ms, busy_ms / steps, span_ms,
              static_cast<long long>(gaps), gap_ms, gap_ms / steps);
  const int top = absl::GetFlag(FLAGS_profile_top);
  spargo::bench::PrintTopKernels(p.kernels, "kernel", top, steps, "step");
  spargo::bench::PrintTopKernels(p.host, "host event", top, steps, "step");
}

// The decode load in process: an engine sized for it, one untimed call of other prompts, then one timed call.
absl::StatusOr<Timed> DecodeInProcess(spargo::model::CausalLm& m, const EngineOptions& base, const torch::Device& d,
                                      const std::vector<GroupRequest>& prompts, const SamplingOptions& o,
                                      EngineStats* stats = nullptr) {
  EngineOptions eo = base;
  eo.num_blocks = GenerationEngine::WorstCaseBlocks(prompts, o, eo.block_size);
  eo.max_rows = static_cast<int64_t>(prompts.size());
  auto engine = GenerationEngine::Create(&m, eo);
  if (!engine.ok()) return engine.status();
  const int64_t prompt = static_cast<int64_t>(prompts[0].prompt_ids.size());
  (*engine)->Generate(RandomPrompts(static_cast<int64_t>(prompts.size()), prompt, m.vocab_size(), 2), o)
      .IgnoreError();  // warm-up
  Timed out;
  absl::Status status;
  out.seconds = Seconds(d, [&] {
    auto groups = (*engine)->Generate(prompts, o);
    if (groups.ok()) out.groups = *std::move(groups);
    status = groups.status();
  });
  if (!status.ok()) return status;
  if (stats != nullptr) *stats = (*engine)->stats();
  if (absl::GetFlag(FLAGS_profile_top) > 0) {  // one more call, profiled
    const std::vector<GroupRequest> again = RandomPrompts(static_cast<int64_t>(prompts.size()), prompt,
                                                          m.vocab_size(), 3);
    const int64_t before = (*engine)->stats().steps;
    ProfileCall(d, [&] {
      (*engine)->Generate(again, o).IgnoreError();
      return (*engine)->stats().steps - before;
    });
  }
  return out;
}

spargo::rollout::DecodeGraphMode GraphMode(absl::string_view name) {
  using spargo::rollout::DecodeGraphMode;
  return name == "off" ? DecodeGraphMode::kOff : name == "padded" ? DecodeGraphMode::kEagerPadded
                                                                  : DecodeGraphMode::kAuto;
}

// The GRPO-shaped load: `groups` prompts of `prompt` tokens, `g` samples each at temperature 1, completion budgets
// drawn from [min_new, max_new].
struct GrpoLoad {
  std::vector<GroupRequest> prompts;
  std::vector<SamplingOptions> options;  // one per prompt
};

GrpoLoad MakeGrpoLoad(int groups, int g, int prompt, int min_new, int max_new, int64_t vocab) {
  GrpoLoad load;
  load.prompts = RandomPrompts(groups, prompt, vocab, 3);
  load.options.resize(groups);
  std::mt19937_64 rng(7);
  for (int i = 0; i < groups; ++i) {
    load.options[i].group_size = g;
    load.options[i].temperature = 1.0;
    load.options[i].seed = 1;
    load.options[i].max_new_tokens = min_new + static_cast<int>(rng() % (max_new - min_new + 1));
  }
  return load;
}

int64_t GrpoWorstCaseBlocks(const GrpoLoad& load, int64_t block_size) {
  int64_t n = 0;
  for (size_t i = 0; i < load.prompts.size(); ++i) {
    n += GenerationEngine::WorstCaseBlocks({load.prompts[i]}, load.options[i], block_size);
  }
  return n;
}

// The GRPO-shaped load in process: an engine sized for it, each prompt its own concurrent call.
absl::StatusOr<Timed> GrpoInProcess(spargo::model::CausalLm& m, const EngineOptions& base, const torch::Device& d,
                                    const GrpoLoad& load, EngineStats* stats) {
  EngineOptions eo = base;
  eo.num_blocks = GrpoWorstCaseBlocks(load, eo.block_size);
  eo.max_rows = 0;
  for (const SamplingOptions& o : load.options) eo.max_rows += o.group_size;
  auto engine = GenerationEngine::Create(&m, eo);
  if (!engine.ok()) return engine.status();
  const size_t n = load.prompts.size();
  std::vector<absl::StatusOr<std::vector<SampleGroup>>> outs(n, absl::UnknownError("not run"));
  Timed out;
  out.seconds = Seconds(d, [&] {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i) {
      threads.emplace_back([&, i] { outs[i] = (*engine)->Generate({load.prompts[i]}, load.options[i]); });
    }
    for (auto& t : threads) t.join();
  });
  for (auto& o : outs) {
    if (!o.ok()) return o.status();
    out.groups.push_back(std::move((*o)[0]));
  }
  *stats = (*engine)->stats();
  return out;
}

// A load through the server, timed.
absl::StatusOr<Timed> Served(ServedRollout& server, const std::vector<ServedCall>& calls) {
  Timed out;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<SampleGroup>> groups = server.Generate(calls);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!groups.ok()) return groups.status();
  out.groups = *std::move(groups);
  return out;
}

// The samples of `a` whose completions equal those of `b` (the same load served two ways), and how many there are.
std::pair<int64_t, int64_t> SameSamples(const std::vector<SampleGroup>& a, const std::vector<SampleGroup>& b) {
  int64_t same = 0, all = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j) {
      ++all;
      same += i < b.size() && j < b[i].size() && a[i][j].completion_ids == b[i][j].completion_ids;
    }
  }
  return {same, all};
}

std::string DefaultSpargoBinary() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path().parent_path() / "cli" / "spargo").string();
}

// The served mode (see the top of the file); 0 on success, else the exit code.
int RunServed(spargo::model::Dsv32Model& m, const EngineOptions& base, const torch::Device& device,
              torch::ScalarType dtype) {
  using namespace spargo;
  const int prompt = absl::GetFlag(FLAGS_prompt), fresh = absl::GetFlag(FLAGS_new_tokens);
  const std::vector<int64_t> batches = ParsePositiveList(absl::GetFlag(FLAGS_batches));
  const GrpoLoad grpo = MakeGrpoLoad(absl::GetFlag(FLAGS_groups), absl::GetFlag(FLAGS_group_size), prompt,
                                     absl::GetFlag(FLAGS_min_new), absl::GetFlag(FLAGS_max_new), m.vocab_size());
  const SamplingOptions decode = DecodeOptions(fresh);
  // The server's engine: rows and cache for the largest load.
  int64_t rows = 0, blocks = 0;
  for (int64_t b : batches) {
    rows = std::max(rows, b);
    blocks = std::max(blocks, GenerationEngine::WorstCaseBlocks(RandomPrompts(b, prompt, m.vocab_size(), 0), decode,
                                                              base.block_size));
  }
  rows = std::max<int64_t>(rows, static_cast<int64_t>(absl::GetFlag(FLAGS_groups)) * absl::GetFlag(FLAGS_group_size));
  blocks = std::max(blocks, GrpoWorstCaseBlocks(grpo, base.block_size));
  const int64_t block_bytes = model::KvPool::BytesPerBlock(m.num_kv_layers(), m.KvFields(dtype), base.block_size);
  const int64_t cache_mib = (blocks * block_bytes + (1 << 20) - 1) / (1 << 20) + 1;
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("spargo-engine-bench-" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  // The folder (checkpoint and the server's log) goes when this returns, after the server has stopped. RemoveTree,
  // not std::filesystem::remove_all: with the pip CUDA libtorch that call binds to the copy libtorch.so exports,
  // which jumps to address 0 (this bench's SIGSEGV at exit on the H200; common/atomic_file.h).
  struct RemoveOnReturn {
    std::string dir;
    ~RemoveOnReturn() { RemoveTree(dir).IgnoreError(); }
  } remove_dir{dir};
  if (absl::Status s = bench::WriteCheckpoint(m, dir); !s.ok()) {
    std::cerr << "writing the checkpoint: " << s << "\n";
    return 1;
  }
  const std::string binary = absl::GetFlag(FLAGS_spargo).empty() ? DefaultSpargoBinary() : absl::GetFlag(FLAGS_spargo);
  const std::vector<std::string> flags = {
      "--device", absl::GetFlag(FLAGS_device), "--dtype", absl::GetFlag(FLAGS_dtype),
      "--block-size", std::to_string(base.block_size), "--prefill-tokens", std::to_string(base.prefill_tokens),
      "--max-batch-rows", std::to_string(rows), "--cache-mib", std::to_string(cache_mib)};
  absl::StatusOr<std::unique_ptr<ServedRollout>> server =
      ServedRollout::Start(binary, dir, m.vocab_size(), flags, dir + "/rollout.log",
                           absl::Seconds(absl::GetFlag(FLAGS_server_start_seconds)));
  if (!server.ok()) {
    std::cerr << server.status() << "\n";
    return 1;
  }
  std::printf("\nspargo rollout (%s) on %s: cache %lld MiB, %lld rows; decode loads in calls of %d prompts\n",
              binary.c_str(), (*server)->address().c_str(), static_cast<long long>(cache_mib),
              static_cast<long long>(rows), absl::GetFlag(FLAGS_groups_per_call));
  // A decode load as Generate calls of groups_per_call prompts.
  auto decode_calls = [&](const std::vector<GroupRequest>& prompts) {
    std::vector<ServedCall> calls;
    const size_t per = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_groups_per_call)));
    for (size_t i = 0; i < prompts.size(); i += per) {
      ServedCall call;
      call.prompts.assign(prompts.begin() + i, prompts.begin() + std::min(prompts.size(), i + per));
      call.options = decode;
      calls.push_back(std::move(call));
    }
    return calls;
  };
  std::printf("\n| load | new tokens | in-process s | in-process new tokens/s | served s | served new tokens/s | "
              "served / in-process tokens/s | samples equal |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  auto row = [&](const std::string& load, const Timed& here, const Timed& there) {
    const int64_t tokens = NewTokens(here.groups), served_tokens = NewTokens(there.groups);
    const auto [same, all] = SameSamples(here.groups, there.groups);
    std::printf("| %s | %lld / %lld | %.3f | %.0f | %.3f | %.0f | %.3f | %lld / %lld |\n", load.c_str(),
                static_cast<long long>(tokens), static_cast<long long>(served_tokens), here.seconds,
                tokens / here.seconds, there.seconds, served_tokens / there.seconds,
                (served_tokens / there.seconds) / (tokens / here.seconds), static_cast<long long>(same),
                static_cast<long long>(all));
    std::fflush(stdout);
  };
  for (size_t load = 0; load < batches.size(); ++load) {
    const int64_t b = batches[load];
    const std::vector<GroupRequest> prompts = RandomPrompts(b, prompt, m.vocab_size(), 100 + 2 * load);
    absl::StatusOr<Timed> here = DecodeInProcess(m, base, device, prompts, decode);
    // Untimed first, as in process: the load's shape with prompts of its own.
    const std::vector<GroupRequest> warm = RandomPrompts(b, prompt, m.vocab_size(), 101 + 2 * load);
    absl::StatusOr<Timed> there = here.ok() ? Served(**server, decode_calls(warm)) : here.status();
    if (there.ok()) there = Served(**server, decode_calls(prompts));
    if (!there.ok()) {
      std::cerr << "decode batch " << b << ": " << there.status() << "\n";
      return 1;
    }
    row("decode batch " + std::to_string(b) + ", prompt " + std::to_string(prompt) + " + " + std::to_string(fresh),
        *here, *there);
  }
  Phase("served: grpo load");
  EngineStats stats;
  absl::StatusOr<Timed> here = GrpoInProcess(m, base, device, grpo, &stats);
  std::vector<ServedCall> calls(grpo.prompts.size());
  for (size_t i = 0; i < calls.size(); ++i) calls[i] = ServedCall{{grpo.prompts[i]}, grpo.options[i]};
  absl::StatusOr<Timed> there = here.ok() ? Served(**server, calls) : here.status();
  if (!there.ok()) {
    std::cerr << "grpo load: " << there.status() << "\n";
    return 1;
  }
  row("grpo " + std::to_string(absl::GetFlag(FLAGS_groups)) + " x " + std::to_string(absl::GetFlag(FLAGS_group_size)) +
          ", prompt " + std::to_string(prompt) + " + " + std::to_string(absl::GetFlag(FLAGS_min_new)) + ".." +
          std::to_string(absl::GetFlag(FLAGS_max_new)),
      *here, *there);
  PrintStats(stats);  // the grpo load in process
  std::fflush(stdout);
  // The server's counters over all its loads (it logs them as it stops).
  Phase("served: stopping the server");
  for (absl::string_view line : absl::StrSplit((*server)->Stop(), '\n')) {
    if (absl::StrContains(line, "rollout engine: ") && absl::StrContains(line, "steps")) {
      std::printf("served %s\n", std::string(line.substr(line.find("rollout engine: ") + 8)).c_str());
    }
  }
  std::fflush(stdout);
  Phase("served: destroying RunServed's locals");  // the server object (stopped), then the folder
  return 0;
}

// Writes a string / a hex number to stderr (async-signal-safe).
void Say(const char* s) { [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, s, std::strlen(s)); }
void SayHex(uint64_t v) {
  char buf[19] = "0x";
  for (int i = 0; i < 16; ++i) buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  buf[18] = 0;
  Say(buf);
}

// The executable mappings of the process, read once in the handler.
struct Mapping {
  uint64_t begin, end, offset;
  char name[160];
};
Mapping g_maps[1024];
int g_num_maps = 0;
void ReadMaps() {
  static char text[1 << 20];
  const int fd = open("/proc/self/maps", O_RDONLY);
  if (fd < 0) return;
  size_t len = 0;
  ssize_t r;
  while (len < sizeof(text) - 1 && (r = read(fd, text + len, sizeof(text) - 1 - len)) > 0) len += r;
  close(fd);
  text[len] = 0;
  for (char* line = text; *line && g_num_maps < 1024;) {
    char* end = std::strchr(line, '\n');
    if (end) *end = 0;
    unsigned long long b = 0, e = 0, off = 0;
    char perms[8] = {0};
    int name_at = 0;
    if (std::sscanf(line, "%llx-%llx %7s %llx %*s %*s %n", &b, &e, perms, &off, &name_at) >= 4 && perms[2] == 'x') {
      Mapping& m = g_maps[g_num_maps++];
      m.begin = b, m.end = e, m.offset = off;
      std::snprintf(m.name, sizeof(m.name), "%s", name_at > 0 ? line + name_at : "?");
    }
    if (!end) break;
    line = end + 1;
  }
}
const Mapping* FindMapping(uint64_t a) {
  for (int i = 0; i < g_num_maps; ++i) {
    if (a >= g_maps[i].begin && a < g_maps[i].end) return &g_maps[i];
  }
  return nullptr;
}
// "0xADDR lib+0xOFF symbol+0xD" for a code address.
void SayCode(uint64_t a) {
  SayHex(a);
  const Mapping* m = FindMapping(a);
  if (m == nullptr) {
    Say(" (not in an executable mapping)");
    return;
  }
  Say(" ");
  Say(m->name);
  Say("+");
  SayHex(a - m->begin + m->offset);
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(a), &info) != 0 && info.dli_sname != nullptr) {
    Say(" ");
    Say(info.dli_sname);
    Say("+");
    SayHex(a - reinterpret_cast<uint64_t>(info.dli_saddr));
  }
}

// A crash prints where it happened before the process dies: the signal, the thread, the main thread's last phase,
// the faulting instruction, and the code addresses found on the stack (glibc's backtrace stops at a jump to a bad
// address, as in the served mode's old crash at exit, or in code without unwind tables). Best effort: sscanf,
// dladdr and opendir are not async-signal-safe, which a process that is dying anyway can afford.
void PrintCrashAndDie(int signal, siginfo_t* info, void* context) {
  ReadMaps();
  const auto* uc = static_cast<ucontext_t*>(context);
  const uint64_t rip = uc->uc_mcontext.gregs[REG_RIP], rsp = uc->uc_mcontext.gregs[REG_RSP];
  char line[256];
  char comm[64] = "?";
  std::snprintf(line, sizeof(line), "/proc/self/task/%ld/comm", static_cast<long>(syscall(SYS_gettid)));
  if (const int fd = open(line, O_RDONLY); fd >= 0) {
    const ssize_t n = read(fd, comm, sizeof(comm) - 1);
    comm[n > 0 ? n - 1 : 0] = 0;
    close(fd);
  }
  std::snprintf(line, sizeof(line),
                "spargo_engine_bench: fatal signal %d (code %d, from pid %d) at address ", signal, info->si_code,
                static_cast<int>(info->si_pid));
  Say(line);
  SayHex(reinterpret_cast<uint64_t>(info->si_addr));
  std::snprintf(line, sizeof(line), " in thread %ld '%s' (main thread %d); main's last phase: ",
                static_cast<long>(syscall(SYS_gettid)), comm, static_cast<int>(getpid()));
  Say(line);
  Say(g_phase.load());
  Say("\nrip ");
  SayCode(rip);
  Say("\nrsp ");
  SayHex(rsp);
  Say(" rbp ");
  SayHex(uc->uc_mcontext.gregs[REG_RBP]);
  Say("\ncode addresses on the stack (innermost first):\n");
  const auto* stack = reinterpret_cast<const uint64_t*>(rsp);
  for (int i = 0, shown = 0; i < 2048 && shown < 40; ++i) {
    const uint64_t w = stack[i];
    if (FindMapping(w) == nullptr) continue;
    std::snprintf(line, sizeof(line), "  [rsp+%d] ", 8 * i);
    Say(line);
    SayCode(w);
    Say("\n");
    ++shown;
  }
  Say("threads:");
  if (DIR* dir = opendir("/proc/self/task")) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      char path[300];
      std::snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
      char name[64] = "?";
      if (const int fd = open(path, O_RDONLY); fd >= 0) {
        const ssize_t n = read(fd, name, sizeof(name) - 1);
        name[n > 0 ? n - 1 : 0] = 0;
        close(fd);
      }
      Say(" ");
      Say(e->d_name);
      Say(":");
      Say(name);
    }
    closedir(dir);
  }
  Say("\nbacktrace:\n");
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

void InstallCrashHandler() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_sigaction = PrintCrashAndDie;
  action.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(s, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  spargo::UseFastBlasKernels(argv);  // may execute the program again (common/blas_kernels.h)
  InstallCrashHandler();
  absl::ParseCommandLine(argc, argv);
  using namespace spargo;
  const std::string name = absl::GetFlag(FLAGS_config), device_name = absl::GetFlag(FLAGS_device);
  if ((name != "tiny" && name != "160m") || (device_name == "cuda" && !torch::cuda::is_available())) {
    std::cerr << "--config tiny|160m; --device cuda needs a CUDA libtorch and device\n";
    return 2;
  }
  // An explicit index: the allocator's statistics want one.
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::ScalarType dtype = absl::GetFlag(FLAGS_dtype) == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  torch::manual_seed(0);
  model::Dsv32Config config = bench::BenchConfig(name);
  for (int64_t length : ParsePositiveList(absl::GetFlag(FLAGS_lengths))) {
    config.max_position_embeddings = std::max<int64_t>(config.max_position_embeddings, length + 1);
  }
  model::Dsv32Model m(config);
  m.To(device, dtype);
  EngineOptions base;
  base.block_size = absl::GetFlag(FLAGS_block_size);
  base.prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
  const std::vector<std::string> graph_modes = absl::StrSplit(absl::GetFlag(FLAGS_graphs), ',');
  base.graphs = GraphMode(graph_modes.front());
  const int prompt = absl::GetFlag(FLAGS_prompt);
  std::printf("DeepSeek-V3.2 %s, %s, %s, engine blocks of %lld tokens, prefill chunks of %lld tokens\n", name.c_str(),
              device_name.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), static_cast<long long>(base.block_size),
              static_cast<long long>(base.prefill_tokens));
  for (absl::string_view mode : absl::StrSplit(absl::GetFlag(FLAGS_modes), ',')) {
    if (mode == "decode") {
      const int fresh = absl::GetFlag(FLAGS_new_tokens);
      std::printf("\n| batch | prompt | new tokens | decode calls | generate s | new tokens/s | graphs / replays | "
                  "ms per step (in draws) |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
      for (int64_t b : ParsePositiveList(absl::GetFlag(FLAGS_batches))) {
        for (const std::string& graphs : graph_modes) {
          EngineOptions eo = base;
          eo.graphs = GraphMode(graphs);
          EngineStats stats;
          absl::StatusOr<Timed> run = DecodeInProcess(m, eo, device, RandomPrompts(b, prompt, m.vocab_size(), 1),
                                                      DecodeOptions(fresh), &stats);
          if (!run.ok()) {
            std::cerr << run.status() << "\n";
            return 1;
          }
          const double steps = static_cast<double>(std::max<int64_t>(stats.steps, 1));
          std::printf("| %lld | %d | %d | %s | %.3f | %.0f | %lld / %lld | %.3f (%.3f) |\n", static_cast<long long>(b),
                      prompt, fresh, graphs.c_str(), run->seconds, NewTokens(run->groups) / run->seconds,
                      static_cast<long long>(stats.decode_graphs), static_cast<long long>(stats.graph_replays),
                      1e3 * stats.step_seconds / steps, 1e3 * stats.draw_seconds / steps);
          std::fflush(stdout);
        }
      }
    } else if (mode == "grpo") {
      const int groups = absl::GetFlag(FLAGS_groups), g = absl::GetFlag(FLAGS_group_size);
      const GrpoLoad load = MakeGrpoLoad(groups, g, prompt, absl::GetFlag(FLAGS_min_new), absl::GetFlag(FLAGS_max_new),
                                         m.vocab_size());
      EngineStats stats;
      absl::StatusOr<Timed> run = GrpoInProcess(m, base, device, load, &stats);
      if (!run.ok()) {
        std::cerr << run.status() << "\n";
        return 1;
      }
      const int64_t total = NewTokens(run->groups);
      const double s = run->seconds;
      std::printf("\n| prompts x samples | prompt | completion budgets | new tokens | batch s | new tokens/s |\n"
                  "| --- | --- | --- | --- | --- | --- |\n| %d x %d | %d | %d..%d | %lld | %.2f | %.0f |\n",
                  groups, g, prompt, absl::GetFlag(FLAGS_min_new), absl::GetFlag(FLAGS_max_new),
                  static_cast<long long>(total), s, total / s);
      PrintStats(stats);
    } else if (mode == "served") {
      if (const int code = RunServed(m, base, device, dtype); code != 0) return code;
      Phase("main: after the served mode");
    } else if (mode == "prefill") {
      std::printf("\n| prompt | prefill s | prefill tokens/s | peak GiB besides weights (cache + activations) |\n| --- | --- | --- | --- |\n");
      for (int64_t length : ParsePositiveList(absl::GetFlag(FLAGS_lengths))) {
        std::vector<GroupRequest> prompts = RandomPrompts(1, length, m.vocab_size(), 4);
        SamplingOptions o;
        o.max_new_tokens = 1;
        o.temperature = 0;
        EngineOptions eo = base;
        eo.num_blocks = GenerationEngine::WorstCaseBlocks(prompts, o, eo.block_size);
        eo.prefix_cache = false;
        double s = 0, peak = -1;
        {
          auto engine = GenerationEngine::Create(&m, eo);
          if (!engine.ok()) {
            std::cerr << engine.status() << "\n";
            return 1;
          }
          (*engine)->Generate(RandomPrompts(1, std::min<int64_t>(length, 512), m.vocab_size(), 5), o).IgnoreError();
          double weights = 0;
          for (const auto& p : m.parameters()) weights += static_cast<double>(p.numel() * p.element_size());
          ResetPeak(device);
          s = Seconds(device, [&] { (*engine)->Generate(prompts, o).IgnoreError(); });
          peak = PeakGib(device);
          if (peak >= 0) peak -= weights / (1ull << 30);
        }
        std::printf("| %lld | %.3f | %.0f | %.2f |\n", static_cast<long long>(length), s, length / s, peak);
        std::fflush(stdout);
      }
    } else {
      std::cerr << "unknown mode '" << mode << "'\n";
      return 2;
    }
  }
  Phase("main: returning");
  return 0;
}
