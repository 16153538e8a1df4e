#!/usr/bin/env bash
# Builds spargo against the machine's CUDA libtorch, runs the DSA training and model tests (CPU and CUDA paths, the
# captured decode too) and the training kernels' tests (SelectedIndexerScores, IndexerKlRows, RmsNorm, Rope,
# SparseMlaHeadSummedProbs), then times training steps of the 160M model (bf16, batch 1 at 4K..32K and batch 4 at
# 4K; forward + backward of the LM loss plus the sparse-stage indexer loss, with peak memory), HF transformers'
# DeepseekV32 on the same shapes when bench/hf_v32_peer.py is present, and where the 4K step's GPU time goes
# (bench/train_profile.cc: kernels, launches).
# Usage: bash bench/gpu_train_run.sh OUT_DIR [LENGTHS] (default 4096,8192,16384,32768). An env script that puts the
# Debian libraries on the paths may be given as $SPARGO_ENV; fixtures: $SPARGO_FIXTURES_DIR.
# Switches (environment): SPARGO_SKIP_TESTS=1 skips the tests; SPARGO_TRAIN_QUICK=1 skips the 4 x 4096 step and the
#   checkpointed 32K step; SPARGO_TRAIN_COMPARE=1 (or a list of lengths) also times each length (or those listed)
#   and profiles 4K with the fused RMSNorm, RoPE and head-summed-probability kernels off
#   (SPARGO_FUSED_NORM_ROPE=reference SPARGO_SPARSE_MLA_PROBS=reference: their libtorch references, the path before
#   those kernels).
set -uo pipefail
out="${1:-/tmp/spargo-train}"
lengths="${2:-4096,8192,16384,32768}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" spargo_tests spargo_kernel_tests spargo_model_bench spargo_train_profile \
  > "$out/build.txt" 2>&1 || { grep -m10 -A6 error "$out/build.txt"; exit 1; }
echo "build ok"
if [[ -z "${SPARGO_SKIP_TESTS:-}" ]]; then
  build-gpu/tests/spargo_kernel_tests \
    --gtest_filter='SelectedIndexerScores.*:IndexerKlRows.*:RmsNormKernel.*:RopeKernel.*:SparseMlaHeadSummedProbs.*' \
    > "$out/kernel_tests.txt" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|relative|Expected|Which is|160M layer|: y |ref\) =" \
    "$out/kernel_tests.txt" | head -60
  build-gpu/tests/spargo_tests \
    --gtest_filter='DsaTraining.*:Dsv32Model.*:GenerationEngine.Cuda*:IndexerKlLoss.*:EngineGraphs.*' \
    > "$out/tests.txt" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|relative|max \|" "$out/tests.txt" | head -60
fi
bench_train() {  # batches, tokens, extra flags
  build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype bfloat16 --train --batches "$1" \
    --prompt "$2" --reps 5 "${@:3}" 2>&1 | grep -E "^\| [0-9]"
}
for len in ${lengths//,/ }; do
  echo "fused kernels: $(bench_train 1 "$len")"
  if [[ "${SPARGO_TRAIN_COMPARE:-}" == 1 || ",${SPARGO_TRAIN_COMPARE:-}," == *",$len,"* ]]; then
    echo "norm/rope/probs kernels off: $(SPARGO_FUSED_NORM_ROPE=reference SPARGO_SPARSE_MLA_PROBS=reference \
      bench_train 1 "$len")"
    echo "fused kernels (again): $(bench_train 1 "$len")"
  fi
done | tee "$out/train.txt"
if [[ -z "${SPARGO_TRAIN_QUICK:-}" ]]; then
  echo "4 x 4096: $(bench_train 4 4096)" | tee -a "$out/train.txt"
  echo "activation checkpointing: $(bench_train 1 32768 --checkpoint)" | tee -a "$out/train.txt"
fi
# Where the 4K step's GPU time goes (kernels by total time).
build-gpu/bench/spargo_train_profile --prompt 4096 --top 25 2>&1 | tee "$out/profile_4k.txt"
if [[ -n "${SPARGO_TRAIN_COMPARE:-}" ]]; then
  SPARGO_FUSED_NORM_ROPE=reference SPARGO_SPARSE_MLA_PROBS=reference build-gpu/bench/spargo_train_profile \
    --prompt 4096 --top 12 2>&1 | tee "$out/profile_4k_reference.txt"
fi
if [[ -f bench/hf_v32_peer.py ]]; then
  PYTHONUNBUFFERED=1 timeout 400 python3 bench/hf_v32_peer.py 2>&1 | grep -E "hf_train|hf_prefill|Error" | tee "$out/hf.txt"
fi
