#include "rollout/weight_stream.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/crc32.h"
#include "common/service_security.h"
#include "common/status_macros.h"
#include "common/utf8.h"

namespace spargo::rollout {
namespace {

int64_t ElementBytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

torch::ScalarType TorchType(const std::string& dtype) {
  return dtype == "F32" ? torch::kFloat32 : (dtype == "BF16" ? torch::kBFloat16 : torch::kFloat16);
}

// At most the first 16 dimensions (a hostile chunk may declare thousands).
std::string ShapeText(const std::vector<int64_t>& shape) {
  constexpr size_t kShown = 16;
  if (shape.size() <= kShown) return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.begin() + kShown, ", "), ", ... (", shape.size(),
                      " dimensions)]");
}

}  // namespace

uint64_t ThisProcessRunId() {
  static const uint64_t id = [] {
    std::random_device device;
    uint64_t v = 0;
    while (v == 0) v = (uint64_t{device()} << 32) ^ device() ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    return v;
  }();
  return id;
}

uint32_t ChunkCrc32(const std::string& data) { return Crc32(data); }

absl::Status WeightAssembler::Bad(const std::string& what) const {
  // Names and dtypes come from the sender: the message is bounded whatever they hold.
  constexpr size_t kMaxWhat = 1024;
  if (what.size() <= kMaxWhat) return absl::InvalidArgumentError(absl::StrCat("weight update: ", what));
  return absl::InvalidArgumentError(
      absl::StrCat("weight update: ", Utf8Lossy(absl::string_view(what).substr(0, kMaxWhat)), "... (cut)"));
}

// A tensor's first chunk: its name, dtype and shape are checked (against the served model when known) and the
// bytes it declares counted against the limit. Nothing is allocated here.
absl::Status WeightAssembler::Begin(const WeightChunk& c) {
  const std::string& name = c.tensor_name();
  if (!current_.empty() && done_.count(current_) == 0) {
    return Bad(absl::StrCat("tensor '", current_, "' ended at byte ", buffer_.size(), " of ", expected_bytes_));
  }
  if (done_.count(name) > 0) return Bad(absl::StrCat("tensor '", name, "' sent twice"));
  const int64_t element = ElementBytes(c.dtype());
  if (element == 0) return Bad(absl::StrCat("tensor '", name, "': dtype '", c.dtype(), "' (F32, BF16, F16)"));
  const std::vector<int64_t> shape(c.shape().begin(), c.shape().end());
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && numel > max_total_bytes_ / d)) {
      return Bad(absl::StrCat("tensor '", name, "': bad or oversized shape ", ShapeText(shape)));
    }
    numel *= d;
  }
  if (!expected_.empty()) {
    auto it = expected_.find(name);
    if (it == expected_.end()) return Bad(absl::StrCat("tensor '", name, "' is not a tensor of the served model"));
    int64_t model_numel = 1;
    for (int64_t d : it->second) model_numel *= d;
    // The exact shape is checked when the update is applied, all or nothing; what matters here is that a tensor
    // can never declare more than the model's own.
    if (numel > model_numel) {
      return Bad(absl::StrCat("tensor '", name, "' declares shape ", ShapeText(shape), " (", numel,
                              " elements); the served model's is ", ShapeText(it->second), " (", model_numel, ")"));
    }
  }
  if (numel > (max_total_bytes_ - total_bytes_) / element) {
    return Bad(absl::StrCat("tensor '", name, "' takes the update past ", max_total_bytes_, " bytes"));
  }
  current_ = name;
  dtype_ = c.dtype();
  shape_ = shape;
  expected_bytes_ = numel * element;
  total_bytes_ += expected_bytes_;
  std::string().swap(buffer_);
  return absl::OkStatus();
}

