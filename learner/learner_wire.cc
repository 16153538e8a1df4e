#include "learner/learner_wire.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/crc32.h"
#include "common/status_macros.h"

namespace spargo::learner {
namespace {

constexpr char kReplayPrefix[] = "replay.";
constexpr char kLossPrefix[] = "loss.";

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(absl::StrCat("learner step: ", what)); }

absl::StatusOr<torch::Tensor> Need(model::TensorMap& t, const std::string& name, torch::ScalarType dtype,
                                   std::vector<int64_t> shape, bool required) {
  auto it = t.find(name);
  if (it == t.end()) {
    if (required) return Bad(absl::StrCat(name, " is missing"));
    return torch::Tensor();  // optional and absent: undefined
  }
  torch::Tensor v = std::move(it->second);
  t.erase(it);
  if (v.scalar_type() != dtype) {
    return Bad(absl::StrCat(name, " is ", c10::toString(v.scalar_type()), ", not ", c10::toString(dtype)));
  }
  bool ok = v.dim() == static_cast<int64_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || v.size(i) == shape[i];
  if (!ok) {
    return Bad(absl::StrCat(name, " has shape [", absl::StrJoin(v.sizes(), ", "), "], not [",
                            absl::StrJoin(shape, ", "), "] (-1: any)"));
  }
  return v;
}

absl::Status CheckRange(const torch::Tensor& t, const std::string& name, int64_t low, int64_t high) {
  if (t.numel() == 0) return absl::OkStatus();
  const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  if (lo < low || hi >= high) {
    return Bad(absl::StrCat(name, " holds values in [", lo, ", ", hi, "]; they must lie in [", low, ", ", high, ")"));
  }
  return absl::OkStatus();
}

bool Finite(double x) { return std::isfinite(x); }

}  // namespace

bool SendBlob(const std::string& blob, int64_t chunk_bytes, const std::function<bool(const BlobChunk&)>& send) {
  const size_t step = static_cast<size_t>(std::max<int64_t>(chunk_bytes, 1));
  size_t offset = 0;
  do {
    BlobChunk c;
    const size_t n = std::min(step, blob.size() - offset);
    c.set_data(blob.substr(offset, n));
    if (offset == 0) c.set_total_bytes(blob.size());
    offset += n;
    if (offset == blob.size()) {
      c.set_last(true);
      c.set_crc32(Crc32(blob));
    }
    if (!send(c)) return false;
  } while (offset < blob.size());
  return true;
}

absl::Status BlobAssembler::Add(const BlobChunk& c) {
  if (done_) return absl::InvalidArgumentError(absl::StrCat(what_, ": chunk after the last one"));
  if (!started_) {
    if (c.total_bytes() > static_cast<uint64_t>(max_bytes_)) {
      return absl::ResourceExhaustedError(absl::StrCat(what_, ": announces ", c.total_bytes(), " bytes; at most ",
                                                       max_bytes_, " are accepted"));
    }
    started_ = true;
    total_ = c.total_bytes();
    bytes_.reserve(total_);
  } else if (c.total_bytes() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": total_bytes set on a chunk after the first"));
  }
  if (c.data().size() > total_ - bytes_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": more bytes than the announced ", total_));
  }
  bytes_ += c.data();
  if (!c.last()) return absl::OkStatus();
  if (bytes_.size() != total_) {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": ended after ", bytes_.size(), " of ", total_, " bytes"));
  }
  if (Crc32(bytes_) != c.crc32()) return absl::DataLossError(absl::StrCat(what_, ": CRC-32 mismatch"));
  done_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> BlobAssembler::Take() {
  if (!done_) return absl::FailedPreconditionError(absl::StrCat(what_, ": incomplete (no last chunk)"));
  done_ = false;
  started_ = false;
  return std::move(bytes_);
}

