#!/usr/bin/env bash
# The DSA dense warm-up stage on the GPU: builds the kernel tests and the model benchmark against the machine's CUDA
# libtorch, runs the warm-up tests (DenseWarmup*: the chunked attention and KL against dense float64 formulas, the
# model's chunked form against the materialised one, the CUDA warm-up step against the float64 CPU reference), then
# times the 160M model's warm-up training step (bf16, batch 1; forward + backward of the language-model loss plus
# the indexer's KL over every causal key; median of 3, peak memory) in the chunked form (the default on CUDA) and
# in the materialised [B, H, T, S] form (SPARGO_DENSE_WARMUP=materialized), with every parameter training ("all")
# and with the main model frozen ("indexer", the report's stage 1).
# Usage: bash bench/gpu_warmup_run.sh OUT_DIR [LENGTHS] [MATERIALIZED_LENGTHS]
#   (defaults 4096,16384,32768 and 4096,16384). An env script that puts the Debian libraries on the paths may be
#   given as $SPARGO_ENV; fixtures: $SPARGO_FIXTURES_DIR. SPARGO_WARMUP_DEADLINE (seconds since the start, default
#   200): no timed run starts after it, so that the call ends within its limit.
set -uo pipefail
out="${1:-/tmp/spargo-warmup}"
lengths="${2:-4096,16384,32768}"
materialized="${3:-4096,16384}"
deadline="${SPARGO_WARMUP_DEADLINE:-200}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" spargo_kernel_tests spargo_model_bench > "$out/build.txt" 2>&1 \
  || { grep -m10 -A6 error "$out/build.txt"; exit 1; }
echo "build ok at ${SECONDS}s"
if [[ -z "${SPARGO_SKIP_TESTS:-}" ]]; then
  timeout 120 build-gpu/tests/spargo_kernel_tests --gtest_filter='DenseWarmup*' > "$out/tests.txt" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|relative|Expected|Which is|actual" "$out/tests.txt" | head -40
  echo "tests done at ${SECONDS}s"
fi
# form (chunked|materialized), trained parameters (all|indexer), length
bench_warmup() {
  if (( SECONDS > deadline )); then echo "$1 $2 $3: skipped (past ${deadline}s)"; return; fi
  local env_form=()
  [[ "$1" == materialized ]] && env_form=(env SPARGO_DENSE_WARMUP=materialized)
  echo "$1 $2 $3: $("${env_form[@]}" timeout 120 build-gpu/bench/spargo_model_bench --config 160m --device cuda \
    --dtype bfloat16 --train --warmup "$2" --batches 1 --prompt "$3" --reps 3 2>&1 | grep -E "^\| [0-9]")"
}
{
  for len in ${lengths//,/ }; do bench_warmup chunked all "$len"; done
  for len in ${materialized//,/ }; do bench_warmup materialized all "$len"; done
  for len in ${lengths//,/ }; do bench_warmup chunked indexer "$len"; done
  for len in ${materialized//,/ }; do bench_warmup materialized indexer "$len"; done
} | tee "$out/warmup.txt"
echo "done at ${SECONDS}s"
