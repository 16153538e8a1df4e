#include "rollout/sample_proto.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/bounded_json.h"
#include "common/status_macros.h"

namespace spargo::rollout {
namespace {

absl::Status Lost(const std::string& what) { return absl::DataLossError(absl::StrCat("rollout sample: ", what)); }

// A "<prefix><layer>" choice name's layer, or -1.
int LayerOf(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return -1;
  int layer = -1;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    layer = (layer < 0 ? 0 : layer * 10) + (name[i] - '0');
    if (layer > 1 << 20) return -1;
  }
  return layer;
}

// Rebuilds one [rows, width] int64 choice tensor from a flat int32 list; -1 is allowed (unused slots).
absl::StatusOr<torch::Tensor> ChoiceTensor(const google::protobuf::RepeatedField<int32_t>& flat, int32_t width,
                                           int64_t rows, int64_t upper, const std::string& field) {
  if (width <= 0 || width > (1 << 16)) return Lost(absl::StrCat(field, ": width ", width));
  if (static_cast<int64_t>(flat.size()) != rows * width) {
    return Lost(absl::StrCat(field, ": ", flat.size(), " entries; ", rows, " tokens x ", width, " expected"));
  }
  torch::Tensor t = torch::empty({rows, width}, torch::kLong);  // [rows, width]
  int64_t* out = t.data_ptr<int64_t>();
  for (int i = 0; i < flat.size(); ++i) {
    if (flat[i] < -1 || flat[i] >= upper) return Lost(absl::StrCat(field, "[", i, "] = ", flat[i], " out of range"));
    out[i] = flat[i];
  }
  return t;
}

}  // namespace

void GroupRequestToProto(const GroupRequest& request, int group_size, PromptGroupRequest* out) {
  out->set_prompt_id(request.prompt_id);
  out->set_domain(request.domain);
  out->set_group_size(group_size);
  out->set_tools_json(request.tools_json);
  out->set_sample_key(request.sample_key);
  for (int64_t id : request.prompt_ids) out->add_prompt_token_ids(static_cast<int32_t>(id));
}

GroupRequest GroupRequestFromProto(const PromptGroupRequest& request, int index) {
  GroupRequest r;
  r.prompt_id = request.prompt_id();
  r.sample_key = request.has_sample_key() ? request.sample_key() : static_cast<uint64_t>(index);
  r.domain = request.domain();
  r.tools_json = request.tools_json();
  r.prompt_ids.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
  return r;
}

