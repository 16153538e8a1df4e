#!/usr/bin/env bash
# Builds spargo against the machine's CUDA libtorch, runs the test suite (CPU and CUDA paths) and the model
# benchmarks, printing short tables. Usage: bash bench/gpu_run.sh OUT_DIR
#   Dependencies: an env script that puts the Debian libraries on the paths may be given as $SPARGO_ENV.
#   Fixtures: $SPARGO_FIXTURES_DIR (default ../shared/fixtures).
set -uo pipefail
out="${1:-/tmp/spargo-gpu}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" > "$out/build.txt" 2>&1 || { grep -m5 -A5 error "$out/build.txt"; exit 1; }
echo "build ok"
(cd build-gpu && ctest -j8 ${SPARGO_CTEST_EXCLUDE:+-E "$SPARGO_CTEST_EXCLUDE"} > "$out/ctest.txt" 2>&1)
grep -E "tests passed|FAILED|Failed" "$out/ctest.txt" | head -20
build-gpu/tests/spargo_tests --gtest_filter='LogitsCommand.*:Dsv32Model.Matches*' 2>&1 | grep -E "max \||OK|FAILED" | tee "$out/fixture.txt"
build-gpu/bench/spargo_model_bench --config tiny --device cpu --batches 1,8 2>&1 | tee "$out/bench_tiny_cpu.txt"
build-gpu/bench/spargo_model_bench --config tiny --device cuda --batches 1,64 2>&1 | tee "$out/bench_tiny_cuda.txt"
build-gpu/tests/spargo_tests --gtest_filter='DsaTraining.Cuda*:GenerateCommand.RunsOnCuda' 2>&1 \
  | grep -E "max \||OK|FAILED|Failure" | tee "$out/cuda_training.txt"
for dtype in bfloat16 float32; do
  build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype $dtype --batches 1,8 --prompt 1024 --train \
    2>&1 | tee "$out/bench_160m_train_$dtype.txt"
done
for dtype in bfloat16 float32; do
  build-gpu/bench/spargo_model_bench --config 160m --device cuda --dtype $dtype --batches 1,64 --prompt 128 \
    --new_tokens 256 2>&1 | tee "$out/bench_160m_$dtype.txt"
done
