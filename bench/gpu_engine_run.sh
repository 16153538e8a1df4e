#!/usr/bin/env bash
# The rollout engine and the model's kernel paths on the H200, side by side with HF transformers in the same run:
# builds, runs the CUDA checks (kernels, the engine's kernel path and CUDA graphs), then spargo_engine_bench (decode
# at batch 64 and 256 with CUDA graphs and eagerly (--graphs auto,off), a GRPO-shaped batch, long prefills), the
# same decode and GRPO-shaped loads in process and through the real `spargo rollout` on loopback gRPC (the served
# mode: one table, engine_served.txt), spargo_model_bench's plain cached decode (the former path) and the HF peer
# (hf_v32_peer.py copied into the checkout as bench/hf_v32_peer.py).
# SPARGO_ENGINE_QUICK=1 (a device call of ~8 minutes instead of ~15): decode with CUDA graphs and the GRPO-shaped
# batch, the served table, HF's generate lines, then the engine's tests (built last).
# Usage: bash bench/gpu_engine_run.sh OUT_DIR
set -uo pipefail
out="${1:-/tmp/spargo-gpu}"
quick="${SPARGO_ENGINE_QUICK:-0}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
targets="spargo spargo_engine_bench"
[[ "$quick" == 1 ]] || targets="$targets spargo_kernel_tests spargo_model_bench"
ninja -C build-gpu -j"$(nproc)" $targets > "$out/build.txt" 2>&1 || { grep -m5 -A5 error "$out/build.txt"; exit 1; }
echo "build ok ($SECONDS s)"

engine_tests() {
  if ninja -C build-gpu -j"$(nproc)" spargo_tests > "$out/build_tests.txt" 2>&1; then
    echo "tests built ($SECONDS s)"
    build-gpu/tests/spargo_tests \
      --gtest_filter='GenerationEngine.*:EngineGraphs.*:DeviceRows/*:Dsv32Model.Matches*:LogitsCommand.*' 2>&1 \
      | grep -E "^\[  (PASSED|FAILED)|Failure|SKIPPED|OK \]" | tee "$out/engine_tests.txt"
  else
    grep -m5 -A5 error "$out/build_tests.txt"
  fi
}
hf_peer() {
  # Quick: HF's generate lines only (they come first).
  [[ -f bench/hf_v32_peer.py ]] && PYTHONUNBUFFERED=1 timeout "${SPARGO_HF_TIMEOUT:-$([[ "$quick" == 1 ]] && echo 75 || echo 200)}" \
    python3 bench/hf_v32_peer.py 2>&1 | grep '^{' | tee "$out/hf.txt"
}

if [[ "$quick" == 1 ]]; then
  build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes decode,grpo \
    --graphs auto --batches 64,256 --prompt 128 --new_tokens 256 2>&1 | tee "$out/engine_bench.txt"
else
  build-gpu/tests/spargo_kernel_tests 2>&1 | grep -E "^\[  (PASSED|FAILED)|Failure" | tee "$out/kernel_tests.txt"
  engine_tests
  build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes decode,grpo,prefill \
    --graphs auto,off --batches 64,256 --prompt 128 --new_tokens 256 \
    --lengths "${SPARGO_PREFILL_LENGTHS:-8192,32768,131072}" 2>&1 | tee "$out/engine_bench.txt"
fi
build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes served --batches 64,256 \
  --prompt 128 --new_tokens 256 2>&1 | tee "$out/engine_served.txt"
echo "served bench exit code ${PIPESTATUS[0]} ($SECONDS s)"
[[ "$quick" == 1 ]] || build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype bfloat16 --batches 64,256 \
  --prompt 128 --new_tokens 256 --reps 1 2>&1 | tee "$out/model_bench_decode.txt"
hf_peer
echo "hf done ($SECONDS s)"
[[ "$quick" == 1 ]] && engine_tests
echo "done ($SECONDS s)"