void SampleToProto(const SampleRecord& s, Sample* out) {
  for (int64_t id : s.completion_ids) out->add_token_ids(static_cast<int32_t>(id));
  out->mutable_logprobs()->Add(s.logprobs.begin(), s.logprobs.end());
  for (uint8_t env : s.env_token_mask) out->add_env_token_mask(env != 0);
  for (const ToolStep& step : s.tool_trace) {
    ToolTraceStep* t = out->add_tool_trace();
    t->set_name(step.call.name);
    t->set_arguments_json(step.call.arguments.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    t->set_result(step.result);
    t->set_error(step.error);
  }
  out->set_episode_end(s.episode_end);
  out->set_final_turn_start(static_cast<int32_t>(s.final_turn_start));
  out->set_finish_reason(s.finish == SampleFinish::kStop     ? STOP
                         : s.finish == SampleFinish::kLength ? LENGTH
                                                             : ABORTED);
  for (const auto& [name, t] : s.choices) {
    torch::Tensor flat = t.to(torch::kInt32).contiguous();  // [N, width]
    const int32_t* data = flat.data_ptr<int32_t>();
    if (int layer = LayerOf(name, "topk_l"); layer >= 0) {
      IndexerTopk* r = out->add_indexer_topk();
      r->set_layer(layer);
      r->set_k(static_cast<int32_t>(t.size(1)));
      r->mutable_positions()->Add(data, data + flat.numel());
    } else if (int moe_layer = LayerOf(name, "routes_l"); moe_layer >= 0) {
      MoeRoutes* r = out->add_moe_routes();
      r->set_layer(moe_layer);
      r->set_experts_per_token(static_cast<int32_t>(t.size(1)));
      r->mutable_experts()->Add(data, data + flat.numel());
    }
  }
  if (!s.kept.empty()) {
    for (size_t t = 0; t + 1 < s.kept.offsets.size(); ++t) out->add_kept_counts(static_cast<int32_t>(s.kept.count(t)));
    out->mutable_kept_token_ids()->Add(s.kept.ids.begin(), s.kept.ids.end());
  }
}

absl::StatusOr<SampleRecord> SampleFromProto(const Sample& p, const GroupRequest& request, int index,
                                             uint64_t policy_version, int64_t vocab_size) {
  SampleRecord s;
  s.prompt_id = request.prompt_id;
  s.index = index;
  s.domain = request.domain;
  s.prompt_ids = request.prompt_ids;
  s.policy_version = policy_version;
  if (p.token_ids_size() == 0) return Lost("no tokens");
  if (p.logprobs_size() != p.token_ids_size()) {
    return Lost(absl::StrCat(p.token_ids_size(), " token_ids but ", p.logprobs_size(), " logprobs"));
  }
  for (int i = 0; i < p.token_ids_size(); ++i) {
    if (p.token_ids(i) < 0 || p.token_ids(i) >= vocab_size) {
      return Lost(absl::StrCat("token_ids[", i, "] = ", p.token_ids(i), " outside the vocabulary of ", vocab_size));
    }
    if (!(p.logprobs(i) <= 0)) return Lost(absl::StrCat("logprobs[", i, "] = ", p.logprobs(i), " is not <= 0"));
  }
  s.completion_ids.assign(p.token_ids().begin(), p.token_ids().end());
  s.logprobs.assign(p.logprobs().begin(), p.logprobs().end());
  if (p.env_token_mask_size() > 0) {
    if (p.env_token_mask_size() != p.token_ids_size()) {
      return Lost(absl::StrCat(p.env_token_mask_size(), " env_token_mask entries for ", p.token_ids_size(), " tokens"));
    }
    s.env_token_mask.assign(p.env_token_mask().begin(), p.env_token_mask().end());
  }
  for (int i = 0; i < p.tool_trace_size(); ++i) {
    const auto& t = p.tool_trace(i);
    ToolStep step;
    step.call.name = t.name();
    step.call.arguments = ParseBoundedJson(t.arguments_json());
    if (!step.call.arguments.is_object()) return Lost(absl::StrCat("tool_trace[", i, "].arguments_json is not a JSON object"));
    step.result = t.result();
    step.error = t.error();
    s.tool_trace.push_back(std::move(step));
  }
  if (p.final_turn_start() < 0 || p.final_turn_start() > p.token_ids_size()) {
    return Lost(absl::StrCat("final_turn_start ", p.final_turn_start(), " outside the ", p.token_ids_size(), " tokens"));
  }
  s.episode_end = p.episode_end();
  s.final_turn_start = p.final_turn_start();
  switch (p.finish_reason()) {
    case STOP:
      s.finish = SampleFinish::kStop;
      break;
    case LENGTH:
      s.finish = SampleFinish::kLength;
      break;
    case ABORTED:
      s.finish = SampleFinish::kAborted;
      break;
    default:
      return Lost(absl::StrCat("finish_reason ", p.finish_reason()));
  }
  // Replay records cover the tokens the model was fed: the prompt and the completion but its last token.
  const int64_t fed = static_cast<int64_t>(s.prompt_ids.size() + s.completion_ids.size()) - 1;
  for (int i = 0; i < p.indexer_topk_size(); ++i) {
    const IndexerTopk& r = p.indexer_topk(i);
    const std::string field = absl::StrCat("indexer_topk[", i, "]");
    const std::string name = absl::StrCat("topk_l", r.layer());
    if (r.layer() < 0 || s.choices.count(name)) return Lost(absl::StrCat(field, ": layer ", r.layer()));
    SPARGO_ASSIGN_OR_RETURN(s.choices[name], ChoiceTensor(r.positions(), r.k(), fed, fed, field));
  }
  for (int i = 0; i < p.moe_routes_size(); ++i) {
    const MoeRoutes& r = p.moe_routes(i);
    const std::string field = absl::StrCat("moe_routes[", i, "]");
    const std::string name = absl::StrCat("routes_l", r.layer());
    if (r.layer() < 0 || s.choices.count(name)) return Lost(absl::StrCat(field, ": layer ", r.layer()));
    SPARGO_ASSIGN_OR_RETURN(s.choices[name], ChoiceTensor(r.experts(), r.experts_per_token(), fed, 1 << 20, field));
  }
  if (p.kept_counts_size() > 0) {
    if (p.kept_counts_size() != p.token_ids_size()) {
      return Lost(absl::StrCat(p.kept_counts_size(), " kept_counts for ", p.token_ids_size(), " tokens"));
    }
    s.kept.offsets.push_back(0);
    for (int t = 0; t < p.kept_counts_size(); ++t) {
      if (p.kept_counts(t) < 0 || p.kept_counts(t) > vocab_size) {
        return Lost(absl::StrCat("kept_counts[", t, "] = ", p.kept_counts(t)));
      }
      s.kept.offsets.push_back(s.kept.offsets.back() + p.kept_counts(t));
    }
    if (s.kept.offsets.back() != p.kept_token_ids_size()) {
      return Lost(absl::StrCat("kept_counts add up to ", s.kept.offsets.back(), "; ", p.kept_token_ids_size(),
                               " kept_token_ids sent"));
    }
    for (int i = 0; i < p.kept_token_ids_size(); ++i) {
      if (p.kept_token_ids(i) < 0 || p.kept_token_ids(i) >= vocab_size) {
        return Lost(absl::StrCat("kept_token_ids[", i, "] = ", p.kept_token_ids(i), " outside the vocabulary"));
      }
    }
    s.kept.ids.assign(p.kept_token_ids().begin(), p.kept_token_ids().end());
  }
  return s;
}

absl::StatusOr<GenerateRequest> GenerateRequestFor(const SamplingOptions& o, int64_t vocab_size) {
  const auto in_vocab = [&](int64_t id) { return id >= 0 && id < vocab_size; };
  if (o.group_size < 1) return absl::InvalidArgumentError(absl::StrCat("group_size = ", o.group_size, ": must be >= 1"));
  if (o.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens = ", o.max_new_tokens, ": must be >= 1"));
  }
  if (o.vocab_limit < 0 || o.vocab_limit > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_limit = ", o.vocab_limit, ": must be in 0..", vocab_size));
  }
  GenerateRequest r;
  SamplingParams* s = r.mutable_sampling();
  s->set_temperature(o.temperature);
  s->set_top_p(o.top_p);
  s->set_top_k(o.top_k);
  s->set_max_new_tokens(o.max_new_tokens);
  for (size_t i = 0; i < o.stop_ids.size(); ++i) {
    if (!in_vocab(o.stop_ids[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_ids[", i, "] = ", o.stop_ids[i], ": outside the vocabulary of ", vocab_size));
    }
    s->add_stop_token_ids(static_cast<int32_t>(o.stop_ids[i]));
  }
  if (o.eos_id >= 0) {
    if (!in_vocab(o.eos_id)) {
      return absl::InvalidArgumentError(absl::StrCat("eos_id = ", o.eos_id, ": outside the vocabulary of ", vocab_size));
    }
    s->add_stop_token_ids(static_cast<int32_t>(o.eos_id));
  }
  s->set_seed(o.seed);
  s->set_counter(o.step);
  s->set_vocab_limit(static_cast<int32_t>(o.vocab_limit));
  r.set_policy_version(o.policy_version);
  r.set_return_replay(o.record_choices);
  r.set_return_sampling_mask(o.record_kept);
  return r;
}

SamplingOptions SamplingOptionsFromRequest(const GenerateRequest& r, int64_t eos_id, int64_t pad_id,
                                           int64_t vocab_limit) {
  const SamplingParams& s = r.sampling();
  SamplingOptions o;
  o.max_new_tokens = s.max_new_tokens();
  o.temperature = s.temperature();
  o.top_k = s.top_k();
  o.top_p = s.top_p() == 0 ? 1.0 : s.top_p();
  o.stop_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  o.eos_id = eos_id;
  o.pad_id = pad_id;
  o.seed = s.seed();
  o.vocab_limit = s.vocab_limit() > 0 ? s.vocab_limit() : vocab_limit;
  o.record_choices = r.return_replay();
  o.record_kept = r.return_sampling_mask();
  o.step = s.counter();
  o.policy_version = r.policy_version();
  return o;
}

}  // namespace spargo::rollout