StepRows OnlyRowsInUse(const SequenceBatch& batch, const std::vector<std::vector<int64_t>>& micro_batches,
                       const LossSpec* loss) {
  StepRows out;
  std::map<int64_t, int64_t> renumbered;  // batch row -> row of the cut batch
  for (const auto& rows : micro_batches) {
    for (int64_t r : rows) renumbered.emplace(r, 0);
  }
  std::vector<int64_t> kept;
  for (auto& [row, index] : renumbered) {
    index = static_cast<int64_t>(kept.size());
    kept.push_back(row);
  }
  const torch::Tensor index = torch::tensor(kept, torch::kLong);  // [n]
  auto take = [&](const torch::Tensor& t) { return t.defined() ? t.index_select(0, index) : t; };
  SequenceBatch& b = out.batch;
  b.input_ids = take(batch.input_ids);
  b.loss_mask = take(batch.loss_mask);
  b.old_logprobs = take(batch.old_logprobs);
  b.token_mask = take(batch.token_mask);
  b.lengths = take(batch.lengths);
  b.kept_ids = take(batch.kept_ids);
  b.completion_tokens = batch.completion_tokens;
  for (int64_t row : kept) {
    b.replay.push_back(static_cast<size_t>(row) < batch.replay.size() ? batch.replay[row] : model::TokenChoices());
  }
  for (const auto& rows : micro_batches) {
    std::vector<int64_t> mapped;
    for (int64_t r : rows) mapped.push_back(renumbered.at(r));
    out.micro_batches.push_back(std::move(mapped));
  }
  if (loss != nullptr) {
    out.loss = *loss;
    for (torch::Tensor* t : {&out.loss.old_logp, &out.loss.sampler_logp, &out.loss.ref_logp, &out.loss.advantages,
                             &out.loss.kl_coef_rows}) {
      *t = take(*t);
    }
  }
  return out;
}

absl::Status EncodeStep(const SequenceBatch& batch, const std::vector<std::vector<int64_t>>& micro_batches,
                        const ForwardOptions& forward, const LossSpec* loss, const config::OptimizerConfig* optimizer,
                        double lr, StepHeader* header, std::string* blob) {
  header->Clear();
  model::TensorMap t = {{"batch.input_ids", batch.input_ids},       {"batch.loss_mask", batch.loss_mask},
                        {"batch.old_logprobs", batch.old_logprobs}, {"batch.token_mask", batch.token_mask},
                        {"batch.lengths", batch.lengths}};
  if (batch.kept_ids.defined()) t["batch.kept_ids"] = batch.kept_ids;
  for (size_t row = 0; row < batch.replay.size(); ++row) {
    for (const auto& [name, v] : batch.replay[row]) t[absl::StrCat(kReplayPrefix, row, ".", name)] = v;
  }
  ForwardSpec* f = header->mutable_forward();
  f->set_temperature(forward.temperature);
  f->set_vocab_limit(forward.vocab_limit);
  f->set_replay_choices(forward.replay_choices);
  f->set_keep_sampling_mask(forward.keep_sampling_mask);
  f->set_with_entropy(forward.with_entropy);
  for (const auto& rows : micro_batches) *header->add_micro_batches()->mutable_rows() = {rows.begin(), rows.end()};
  header->set_completion_tokens(batch.completion_tokens);
  if (loss != nullptr) {
    LossHeader* l = header->mutable_loss();
    l->set_kind(static_cast<int>(loss->kind));
    l->set_normaliser(loss->normaliser);
    l->set_aux_weight(loss->aux_weight);
    l->set_rows_total(loss->rows_total);
    GrpoLossSpec* g = l->mutable_grpo();
    g->set_clip_low(loss->grpo.clip_low);
    g->set_clip_high(loss->grpo.clip_high);
    g->set_dual_clip(loss->grpo.dual_clip);
    g->set_kl_coef(loss->grpo.kl_coef);
    g->set_kl_estimator(static_cast<int>(loss->grpo.kl_estimator));
    if (loss->grpo.off_policy_delta) g->set_off_policy_delta(*loss->grpo.off_policy_delta);
    g->set_tis_cap(loss->grpo.tis_cap);
    g->set_entropy_coef(loss->grpo.entropy_coef);
    g->set_aggregation(static_cast<int>(loss->grpo.aggregation));
    g->set_max_tokens(loss->grpo.max_tokens);
    for (const auto& [name, v] : {std::pair{"old_logp", &loss->old_logp}, {"sampler_logp", &loss->sampler_logp},
                                  {"ref_logp", &loss->ref_logp}, {"advantages", &loss->advantages},
                                  {"kl_coef_rows", &loss->kl_coef_rows}}) {
      if (v->defined()) t[absl::StrCat(kLossPrefix, name)] = v->to(torch::kFloat32);
    }
  }
  if (optimizer != nullptr) *header->mutable_optimizer() = *optimizer;
  header->set_lr(lr);
  SPARGO_ASSIGN_OR_RETURN(*blob, model::EncodeSafetensors(t));
  return absl::OkStatus();
}

