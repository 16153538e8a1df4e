#!/usr/bin/env bash
# Builds spargo against the machine's CUDA libtorch, runs the DSA training tests (CPU and CUDA paths) and the
# SelectedIndexerScores / IndexerKlRows kernel tests, then times training steps of the 160M model (bf16, batch 1 at
# 4K..32K and batch 4 at 4K; forward + backward of the LM loss plus the sparse-stage indexer loss, with peak
# memory), and HF transformers' DeepseekV32 on the same shapes when bench/hf_v32_peer.py is present, and where the
# 4K step's GPU time goes (bench/train_profile.cc). Usage: bash bench/gpu_train_run.sh OUT_DIR [LENGTHS]
#   (default 4096,8192,16384,32768). An env script that puts the Debian libraries on the paths may be given as
#   $SPARGO_ENV; fixtures: $SPARGO_FIXTURES_DIR.
# Switches (environment): SPARGO_SKIP_TESTS=1 skips the tests; SPARGO_TRAIN_QUICK=1 skips the 4 x 4096 step, the
#   checkpointed 32K step and the HF peer; SPARGO_TRAIN_COMPARE=1 also times each length (and profiles 4K) with the
#   sparse-stage indexer loss on its libtorch references (SPARGO_INDEXER_SELECTED=reference SPARGO_INDEXER_KL=reference:
#   the path before the fused kernels).
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
  build-gpu/tests/spargo_kernel_tests --gtest_filter='SelectedIndexerScores.*:IndexerKlRows.*' \
    > "$out/kernel_tests.txt" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|relative|Expected|Which is|160M layer" "$out/kernel_tests.txt" \
    | head -40
  build-gpu/tests/spargo_tests --gtest_filter='DsaTraining.*:Dsv32Model.*:GenerationEngine.Cuda*:IndexerKlLoss.*' \
    > "$out/tests.txt" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|relative|max \|" "$out/tests.txt" | head -60
fi
bench_train() {  # batches, tokens, extra flags
  build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype bfloat16 --train --batches "$1" \
    --prompt "$2" --reps 3 "${@:3}" 2>&1 | grep -E "^\| [0-9]"
}
for len in ${lengths//,/ }; do
  echo "fused indexer loss: $(bench_train 1 "$len")"
  if [[ -n "${SPARGO_TRAIN_COMPARE:-}" ]]; then
    echo "reference indexer loss: $(SPARGO_INDEXER_SELECTED=reference SPARGO_INDEXER_KL=reference \
      bench_train 1 "$len")"
  fi
done | tee "$out/train.txt"
if [[ -z "${SPARGO_TRAIN_QUICK:-}" ]]; then
  echo "4 x 4096: $(bench_train 4 4096)" | tee -a "$out/train.txt"
  echo "activation checkpointing: $(bench_train 1 32768 --checkpoint)" | tee -a "$out/train.txt"
fi
# Where the 4K step's GPU time goes (kernels by total time).
build-gpu/bench/spargo_train_profile --prompt 4096 --top 25 2>&1 | tee "$out/profile_4k.txt"
if [[ -n "${SPARGO_TRAIN_COMPARE:-}" ]]; then
  SPARGO_INDEXER_SELECTED=reference SPARGO_INDEXER_KL=reference build-gpu/bench/spargo_train_profile --prompt 4096 \
    --top 12 2>&1 | tee "$out/profile_4k_reference.txt"
fi
if [[ -z "${SPARGO_TRAIN_QUICK:-}" && -f bench/hf_v32_peer.py ]]; then
  PYTHONUNBUFFERED=1 timeout 400 python3 bench/hf_v32_peer.py 2>&1 | grep -E "hf_train|hf_prefill|Error" | tee "$out/hf.txt"
fi
