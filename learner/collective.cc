#include "learner/collective.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "learner/process_group_backend.h"

namespace spargo::learner {
namespace {

// The variable's value, or null when unset or empty.
const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

absl::Status ParseIntVar(const char* name, int min, int max, int* out) {
  const char* v = Env(name);
  if (v == nullptr) return absl::OkStatus();
  if (!absl::SimpleAtoi(v, out) || *out < min || *out > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, " = '", v, "': expected an integer in ", min, "..", max));
  }
  return absl::OkStatus();
}

class ProcessGroupCollective final : public Collective {
 public:
  ProcessGroupCollective(int rank, int world_size, torch::Device device, c10::intrusive_ptr<c10d::Store> store,
                         std::unique_ptr<ProcessGroupBackend> backend)
      : rank_(rank), world_size_(world_size), device_(device), store_(std::move(store)), backend_(std::move(backend)) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  torch::Device device() const override { return device_; }

  absl::Status AllReduceSum(const std::vector<torch::Tensor>& tensors) override {
    SPARGO_RETURN_IF_ERROR(Check(tensors, "all-reduce"));
    return CallCatching("all-reduce", [&] {
      for (torch::Tensor t : tensors) backend_->AllReduceSum(t);
    });
  }

  absl::Status Broadcast(const std::vector<torch::Tensor>& tensors, int root) override {
    if (root < 0 || root >= world_size_) {
      return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " outside 0..", world_size_ - 1));
    }
    SPARGO_RETURN_IF_ERROR(Check(tensors, "broadcast"));
    return CallCatching("broadcast", [&] {
      for (torch::Tensor t : tensors) backend_->Broadcast(t, root);
    });
  }

  absl::Status Post(const std::string& key, const std::string& value) override {
    return CallCatching(absl::StrCat("posting ", key), [&] {
      store_->set(absl::StrCat("spargo/", key), std::vector<uint8_t>(value.begin(), value.end()));
    });
  }

  absl::StatusOr<std::string> Await(const std::string& key) override {
    return CallCatching(absl::StrCat("waiting for ", key, " from rank 0"), [&]() -> absl::StatusOr<std::string> {
      const std::string k = absl::StrCat("spargo/", key);
      // Rank 0 may be busy for a long time between posts; it closing the store ends the wait at once.
      store_->wait({k}, std::chrono::hours(24 * 7));
      const std::vector<uint8_t> v = store_->get(k);
      return std::string(v.begin(), v.end());
    });
  }

 private:
  absl::Status Check(const std::vector<torch::Tensor>& tensors, const char* what) const {
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!tensors[i].defined() || tensors[i].device() != device_ || !tensors[i].is_contiguous()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": tensor ", i, " must be defined, contiguous and on ",
                                                       device_.str()));
      }
    }
    return absl::OkStatus();
  }

  int rank_, world_size_;
  torch::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::unique_ptr<ProcessGroupBackend> backend_;
};

}  // namespace

absl::StatusOr<DistributedEnv> DistributedEnvFromEnvironment() {
  DistributedEnv env;
  const bool torchrun = Env("WORLD_SIZE") != nullptr;
  const bool slurm = !torchrun && Env("SLURM_NTASKS") != nullptr && Env("SLURM_PROCID") != nullptr;
  if (!torchrun && !slurm) return env;
  const char* rank_var = torchrun ? "RANK" : "SLURM_PROCID";
  const char* size_var = torchrun ? "WORLD_SIZE" : "SLURM_NTASKS";
  const char* local_var = torchrun ? "LOCAL_RANK" : "SLURM_LOCALID";
  SPARGO_RETURN_IF_ERROR(ParseIntVar(size_var, 1, 65536, &env.world_size));
  if (env.world_size == 1) return DistributedEnv{};
  if (Env(rank_var) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(size_var, " = ", env.world_size, " but ", rank_var, " is not set"));
  }
  SPARGO_RETURN_IF_ERROR(ParseIntVar(rank_var, 0, env.world_size - 1, &env.rank));
  env.local_rank = env.rank;
  SPARGO_RETURN_IF_ERROR(ParseIntVar(local_var, 0, 65535, &env.local_rank));
  env.local_world_size = env.world_size;
  const char* local_size_var = torchrun ? "LOCAL_WORLD_SIZE" : "SLURM_NTASKS_PER_NODE";
  SPARGO_RETURN_IF_ERROR(ParseIntVar(local_size_var, 1, env.world_size, &env.local_world_size));
  if (const char* addr = Env("MASTER_ADDR")) env.master_addr = addr;
  SPARGO_RETURN_IF_ERROR(ParseIntVar("MASTER_PORT", 1, 65535, &env.master_port));
  env.source = torchrun ? "torchrun" : "slurm";
  return env;
}

