#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/atomic_file.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace spargo::model {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100 << 20;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t bytes;
};

const DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},   {"F8_E4M3", torch::kUInt8, 1},
};

const DtypeInfo* FindDtype(const std::string& name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const char* DtypeName(torch::ScalarType t) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.type == t && std::strcmp(d.name, "F8_E4M3") != 0) return d.name;
  }
  return nullptr;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status ReadFully(int fd, void* dst, size_t n, uint64_t offset, const std::string& what) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got <= 0) return absl::DataLossError(absl::StrCat(what, ": short read at byte ", offset));
    p += got;
    n -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

}  // namespace

float Fp8E4m3ToFloat(uint8_t b) {
  const int sign = b >> 7, exponent = (b >> 3) & 0xF, mantissa = b & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return NAN;
  float v = exponent == 0 ? std::ldexp(static_cast<float>(mantissa) / 8.0f, -6)
                          : std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
  return sign ? -v : v;
}

absl::StatusOr<torch::Tensor> DequantizeFp8(const torch::Tensor& bytes, const torch::Tensor& scale_inv, int64_t block) {
  if (bytes.dim() != 2 || bytes.scalar_type() != torch::kUInt8) {
    return absl::InvalidArgumentError("FP8 weight must be a 2-D tensor of e4m3 bytes");
  }
  const int64_t rows = bytes.size(0), cols = bytes.size(1);
  const int64_t br = (rows + block - 1) / block, bc = (cols + block - 1) / block;
  if (scale_inv.dim() != 2 || scale_inv.size(0) != br || scale_inv.size(1) != bc) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 block scales have shape [",
                                                   absl::StrJoin(scale_inv.sizes(), ", "), "]; a [", rows, ", ",
                                                   cols, "] weight needs [", br, ", ", bc, "]"));
  }
  static const torch::Tensor kTable = [] {
    torch::Tensor t = torch::empty({256}, torch::kFloat32);
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4m3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  torch::Tensor values = kTable.index_select(0, bytes.reshape({-1}).to(torch::kInt64)).reshape({rows, cols});
  torch::Tensor scales = scale_inv.to(torch::kFloat32)
                             .repeat_interleave(block, 0)
                             .repeat_interleave(block, 1)
                             .index({torch::indexing::Slice(0, rows), torch::indexing::Slice(0, cols)});
  return values * scales;
}

namespace {

// Reads `n` bytes at `offset` of the data being parsed into `dst`.
using ByteReader = std::function<absl::Status(void* dst, size_t n, uint64_t offset, const std::string& what)>;

// The format's checks, over any byte source of `size` bytes named `path` in messages.
absl::StatusOr<TensorMap> ParseSafetensors(const ByteReader& read, uint64_t file_size, const std::string& path,
                                           std::set<std::string>* fp8_names) {
  if (file_size < 8) return absl::DataLossError(absl::StrCat(path, ": ", file_size, " bytes, shorter than the header size"));
  unsigned char len_bytes[8];
  SPARGO_RETURN_IF_ERROR(read(len_bytes, 8, 0, path));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header claims ", header_len, " bytes; the file has ",
                                            file_size - 8, " after the length"));
  }
  std::string header(header_len, '\0');
  SPARGO_RETURN_IF_ERROR(read(header.data(), header_len, 8, path));
  json j = ParseBoundedJson(header);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat(path, ": header is not a JSON object"));
  const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
  TensorMap out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, info] : j.items()) {
    if (name == "__metadata__") continue;
    const std::string where = absl::StrCat(path, ": tensor '", name, "'");
    if (!info.is_object() || !info.contains("dtype") || !info["dtype"].is_string() || !info.contains("shape") ||
        !info["shape"].is_array() || !info.contains("data_offsets") || !info["data_offsets"].is_array() ||
        info["data_offsets"].size() != 2) {
      return absl::DataLossError(where + ": needs dtype, shape and data_offsets [begin, end]");
    }
    const DtypeInfo* dtype = FindDtype(info["dtype"].get<std::string>());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": dtype ", info["dtype"].get<std::string>(),
                                                     " is not supported"));
    }
    std::vector<int64_t> shape;
    // The element count, checked against the data bytes as it grows: dimensions whose product wraps around
    // 2^64 ([2^32, 2^32] is 0) would otherwise pass the size check and reach torch::empty.
    uint64_t numel = 1;
    bool zero = false, too_many = false;
    for (const json& d : info["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) {
        return absl::DataLossError(where + ": shape entries must be non-negative integers");
      }
      const uint64_t dim = d.get<uint64_t>();
      shape.push_back(static_cast<int64_t>(dim));
      if (dim == 0) zero = true;
      if (dim == 0 || too_many) continue;
      if (numel > data_size / dim) too_many = true;
      else numel *= dim;
    }
    if (zero) numel = 0;
    if (too_many && !zero) {
      return absl::DataLossError(absl::StrCat(where, ": shape [", absl::StrJoin(shape, ", "),
                                              "] has more elements than the ", data_size, " data bytes can hold"));
    }
    const json& offs = info["data_offsets"];
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      return absl::DataLossError(where + ": data_offsets must be non-negative integers");
    }
    const uint64_t begin = offs[0], end = offs[1];
    if (begin > end || end > data_size) {
      return absl::DataLossError(absl::StrCat(where, ": bytes [", begin, ", ", end, ") lie outside the ", data_size,
                                              " data bytes (file truncated?)"));
    }
    if (end - begin != numel * static_cast<uint64_t>(dtype->bytes)) {
      return absl::DataLossError(absl::StrCat(where, ": bytes [", begin, ", ", end, ") hold ", end - begin,
                                              " bytes; shape and dtype need ", numel * dtype->bytes));
    }
    ranges.push_back({begin, end});
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype->type));
    if (numel > 0) SPARGO_RETURN_IF_ERROR(read(t.data_ptr(), end - begin, data_start + begin, where));
    if (fp8_names != nullptr && std::strcmp(dtype->name, "F8_E4M3") == 0) fp8_names->insert(name);
    out.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::DataLossError(absl::StrCat(path, ": tensors overlap at bytes [", ranges[i].first, ", ",
                                              ranges[i - 1].second, ")"));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path, std::set<std::string>* fp8_names) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot be opened"));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return absl::DataLossError(absl::StrCat(path, ": cannot stat"));
  const ByteReader read = [&](void* dst, size_t n, uint64_t offset, const std::string& what) {
    return ReadFully(fd.get(), dst, n, offset, what);
  };
  return ParseSafetensors(read, static_cast<uint64_t>(st.st_size), path, fp8_names);
}

