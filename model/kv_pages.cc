#include "model/kv_pages.h"

#include <utility>

namespace spargo::model {

std::vector<KvFieldSpec> KvFieldsOf(const std::vector<int64_t>& dims, torch::ScalarType dtype) {
  std::vector<KvFieldSpec> out;
  for (int64_t d : dims) out.push_back({d, dtype});
  return out;
}

KvPool::KvPool(int64_t num_layers, std::vector<KvFieldSpec> fields, int64_t num_blocks, int64_t block_size,
               torch::Device device)
    : num_layers_(num_layers), specs_(std::move(fields)), num_blocks_(num_blocks), block_size_(block_size) {
  TORCH_CHECK(num_layers > 0 && num_blocks > 0 && block_size > 0 && !specs_.empty(),
              "KvPool: layers, blocks, block size and fields must be positive");
  for (const KvFieldSpec& f : specs_) TORCH_CHECK(f.dim > 0, "KvPool: field width ", f.dim, " must be positive");
  // Zeros, not empty: a padded read multiplies unread entries by zero probabilities, and NaN garbage would leak.
  for (int64_t l = 0; l < num_layers; ++l) {
    for (const KvFieldSpec& f : specs_) {
      fields_.push_back(torch::zeros({num_blocks, block_size, f.dim}, torch::TensorOptions(device).dtype(f.dtype)));
    }
  }
}

std::vector<int64_t> KvPool::field_dims() const {
  std::vector<int64_t> dims;
  for (const KvFieldSpec& f : specs_) dims.push_back(f.dim);
  return dims;
}

void KvPool::CopyBlock(int64_t src, int64_t dst) {
  TORCH_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_, "KvPool::CopyBlock: block out of range");
  for (torch::Tensor& f : fields_) f[dst].copy_(f[src]);
}

int64_t KvPool::BytesPerBlock(int64_t num_layers, const std::vector<KvFieldSpec>& fields, int64_t block_size) {
  int64_t bytes = 0;  // one token of one layer
  for (const KvFieldSpec& f : fields) bytes += f.dim * static_cast<int64_t>(c10::elementSize(f.dtype));
  return num_layers * bytes * block_size;
}

void PagedKv::Write(int64_t layer, int64_t field, const torch::Tensor& rows, const torch::Tensor& at,
                    const torch::Tensor& values) {
  torch::Tensor& f = pool_->field(layer, field);  // [N, bs, dim]
  const int64_t bs = pool_->block_size();
  torch::Tensor slots = block_table_.index({rows, at.div(bs, "floor")}) * bs + at.remainder(bs);  // [M]
  TORCH_CHECK(f.is_floating_point() || values.scalar_type() == f.scalar_type(), "PagedKv::Write: field ", field,
              " holds ", f.scalar_type(), "; values are ", values.scalar_type());
  f.view({-1, f.size(2)}).index_put_({slots}, values.to(f.scalar_type()));
}

torch::Tensor PagedKv::Read(int64_t layer, int64_t field, int64_t s) {
  const torch::Tensor& f = pool_->field(layer, field);  // [N, bs, dim]
  const int64_t bs = pool_->block_size(), b = block_table_.size(0);
  const int64_t blocks = (s + bs - 1) / bs;
  TORCH_CHECK(blocks <= block_table_.size(1), "PagedKv::Read: ", s, " positions need ", blocks,
              " blocks; the table has ", block_table_.size(1));
  torch::Tensor ids = block_table_.narrow(1, 0, blocks).reshape({-1});          // [B * blocks]
  return f.index_select(0, ids).view({b, blocks * bs, f.size(2)}).narrow(1, 0, s);  // [B, s, dim]
}

torch::Tensor PagedKv::Storage(int64_t layer, int64_t field) {
  torch::Tensor& f = pool_->field(layer, field);  // [N, bs, dim]
  return f.view({-1, f.size(2)});                // [N * bs, dim]
}

torch::Tensor PagedKv::StorageRows(const torch::Tensor& positions) {
  const int64_t bs = pool_->block_size(), b = positions.size(0);
  torch::Tensor p = positions.reshape({b, -1});                                         // [B, P]
  torch::Tensor safe = p.clamp_min(0);
  torch::Tensor rows = block_table_.gather(1, safe.div(bs, "floor")) * bs + safe.remainder(bs);
  return rows.masked_fill(p.lt(0), -1).view(positions.sizes());
}

torch::Tensor PagedKv::PositionRows(int64_t s) {
  const int64_t bs = pool_->block_size(), b = block_table_.size(0), blocks = (s + bs - 1) / bs;
  TORCH_CHECK(blocks <= block_table_.size(1), "PagedKv::PositionRows: ", s, " positions need ", blocks,
              " blocks; the table has ", block_table_.size(1));
  torch::Tensor offsets = torch::arange(bs, block_table_.options()).view({1, 1, bs});            // [1, 1, bs]
  torch::Tensor rows = block_table_.narrow(1, 0, blocks).unsqueeze(2) * bs + offsets;           // [B, blocks, bs]
  return rows.view({b, blocks * bs}).narrow(1, 0, s);                                            // [B, s]
}

}  // namespace spargo::model
