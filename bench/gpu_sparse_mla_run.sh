#!/usr/bin/env bash
# Builds the kernel tests and the sparse MLA benchmark against the machine's CUDA libtorch, runs the SparseMla test
# suite (CPU and CUDA cases) and the benchmark, printing short tables. Usage:
#   bash bench/gpu_sparse_mla_run.sh OUT_DIR [LENGTHS] [BACKWARD_LENGTHS]
#   (defaults 8192,32768,131072 and 8192). Dependencies: an env script that puts the Debian libraries on the paths
#   may be given as $SPARGO_ENV. Set SPARGO_SKIP_TESTS=1 to only time, SPARGO_SKIP_BENCH=1 to only test.
set -uo pipefail
out="${1:-/tmp/spargo-sparse-mla}"
lengths="${2:-8192,32768,131072}"
backward_lengths="${3:-8192}"
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
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|rel|ref\| =|backward " "$out/tests.txt" | head -80
fi
if [[ -z "${SPARGO_SKIP_BENCH:-}" ]]; then
  build-gpu/bench/spargo_sparse_mla_bench --device cuda --lengths "$lengths" --backward_lengths "$backward_lengths" \
    2>&1 | tee "$out/bench.txt"
  # Causal-prefill selections (fewer than K used slots in the first K rows): the sparse columns only.
  build-gpu/bench/spargo_sparse_mla_bench --device cuda --lengths "$lengths" --backward_lengths "$backward_lengths" \
    --selection causal --dense=false --variants=false --reference_max 0 2>&1 | tee "$out/bench_causal.txt"
fi