absl::Status WeightAssembler::Add(const WeightChunk& c) {
  if (committed_) return Bad("chunk after the committing chunk");
  if (!started_) {
    started_ = true;
    version_ = c.policy_version();
    run_id_ = c.run_id();
  } else if (c.policy_version() != version_ || c.run_id() != run_id_) {
    return Bad(absl::StrCat("chunk of policy_version ", c.policy_version(), " (run ", c.run_id(),
                            ") in a stream of version ", version_, " (run ", run_id_, ")"));
  }
  if (c.tensor_name().empty()) return Bad("chunk without tensor_name");
  if (c.tensor_name() != current_) {
    SPARGO_RETURN_IF_ERROR(Begin(c));
  } else if (done_.count(current_) > 0) {
    return Bad(absl::StrCat("tensor '", current_, "': chunk after it was complete"));
  } else if (c.dtype() != dtype_ || !std::equal(shape_.begin(), shape_.end(), c.shape().begin(), c.shape().end())) {
    return Bad(absl::StrCat("tensor '", current_, "': dtype or shape changed between chunks"));
  }
  if (ChunkCrc32(c.data()) != c.crc32()) {
    return Bad(absl::StrCat("tensor '", current_, "': chunk at byte ", c.offset_bytes(),
                            " does not match its CRC-32 (corrupted in transit)"));
  }
  if (c.offset_bytes() != buffer_.size()) {
    return Bad(absl::StrCat("tensor '", current_, "': chunk at byte ", c.offset_bytes(), ", expected ", buffer_.size()));
  }
  const int64_t needed = static_cast<int64_t>(buffer_.size() + c.data().size());
  if (needed > expected_bytes_) {
    return Bad(absl::StrCat("tensor '", current_, "': data past its ", expected_bytes_, " bytes"));
  }
  // Grow with the data: at most twice what has arrived, never past the declared size.
  if (static_cast<int64_t>(buffer_.capacity()) < needed) {
    buffer_.reserve(static_cast<size_t>(
        std::min(expected_bytes_, std::max(needed, 2 * static_cast<int64_t>(buffer_.capacity())))));
  }
  buffer_.append(c.data());
  if (static_cast<int64_t>(buffer_.size()) == expected_bytes_) {
    torch::Tensor t = torch::empty(shape_, torch::TensorOptions().dtype(TorchType(dtype_)));
    if (expected_bytes_ > 0) std::memcpy(t.data_ptr(), buffer_.data(), buffer_.size());
    done_[current_] = t;
    std::string().swap(buffer_);
  }
  if (c.commit()) {
    if (done_.count(current_) == 0) return Bad(absl::StrCat("commit before tensor '", current_, "' was complete"));
    committed_ = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<model::TensorMap> WeightAssembler::Take() {
  if (!committed_) return absl::FailedPreconditionError("weight update: the stream ended without a commit");
  return std::move(done_);
}

absl::StatusOr<UpdateWeightsResponse> SendWeights(RolloutService::Stub& stub, const model::TensorMap& tensors,
                                                  uint64_t version, int64_t chunk_bytes, absl::Time deadline,
                                                  const std::string& token, uint64_t run_id) {
  if (chunk_bytes <= 0) return absl::InvalidArgumentError("chunk_bytes must be positive");
  if (tensors.empty()) return absl::InvalidArgumentError("no tensors to send");
  grpc::ClientContext context;
  PrepareClientContext(deadline, token, &context);
  UpdateWeightsResponse response;
  std::unique_ptr<grpc::ClientWriter<WeightChunk>> writer = stub.UpdateWeights(&context, &response);
  size_t index = 0;
  for (const auto& [name, tensor] : tensors) {
    ++index;
    torch::Tensor t = tensor.detach().cpu().contiguous();
    const char* dtype = t.scalar_type() == torch::kFloat32    ? "F32"
                        : t.scalar_type() == torch::kBFloat16 ? "BF16"
                        : t.scalar_type() == torch::kFloat16  ? "F16"
                                                              : nullptr;
    if (dtype == nullptr) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': not a float tensor"));
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    const char* data = static_cast<const char*>(t.data_ptr());
    int64_t offset = 0;
    do {
      const int64_t n = std::min(chunk_bytes, bytes - offset);
      WeightChunk chunk;
      chunk.set_policy_version(version);
      chunk.set_run_id(run_id);
      chunk.set_tensor_name(name);
      chunk.set_dtype(dtype);
      for (int64_t d : t.sizes()) chunk.add_shape(d);
      chunk.set_offset_bytes(static_cast<uint64_t>(offset));
      chunk.set_data(data + offset, static_cast<size_t>(n));
      chunk.set_crc32(ChunkCrc32(chunk.data()));
      offset += n;
      chunk.set_commit(index == tensors.size() && offset == bytes);
      if (!writer->Write(chunk)) break;  // the server ended the call: its status says why
    } while (offset < bytes);
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("UpdateWeights: ", status.error_message()));
  }
  return response;
}

}  // namespace spargo::rollout
