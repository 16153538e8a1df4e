// Paged storage of the per-token decode cache, the seam between the models' incremental evaluation and the rollout
// engine's memory management (rollout/engine.h).
//  - KvPool: for each layer and each of the model's cache fields (DeepSeek-V3.2: [MLA latent | shared rope key] and
//    the indexer key, or with the FP8 indexer its e4m3 bytes and its per-token scale; the tiny transformer: K and V)
//    one tensor [num_blocks, block_size, dim] of the field's own dtype, zero-initialised. Blocks are handed out by
//    the engine; the pool knows nothing of sequences.
//  - PagedRows: how one model call addresses the pool: token p of row b lives in block block_table[b, p /
//    block_size] at offset p % block_size. Table entries past a row's blocks are 0 (never read unmasked).
//  - KvAccess: what a model's cached attention needs from storage within one call, whichever layout holds it: write
//    the new tokens' entries, read every row's first S entries. PagedKv implements it over a pool; a model's own
//    contiguous cache can implement it too, so one attention code path serves both.
// Everything lives on the pool's device; the block table and lengths must be there too.
#ifndef SPARGO_MODEL_KV_PAGES_H_
#define SPARGO_MODEL_KV_PAGES_H_

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace spargo::model {

// One per-token cache field: its width and element type.
struct KvFieldSpec {
  int64_t dim = 0;
  torch::ScalarType dtype = torch::kFloat32;
  bool operator==(const KvFieldSpec& o) const { return dim == o.dim && dtype == o.dtype; }
  bool operator!=(const KvFieldSpec& o) const { return !(*this == o); }
};

// Fields of the given widths, all of one dtype.
std::vector<KvFieldSpec> KvFieldsOf(const std::vector<int64_t>& dims, torch::ScalarType dtype);

class KvPool {
 public:
  // fields: each cache field's width and dtype, the same for every layer; every tensor on `device`.
  KvPool(int64_t num_layers, std::vector<KvFieldSpec> fields, int64_t num_blocks, int64_t block_size,
         torch::Device device);
  int64_t num_layers() const { return num_layers_; }
  int64_t num_fields() const { return static_cast<int64_t>(specs_.size()); }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  const std::vector<KvFieldSpec>& fields() const { return specs_; }
  std::vector<int64_t> field_dims() const;
  // [num_blocks, block_size, fields()[field].dim] of fields()[field].dtype
  torch::Tensor& field(int64_t layer, int64_t field) { return fields_[layer * num_fields() + field]; }
  // Copies block `src` onto block `dst` in every layer and field (copy on write of a shared block).
  void CopyBlock(int64_t src, int64_t dst);
  // Bytes one block takes over all layers and fields (each field at its own element size).
  static int64_t BytesPerBlock(int64_t num_layers, const std::vector<KvFieldSpec>& fields, int64_t block_size);

 private:
  int64_t num_layers_;
  std::vector<KvFieldSpec> specs_;
  int64_t num_blocks_, block_size_;
  std::vector<torch::Tensor> fields_;  // [layer * num_fields + field]
};

struct PagedRows {
  torch::Tensor block_table;  // [B, max_blocks] int64
  torch::Tensor lengths;      // [B] int64: tokens already in the cache
  torch::Tensor new_tokens;   // [B] int64: how many of the call's T tokens are real (the rest is padding)
};

class KvAccess {
 public:
  virtual ~KvAccess() = default;
  // Stores values [M, dim] as the entries of rows[m] at positions at[m] ([M] int64 each). Floating fields take any
  // floating values (converted); other fields (e.g. e4m3 bytes) only values of their own dtype.
  virtual void Write(int64_t layer, int64_t field, const torch::Tensor& rows, const torch::Tensor& at,
                     const torch::Tensor& values) = 0;
  // Every row's entries at positions [0, s): [B, s, dim]. Positions a row does not hold yet are finite garbage.
  virtual torch::Tensor Read(int64_t layer, int64_t field, int64_t s) = 0;
  // The field's whole storage as rows [N, dim] (a view, no copy), and where row b's position p lives in it:
  // positions [B, ...] int64 -> [B, ...] int64 storage rows (negative positions stay -1). A kernel reads the entries
  // in place through these (kernels/sparse_mla.h).
  virtual torch::Tensor Storage(int64_t layer, int64_t field) = 0;
  virtual torch::Tensor StorageRows(const torch::Tensor& positions) = 0;
  // The storage rows of every row's positions [0, s): [B, s] int64, StorageRows of those positions, the same for
  // every layer and field. A call computes it once and gathers from it (a decode step's writes and selected keys).
  virtual torch::Tensor PositionRows(int64_t s) = 0;
};

// KvAccess over a pool through one call's block table.
class PagedKv : public KvAccess {
 public:
  PagedKv(KvPool* pool, torch::Tensor block_table) : pool_(pool), block_table_(std::move(block_table)) {}
  void Write(int64_t layer, int64_t field, const torch::Tensor& rows, const torch::Tensor& at,
             const torch::Tensor& values) override;
  torch::Tensor Read(int64_t layer, int64_t field, int64_t s) override;
  torch::Tensor Storage(int64_t layer, int64_t field) override;
  torch::Tensor StorageRows(const torch::Tensor& positions) override;
  torch::Tensor PositionRows(int64_t s) override;

 private:
  KvPool* pool_;
  torch::Tensor block_table_;  // [B, max_blocks] int64
};

}  // namespace spargo::model

#endif  // SPARGO_MODEL_KV_PAGES_H_