absl::StatusOr<TensorMap> DecodeSafetensors(std::string_view bytes, const std::string& what) {
  const ByteReader read = [&](void* dst, size_t n, uint64_t offset, const std::string& where) -> absl::Status {
    if (offset > bytes.size() || n > bytes.size() - offset) {
      return absl::DataLossError(absl::StrCat(where, ": short read at byte ", offset));
    }
    if (n > 0) std::memcpy(dst, bytes.data() + offset, n);
    return absl::OkStatus();
  };
  return ParseSafetensors(read, bytes.size(), what, nullptr);
}

absl::StatusOr<TensorMap> LoadCheckpointTensors(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::vector<std::string> files;
  std::map<std::string, std::string> expected;  // tensor -> shard, from the index
  std::ifstream index(index_path);
  if (index) {
    std::stringstream ss;
    ss << index.rdbuf();
    json j = ParseBoundedJson(ss.str());
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::DataLossError(index_path + ": no weight_map object");
    }
    std::set<std::string> shards;
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return absl::DataLossError(absl::StrCat(index_path, ": weight_map['", name, "'] is not a file name"));
      }
      shards.insert(file.get<std::string>());
      expected[name] = file.get<std::string>();
    }
    files.assign(shards.begin(), shards.end());
  } else {
    files.push_back("model.safetensors");
  }
  TensorMap all;
  std::set<std::string> fp8;
  for (const std::string& f : files) {
    SPARGO_ASSIGN_OR_RETURN(TensorMap part, ReadSafetensors(dir + "/" + f, &fp8));
    for (auto& [name, t] : part) {
      if (!expected.empty()) {
        auto it = expected.find(name);
        if (it == expected.end() || it->second != f) {
          return absl::DataLossError(absl::StrCat(dir, "/", f, ": tensor '", name, "' is not mapped to this shard in ",
                                                  "model.safetensors.index.json"));
        }
      }
      if (!all.emplace(name, std::move(t)).second) {
        return absl::DataLossError(absl::StrCat(dir, ": tensor '", name, "' appears in two shards"));
      }
    }
  }
  for (const auto& [name, file] : expected) {
    if (!all.count(name)) {
      return absl::DataLossError(absl::StrCat(dir, "/", file, ": tensor '", name, "' listed in the index is missing"));
    }
  }
  // Dequantise FP8 weights through their block scales.
  std::vector<std::string> scale_names;
  for (const std::string& name : fp8) {
    const std::string scale = name + "_scale_inv";
    auto it = all.find(scale);
    if (it == all.end()) {
      return absl::DataLossError(absl::StrCat(dir, ": F8_E4M3 tensor '", name, "' has no '", scale, "' block scales"));
    }
    absl::StatusOr<torch::Tensor> dq = DequantizeFp8(all[name], it->second);
    if (!dq.ok()) return Annotate(dq.status(), absl::StrCat(dir, ": '", name, "'"));
    all[name] = *std::move(dq);
    scale_names.push_back(scale);
  }
  for (const std::string& s : scale_names) all.erase(s);
  return all;
}

absl::StatusOr<std::string> EncodeSafetensors(const TensorMap& tensors,
                                              const std::map<std::string, std::string>& metadata,
                                              const std::set<std::string>& fp8_names) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<torch::Tensor> contiguous;
  for (const auto& [name, t] : tensors) {
    const bool fp8 = fp8_names.count(name) > 0;
    if (fp8 && t.scalar_type() != torch::kUInt8) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': F8_E4M3 needs uint8 e4m3 bytes"));
    }
    const char* dtype = fp8 ? "F8_E4M3" : DtypeName(t.scalar_type());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': dtype ", c10::toString(t.scalar_type()),
                                                     " cannot be written"));
    }
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(c);
  }
  std::string head = header.dump();
  while ((8 + head.size()) % 8 != 0) head.push_back(' ');  // keeps tensor data 8-byte aligned
  std::string out;
  out.reserve(8 + head.size() + offset);
  const uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  out += head;
  for (const torch::Tensor& c : contiguous) {
    out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * c.element_size());
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata,
                              const std::set<std::string>& fp8_names) {
  SPARGO_ASSIGN_OR_RETURN(std::string bytes, EncodeSafetensors(tensors, metadata, fp8_names));
  return WriteFileAtomically(path, bytes);
}

}  // namespace spargo::model
