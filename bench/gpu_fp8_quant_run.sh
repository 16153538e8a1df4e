#!/usr/bin/env bash
# One H200 call for the FP8 indexer's one-pass quantizer (kernels/indexer_fp8.cu, issue 13), with the CUDA test suites
# after it. Builds spargo_kernel_tests and the indexer and DSA layer benches; then, while spargo_tests builds in the
# background (nice 19, 12 jobs; the benches are GPU-bound), runs the FP8 tests (the CUDA quantizer against the CPU one
# bit for bit), the indexer bench at DeepSeek's shapes (the "quant ms" column: the kernel, and the former libtorch
# form beside it), the layer bench with the bf16 and FP8 indexers and all of spargo_kernel_tests; then spargo_tests on
# the CUDA suites (SPARGO_TESTS_FILTER), and a compute-sanitizer memcheck of the quantizer test if time is left. Every
# step's timeout is cut to end by SPARGO_RUN_SECONDS (default 350) after the start; steps that would get under 10 s
# are skipped. Logs in OUT_DIR (8 files).
#   bash bench/gpu_fp8_quant_run.sh OUT_DIR
set -uo pipefail
out="${1:?OUT_DIR}"; mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
start=$(date +%s)
end="${SPARGO_RUN_SECONDS:-350}"
elapsed() { echo $(( $(date +%s) - start )); }
# cap SECONDS: the step's timeout, at most what is left.
cap() { local left=$(( end - $(elapsed) )); echo $(( left < $1 ? left : $1 )); }
time_left() { [[ $(cap 10) -ge 10 ]] || { echo "skipped: $1 (at $(elapsed) s)"; return 1; }; }
summary() { grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\] .* ran|Failure|differ|Skipped" "$1" | head -${2:-40}; }

cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > /tmp/fp8_cmake.txt 2>&1 ||
  { tail -20 /tmp/fp8_cmake.txt; exit 1; }
timeout "$(cap 200)" ninja -C build-gpu -k 0 -j"$(nproc)" spargo_kernel_tests spargo_indexer_bench \
  spargo_dsa_layer_bench > "$out/build.txt" 2>&1
echo "build exit $? at $(elapsed) s"
grep -m20 -B2 -A8 -E "error|FAILED:" "$out/build.txt"
( nice -n 19 timeout "$(cap 300)" ninja -C build-gpu -k 0 -j12 spargo_tests > "$out/build_tests.txt" 2>&1
  echo "spargo_tests build exit $? at $(elapsed) s" >> "$out/build_tests.txt" ) &
bg=$!
obj=build-gpu/kernels/CMakeFiles/spargo_kernels_cuda.dir/indexer_fp8.cu.o
cuobjdump --dump-resource-usage "$obj" 2>/dev/null | grep -E "REG" | sort | uniq -c | head -4
kt=build-gpu/tests/spargo_kernel_tests
if [[ -x $kt ]]; then
  timeout "$(cap 90)" $kt --gtest_filter='LightningIndexerFp8*:LightningIndexerTiled.Fp8*' > "$out/fp8_tests.txt" 2>&1
  echo "fp8 tests exit $? at $(elapsed) s"; summary "$out/fp8_tests.txt"
fi
if [[ -x build-gpu/bench/spargo_indexer_bench ]] && time_left "indexer bench"; then
  timeout "$(cap 120)" build-gpu/bench/spargo_indexer_bench --sets deepseek --lengths 8192,32768,131072 --reps 3 \
    --kernels tiled,fp8,quant_torch > "$out/indexer_bench.txt" 2>&1
  echo "indexer bench exit $? at $(elapsed) s"; grep "^|" "$out/indexer_bench.txt"
fi
if [[ -x build-gpu/bench/spargo_dsa_layer_bench ]] && time_left "layer bench"; then
  timeout "$(cap 120)" build-gpu/bench/spargo_dsa_layer_bench --device cuda --lengths 8192,32768,65536,131072 \
    --indexer bf16,fp8 > "$out/layer_bench.txt" 2>&1
  echo "layer bench exit $? at $(elapsed) s"; grep "^|" "$out/layer_bench.txt"
fi
if [[ -x $kt ]] && time_left "spargo_kernel_tests"; then
  timeout "$(cap 150)" $kt > "$out/kernel_tests.txt" 2>&1
  echo "spargo_kernel_tests exit $? at $(elapsed) s"; summary "$out/kernel_tests.txt" 60
fi
wait $bg
tail -1 "$out/build_tests.txt"; grep -m20 -B2 -A8 -E "error|FAILED:" "$out/build_tests.txt"
filter="${SPARGO_TESTS_FILTER:-DsaTraining.*:Dsv32Model.*:GenerationEngine.*:EngineGraphs.*:IndexerKlLoss.*:DeviceRows/*:ActivationCheckpoint.*:LogitsCommand.*:DenseWarmup*:*Warmup*}"
if [[ -x build-gpu/tests/spargo_tests ]] && time_left "spargo_tests"; then
  timeout "$(cap 150)" build-gpu/tests/spargo_tests --gtest_filter="$filter" > "$out/spargo_tests.txt" 2>&1
  echo "spargo_tests exit $? at $(elapsed) s"; summary "$out/spargo_tests.txt" 60
fi
if [[ -x $kt ]] && time_left "memcheck"; then
  timeout "$(cap 60)" compute-sanitizer --tool memcheck $kt --gtest_filter='LightningIndexerFp8.CudaQuantizer*' \
    > "$out/memcheck.txt" 2>&1
  echo "memcheck exit $? at $(elapsed) s"; grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) " "$out/memcheck.txt"
fi
echo "done at $(elapsed) s"
