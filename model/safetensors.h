// safetensors files (https://github.com/huggingface/safetensors format): an 8-byte little-endian header length N,
// N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the
// tensor bytes (offsets relative to the end of the header).
//  - ReadSafetensors: every tensor of one file, in its stored dtype (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL);
//    F8_E4M3 tensors come back as uint8 bytes (libtorch 1.13 has no float8 type; see DequantizeFp8).
//    Truncated files, headers that are not JSON, unknown dtypes, sizes that do not match the shape, offsets out of
//    the file or overlapping are DATA_LOSS / INVALID_ARGUMENT errors naming the file, tensor and byte range.
//  - LoadCheckpointTensors: a folder's model.safetensors, or the shards named by model.safetensors.index.json
//    (weight_map), with FP8 weights dequantised to float32 through their "<name>_scale_inv" block scales.
//  - WriteSafetensors: one file, written atomically (temporary file, fsync, rename); tensors in name order.
//  - EncodeSafetensors / DecodeSafetensors: the same bytes in memory, with the same checks.
//  - DequantizeFp8: e4m3 bytes [R, C] times per-block scales [ceil(R/128), ceil(C/128)] -> float32 [R, C].
#ifndef SPARGO_MODEL_SAFETENSORS_H_
#define SPARGO_MODEL_SAFETENSORS_H_

#include <torch/torch.h>

#include <map>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace spargo::model {

using TensorMap = std::map<std::string, torch::Tensor>;

// `fp8_names`, when given, receives the names of the F8_E4M3 tensors (returned as uint8 bytes).
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path, std::set<std::string>* fp8_names = nullptr);
absl::StatusOr<TensorMap> LoadCheckpointTensors(const std::string& dir);
// Tensors named in `fp8_names` must be uint8 e4m3 bytes and are written as F8_E4M3.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}},
                              const std::set<std::string>& fp8_names = {});
// The same format in memory (tensors that travel over gRPC): the bytes WriteSafetensors would write, and the
// tensors of such bytes under ReadSafetensors' checks (`what` names the source in errors).
absl::StatusOr<std::string> EncodeSafetensors(const TensorMap& tensors,
                                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}},
                                              const std::set<std::string>& fp8_names = {});
absl::StatusOr<TensorMap> DecodeSafetensors(std::string_view bytes, const std::string& what);

// The float value of an e4m3fn byte (no infinities; 0x7F/0xFF are NaN).
float Fp8E4m3ToFloat(uint8_t byte);
absl::StatusOr<torch::Tensor> DequantizeFp8(const torch::Tensor& bytes, const torch::Tensor& scale_inv,
                                            int64_t block = 128);

}  // namespace spargo::model

#endif  // SPARGO_MODEL_SAFETENSORS_H_