absl::StatusOr<WireStep> DecodeStep(const StepHeader& h, const std::string& blob, bool with_loss, int64_t vocab_size) {
  SPARGO_ASSIGN_OR_RETURN(model::TensorMap t, model::DecodeSafetensors(blob, "learner step tensors"));
  WireStep s;
  SequenceBatch& b = s.batch;
  SPARGO_ASSIGN_OR_RETURN(b.input_ids, Need(t, "batch.input_ids", torch::kLong, {-1, -1}, true));
  const int64_t n = b.input_ids.size(0), len = b.input_ids.size(1);
  if (n < 1 || len < 2) return Bad(absl::StrCat("batch.input_ids is [", n, ", ", len, "]: needs a row of 2 tokens"));
  SPARGO_ASSIGN_OR_RETURN(b.loss_mask, Need(t, "batch.loss_mask", torch::kFloat32, {n, len - 1}, true));
  SPARGO_ASSIGN_OR_RETURN(b.old_logprobs, Need(t, "batch.old_logprobs", torch::kFloat32, {n, len - 1}, true));
  SPARGO_ASSIGN_OR_RETURN(b.token_mask, Need(t, "batch.token_mask", torch::kBool, {n, len}, true));
  SPARGO_ASSIGN_OR_RETURN(b.lengths, Need(t, "batch.lengths", torch::kLong, {n}, true));
  SPARGO_ASSIGN_OR_RETURN(b.kept_ids, Need(t, "batch.kept_ids", torch::kLong, {n, len - 1, -1}, false));
  SPARGO_RETURN_IF_ERROR(CheckRange(b.input_ids, "batch.input_ids", 0, vocab_size));
  SPARGO_RETURN_IF_ERROR(CheckRange(b.lengths, "batch.lengths", 1, len + 1));
  if (b.kept_ids.defined()) SPARGO_RETURN_IF_ERROR(CheckRange(b.kept_ids, "batch.kept_ids", -1, vocab_size));
  b.completion_tokens = h.completion_tokens();
  b.replay.resize(n);
  if (with_loss) {
    for (const auto& [name, v] : {std::pair{"old_logp", &s.loss.old_logp}, {"sampler_logp", &s.loss.sampler_logp},
                                  {"ref_logp", &s.loss.ref_logp}, {"advantages", &s.loss.advantages},
                                  {"kl_coef_rows", &s.loss.kl_coef_rows}}) {
      auto it = t.find(absl::StrCat(kLossPrefix, name));
      if (it == t.end()) continue;
      *v = std::move(it->second);
      t.erase(it);
    }
  }
  for (auto& [name, v] : t) {
    if (name.rfind(kReplayPrefix, 0) != 0) return Bad(absl::StrCat("unexpected tensor '", name, "'"));
    const std::string rest = name.substr(sizeof(kReplayPrefix) - 1);
    const size_t dot = rest.find('.');
    int64_t row = -1;
    if (dot == std::string::npos || !absl::SimpleAtoi(rest.substr(0, dot), &row) || row < 0 || row >= n ||
        dot + 1 == rest.size()) {
      return Bad(absl::StrCat("tensor '", name, "' is not replay.<row below ", n, ">.<name>"));
    }
    b.replay[row][rest.substr(dot + 1)] = std::move(v);
  }
  const ForwardSpec& f = h.forward();
  if (!(f.temperature() > 0) || !Finite(f.temperature())) {
    return Bad(absl::StrCat("forward.temperature must be positive and finite, not ", f.temperature()));
  }
  if (f.vocab_limit() < 0 || f.vocab_limit() > vocab_size) {
    return Bad(absl::StrCat("forward.vocab_limit ", f.vocab_limit(), " outside [0, ", vocab_size, "]"));
  }
  s.forward.temperature = f.temperature();
  s.forward.vocab_limit = f.vocab_limit();
  s.forward.replay_choices = f.replay_choices();
  s.forward.keep_sampling_mask = f.keep_sampling_mask();
  s.forward.with_entropy = f.with_entropy();
  for (int i = 0; i < h.micro_batches_size(); ++i) {
    std::vector<int64_t> rows(h.micro_batches(i).rows().begin(), h.micro_batches(i).rows().end());
    for (int64_t r : rows) {
      if (r < 0 || r >= n) return Bad(absl::StrCat("micro_batches[", i, "] names row ", r, " of a batch of ", n));
    }
    s.micro_batches.push_back(std::move(rows));
  }
  if (!Finite(h.lr()) || h.lr() < 0) return Bad(absl::StrCat("lr must be finite and >= 0, not ", h.lr()));
  s.lr = h.lr();
  s.optimizer = h.optimizer();
  if (with_loss) {
    const LossHeader& l = h.loss();
    const GrpoLossSpec& g = l.grpo();
    if (l.kind() != static_cast<int>(LossSpec::Kind::kTokenNll) && l.kind() != static_cast<int>(LossSpec::Kind::kGrpo)) {
      return Bad(absl::StrCat("loss.kind ", l.kind(), " is unknown"));
    }
    if (g.kl_estimator() < 0 || g.kl_estimator() > static_cast<int>(KlEstimator::kUnbiasedK3) || g.aggregation() < 0 ||
        g.aggregation() > static_cast<int>(LossAggregation::kSeqMeanTokenSum)) {
      return Bad("loss.grpo: unknown kl_estimator or aggregation");
    }
    for (double x : {g.clip_low(), g.clip_high(), g.dual_clip(), g.kl_coef(), g.tis_cap(), g.entropy_coef(),
                     g.max_tokens(), l.aux_weight()}) {
      if (!Finite(x)) return Bad("loss: options must be finite");
    }
    s.loss.kind = static_cast<LossSpec::Kind>(l.kind());
    s.loss.normaliser = l.normaliser();
    s.loss.aux_weight = l.aux_weight();
    s.loss.rows_total = l.rows_total();
    GrpoLossOptions& o = s.loss.grpo;
    o.clip_low = g.clip_low();
    o.clip_high = g.clip_high();
    o.dual_clip = g.dual_clip();
    o.kl_coef = g.kl_coef();
    o.kl_estimator = static_cast<KlEstimator>(g.kl_estimator());
    if (g.has_off_policy_delta()) o.off_policy_delta = g.off_policy_delta();
    o.tis_cap = g.tis_cap();
    o.entropy_coef = g.entropy_coef();
    o.aggregation = static_cast<LossAggregation>(g.aggregation());
    o.max_tokens = g.max_tokens();
    SPARGO_RETURN_IF_ERROR(ValidateLossSpec(s.loss, b));
  }
  return s;
}