int RankThreads(const DistributedEnv& env) {
  if (env.world_size <= 1 || Env("OMP_NUM_THREADS") != nullptr) return 0;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, env.local_world_size));
}

absl::StatusOr<std::shared_ptr<Collective>> JoinCollective(const DistributedEnv& env,
                                                           const CollectiveOptions& options) {
  const auto timeout = std::chrono::milliseconds(absl::ToInt64Milliseconds(options.timeout));
  const std::string where = absl::StrCat("joining the process group as rank ", env.rank, " of ", env.world_size,
                                         " (store ", env.master_addr, ":", env.master_port, ")");
  return CallCatching(where, [&]() -> absl::StatusOr<std::shared_ptr<Collective>> {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = env.world_size;
    so.waitWorkers = false;  // the process group's own rendezvous waits for every rank
    so.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    c10::intrusive_ptr<c10d::Store> group_store = c10::make_intrusive<c10d::PrefixStore>("group", store);
    std::unique_ptr<ProcessGroupBackend> backend;
    if (options.device.is_cuda()) {
      backend = NewNcclBackend(group_store, env.rank, env.world_size, timeout, options.device.index());
      if (backend == nullptr) {
        return absl::UnimplementedError("this build has no NCCL (it needs a CUDA libtorch and nccl.h at build time)");
      }
    } else if (options.device.is_cpu()) {
      const bool loopback = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
      backend = NewGlooBackend(group_store, env.rank, env.world_size, timeout, loopback ? "127.0.0.1" : "");
      if (backend == nullptr) {
        return absl::UnimplementedError(
            "this build has no Gloo (it needs the Gloo headers, libgloo-dev, at build time)");
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("no process group for device ", options.device.str()));
    }
    return std::shared_ptr<Collective>(std::make_shared<ProcessGroupCollective>(
        env.rank, env.world_size, options.device, std::move(store), std::move(backend)));
  });
}

absl::Status BroadcastBytes(Collective& collective, std::string* bytes, int root) {
  const torch::TensorOptions on = torch::TensorOptions().device(collective.device());
  torch::Tensor size = torch::full({1}, static_cast<int64_t>(bytes->size()), on.dtype(torch::kLong));
  SPARGO_RETURN_IF_ERROR(collective.Broadcast({size}, root));
  const int64_t n = size.to(torch::kCPU).item<int64_t>();
  if (n == 0) {
    bytes->clear();
    return absl::OkStatus();
  }
  torch::Tensor data;
  if (collective.rank() == root) {
    data = torch::from_blob(bytes->data(), {n}, torch::kUInt8).to(collective.device(), /*non_blocking=*/false,
                                                                   /*copy=*/true);
  } else {
    data = torch::empty({n}, on.dtype(torch::kUInt8));
  }
  SPARGO_RETURN_IF_ERROR(collective.Broadcast({data}, root));
  if (collective.rank() != root) {
    torch::Tensor host = data.to(torch::kCPU).contiguous();
    bytes->assign(reinterpret_cast<const char*>(host.data_ptr<uint8_t>()), static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status GatherBytes(Collective& collective, const std::string& mine, std::vector<std::string>* all) {
  all->assign(collective.world_size(), "");
  for (int r = 0; r < collective.world_size(); ++r) {
    std::string bytes = r == collective.rank() ? mine : std::string();
    SPARGO_RETURN_IF_ERROR(BroadcastBytes(collective, &bytes, r));
    (*all)[r] = std::move(bytes);
  }
  return absl::OkStatus();
}

std::vector<int64_t> RankSlice(const std::vector<int64_t>& rows, int rank, int world_size) {
  const size_t n = rows.size();
  const size_t begin = n * static_cast<size_t>(rank) / static_cast<size_t>(world_size);
  const size_t end = n * static_cast<size_t>(rank + 1) / static_cast<size_t>(world_size);
  return std::vector<int64_t>(rows.begin() + begin, rows.begin() + end);
}

std::vector<std::vector<int64_t>> RankMicroBatches(const std::vector<std::vector<int64_t>>& micro_batches, int rank,
                                                   int world_size) {
  std::vector<int64_t> all;
  size_t largest = 1;
  for (const auto& mb : micro_batches) {
    all.insert(all.end(), mb.begin(), mb.end());
    largest = std::max(largest, mb.size());
  }
  const std::vector<int64_t> mine = RankSlice(all, rank, world_size);
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < mine.size(); i += largest) {
    out.emplace_back(mine.begin() + i, mine.begin() + std::min(mine.size(), i + largest));
  }
  return out;
}

}  // namespace spargo::learner
