#!/usr/bin/env bash
# Builds the kernel tests and the sparse MLA benchmark against the machine's CUDA libtorch, runs the SparseMla test
# suite (CPU and CUDA cases) and the benchmark at DeepSeek's shapes, then the 160M model's training shape (H 16,
# Dqk 288, Dv 256, K 256; backward with two key-tile stages, the default, and with one; and H 64), printing short
# tables. Usage:
#   bash bench/gpu_sparse_mla_run.sh OUT_DIR [LENGTHS] [BACKWARD_LENGTHS] [SMALL_LENGTHS]
#   (defaults 8192,32768,131072, 8192 and 8192,32768; SMALL_LENGTHS=0 skips the 160M shape). Dependencies: an env
#   script that puts the Debian libraries on the paths may be given as $SPARGO_ENV. Set SPARGO_SKIP_TESTS=1 to only
#   time, SPARGO_SKIP_BENCH=1 to only test.
set -uo pipefail
out="${1:-/tmp/spargo-sparse-mla}"
lengths="${2:-8192,32768,131072}"
backward_lengths="${3:-8192}"
small_lengths="${4:-8192,32768}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 \
  || { tail -20 "$out/cmake.txt"; exit 1; }
grep "spargo CUDA kernels" "$out/cmake.txt"
ninja -C build-gpu -j"$(nproc)" spargo_kernel_tests spargo_sparse_mla_bench > "$out/build.txt" 2>&1 \
  || { grep -m10 -A6 error "$out/build.txt"; exit 1; }
echo "build ok"
if [[ -z "${SPARGO_SKIP_TESTS:-}" ]]; then
  build-gpu/tests/spargo_kernel_tests --gtest_filter='SparseMla*' > "$out/tests.txt" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|rel|ref\| =|backward " "$out/tests.txt" | head -120
fi
if [[ -z "${SPARGO_SKIP_BENCH:-}" ]]; then
  build-gpu/bench/spargo_sparse_mla_bench --device cuda --lengths "$lengths" --backward_lengths "$backward_lengths" \
    2>&1 | tee "$out/bench.txt"
  # Causal-prefill selections (fewer than K used slots in the first K rows): the sparse columns only.
  build-gpu/bench/spargo_sparse_mla_bench --device cuda --lengths "$lengths" --backward_lengths "$backward_lengths" \
    --selection causal --dense=false --variants=false --reference_max 0 2>&1 | tee "$out/bench_causal.txt"
  if [[ "$small_lengths" != "0" ]]; then
    # H 16 (m-tiles past the 16 heads skipped) with two and one key-tile stages, then H 64: the same padded tiles
    # without the skip (its TFLOP/s count 64 heads).
    for run in "default 16" "one_stage 16" "default 64"; do
      set -- $run
      SPARGO_SPARSE_MLA_BACKWARD="$1" build-gpu/bench/spargo_sparse_mla_bench --device cuda \
        --lengths "$small_lengths" --backward_lengths "$small_lengths" --heads "$2" --topk 256 --dqk 288 --dv 256 \
        --qk_head_dim 96 --dense=false --variants=false --reference_max 0 --reps 10 2>&1
    done | tee "$out/bench_160m.txt"
  fi
fi