void ToProto(const TrainStepResult& r, TrainStepResponse* out) {
  out->set_grad_norm(r.grad_norm);
  out->set_loss(r.loss);
  out->set_aux_loss(r.aux_loss);
  LossTerms* t = out->mutable_terms();
  t->set_tokens(r.terms.tokens);
  t->set_sequences(r.terms.sequences);
  t->set_policy_loss(r.terms.policy_loss);
  t->set_kl_sum(r.terms.kl_sum);
  t->set_ratio_sum(r.terms.ratio_sum);
  t->set_clip_low_count(r.terms.clip_low_count);
  t->set_clip_high_count(r.terms.clip_high_count);
  t->set_dual_clip_count(r.terms.dual_clip_count);
  t->set_masked_sequences(r.terms.masked_sequences);
  t->set_tis_clipped_count(r.terms.tis_clipped_count);
  t->set_entropy_sum(r.terms.entropy_sum);
}

TrainStepResult FromProto(const TrainStepResponse& r) {
  TrainStepResult out;
  out.grad_norm = r.grad_norm();
  out.loss = r.loss();
  out.aux_loss = r.aux_loss();
  const LossTerms& t = r.terms();
  out.terms.tokens = t.tokens();
  out.terms.sequences = t.sequences();
  out.terms.policy_loss = t.policy_loss();
  out.terms.kl_sum = t.kl_sum();
  out.terms.ratio_sum = t.ratio_sum();
  out.terms.clip_low_count = t.clip_low_count();
  out.terms.clip_high_count = t.clip_high_count();
  out.terms.dual_clip_count = t.dual_clip_count();
  out.terms.masked_sequences = t.masked_sequences();
  out.terms.tis_clipped_count = t.tis_clipped_count();
  out.terms.entropy_sum = t.entropy_sum();
  return out;
}

}  // namespace spargo::learner
