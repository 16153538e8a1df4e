#include "bench/bench_models.h"

namespace spargo::bench {

model::Dsv32Config BenchConfig(const std::string& name) {
  model::Dsv32Config c;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-6;
  if (name == "tiny") {
    c.vocab_size = 320; c.hidden_size = 64; c.num_hidden_layers = 2; c.num_attention_heads = 4;
    c.q_lora_rank = 48; c.kv_lora_rank = 32; c.qk_nope_head_dim = 16; c.qk_rope_head_dim = 8; c.v_head_dim = 16;
    c.index_n_heads = 4; c.index_head_dim = 16; c.index_topk = 12; c.intermediate_size = 128;
    c.moe_intermediate_size = 32; c.n_routed_experts = 8; c.n_shared_experts = 1; c.num_experts_per_tok = 2;
    c.n_group = 2; c.topk_group = 1; c.routed_scaling_factor = 2.5; c.max_position_embeddings = 4096;
    c.moe_layer = {false, true};
  } else {
    c.vocab_size = 32000; c.hidden_size = 1024; c.num_hidden_layers = 8; c.num_attention_heads = 16;
    c.q_lora_rank = 384; c.kv_lora_rank = 256; c.qk_nope_head_dim = 64; c.qk_rope_head_dim = 32; c.v_head_dim = 64;
    c.index_n_heads = 8; c.index_head_dim = 64; c.index_topk = 256; c.intermediate_size = 2816;
    c.moe_intermediate_size = 256; c.n_routed_experts = 8; c.n_shared_experts = 1; c.num_experts_per_tok = 2;
    c.max_position_embeddings = 65536;
    c.moe_layer.assign(8, false);
  }
  return c;
}

}  // namespace spargo::bench
