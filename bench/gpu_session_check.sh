#!/usr/bin/env bash
# One H200 call over the whole tree: build, the CUDA tests of the kernels, the model and the engine, then the parts
# named in SPARGO_CHECK_PARTS (comma-separated; default train,decode), each with its peer in the same call:
#   layer:    one DeepSeek-V3.2 attention layer, DSA against dense (spargo_dsa_layer_bench) at SPARGO_CHECK_LAYER
#             (lengths, default 131072) with both indexers, and the indexer alone on the layer's chunk
#             (spargo_indexer_bench --chunk 2048);
#   memcheck: compute-sanitizer memcheck on the CUDA FP8 quantizer's and the tiled indexer's tie tests;
#   train:    the 160M training steps (1 x 4096, 1 x 16384), and HF's (bench/hf_v32_peer.py, when copied into bench/);
#   warmup:   the dense warm-up's indexer-only step at 1 x 4096, materialised against chunked;
#   decode:   the engine's decode in process and served, and HF's decode.
# The kernel tests, layer and memcheck run while the rest of the tree builds in the background (GPU-bound work);
# the model and engine tests and the host-bound parts (train, warmup, decode) run after it.
# SPARGO_CHECK_TESTS overrides the spargo_tests filter; SPARGO_PROFILE_TOP=N adds a profiled decode call per batch
# (bench/engine_bench.cc --profile_top) at the end.
#   bash bench/gpu_session_check.sh OUT_DIR
set -uo pipefail
out="$1"; mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
parts=",${SPARGO_CHECK_PARTS:-train,decode},"
has() { [[ "$parts" == *",$1,"* ]]; }
first="spargo_kernel_tests"
has layer && first+=" spargo_dsa_layer_bench spargo_indexer_bench"
rest="spargo spargo_tests spargo_model_bench"
has decode && rest+=" spargo_engine_bench"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" $first > "$out/build.txt" 2>&1 || { grep -m10 -A6 error "$out/build.txt"; exit 1; }
echo "kernel build ok $(date +%T)"
( nice -n 19 ninja -C build-gpu -j"$(( $(nproc) * 3 / 4 ))" $rest > "$out/build_rest.txt" 2>&1; echo $? > "$out/build_rest.rc" ) &
builder=$!
timeout 240 build-gpu/tests/spargo_kernel_tests > "$out/kernel_tests.txt" 2>&1
grep -E "^\[  (FAILED|PASSED) |Failure" "$out/kernel_tests.txt" | head -20
if has layer; then
  timeout 240 build-gpu/bench/spargo_dsa_layer_bench --device cuda --lengths "${SPARGO_CHECK_LAYER:-131072}" \
    --indexer bf16,fp8 2>&1 | tee "$out/layer.txt" | grep "^|"
  timeout 60 build-gpu/bench/spargo_indexer_bench --sets deepseek --lengths 131072 --chunk 2048 --kernels tiled,fp8 \
    --reps 10 2>&1 | tee "$out/indexer_chunk.txt" | grep "^|"
fi
if has memcheck; then
  timeout 100 compute-sanitizer --tool memcheck build-gpu/tests/spargo_kernel_tests \
    --gtest_filter='LightningIndexerFp8.CudaQuantizerEqualsTheCpuQuantizerBitForBit:LightningIndexerTiled.EqualsCpuReferenceOnConstructedTies' \
    > "$out/memcheck.txt" 2>&1
  echo "memcheck exit $?"; grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) " "$out/memcheck.txt"
fi
echo "kernel parts done $(date +%T)"
wait "$builder"
[[ "$(cat "$out/build_rest.rc")" == 0 ]] || { grep -m10 -A6 error "$out/build_rest.txt"; exit 1; }
echo "build ok $(date +%T)"
timeout 240 build-gpu/tests/spargo_tests --gtest_filter="${SPARGO_CHECK_TESTS:-DsaTraining.*:Dsv32Model.*:GenerationEngine.*:EngineGraphs.*:IndexerKlLoss.*:DeviceRows/*:ActivationCheckpoint.*:LogitsCommand.*:*Warmup*}" \
  > "$out/tests.txt" 2>&1
grep -E "^\[  (FAILED|PASSED) |Failure" "$out/tests.txt" | head -20
echo "tests done $(date +%T)"
if has train; then
  for len in 4096 16384; do
    build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype bfloat16 --train --batches 1 \
      --prompt "$len" --reps 5 2>&1 | grep -E "^\| [0-9]|^\| batch" | tee -a "$out/train.txt"
  done
fi
if has warmup; then
  for form in materialized chunked; do
    echo "dense warm-up, indexer only, $form"
    SPARGO_DENSE_WARMUP=$form build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype bfloat16 \
      --train --warmup indexer --batches 1 --prompt 4096 --reps 3 2>&1 | grep -E "^\| [0-9]|^\| batch"
  done | tee "$out/warmup.txt"
fi
if has decode; then
  build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes decode,grpo --graphs auto \
    --batches 64,256 --prompt 128 --new_tokens 256 2>&1 | tee "$out/engine_bench.txt" | grep -v "^I "
  build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes served --batches 64,256 \
    --prompt 128 --new_tokens 256 2>&1 | tee "$out/engine_served.txt" | grep -v "^I "
fi
echo "benches done $(date +%T)"
if [[ -f bench/hf_v32_peer.py ]] && { has train || has decode; }; then
  # The peer's loops: decode batches, prefill lengths (never run here), training shapes.
  sed -i 's/^for L in \[4096, 8192, 16384, 32768\]:/for L in []:/; s/for B, L in \[(1, 4096), (4, 4096), (1, 8192), (1, 16384)\]:/for B, L in [(1, 4096), (1, 16384)]:/' bench/hf_v32_peer.py
  has train || sed -i 's/^for B, L in \[(1, 4096), (1, 16384)\]:/for B, L in []:/' bench/hf_v32_peer.py
  has decode || sed -i 's/^for B in \[64, 256\]:/for B in []:/' bench/hf_v32_peer.py
  PYTHONUNBUFFERED=1 timeout 150 python3 bench/hf_v32_peer.py 2>&1 | grep '^{' | tee "$out/hf.txt"
fi
if [[ -n "${SPARGO_PROFILE_TOP:-}" ]]; then
  build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes decode --graphs auto \
    --batches 64,256 --prompt 128 --new_tokens 256 --profile_top "$SPARGO_PROFILE_TOP" 2>&1 | grep -v "^I " \
    > "$out/profile.txt"
  grep -E "^profile:" "$out/profile.txt"
fi
