#!/usr/bin/env bash
# One H200 call for the lightning indexer (issue 13): builds the kernel tests and the indexer bench only, reports the
# tiled kernel's registers / spills and its wgmma instructions, runs the LightningIndexer* tests (bf16 and FP8,
# per-row and tiled kernels), compute-sanitizer memcheck on the tiled ties tests (the sampled selection's too), then
# the bench at DeepSeek's shapes (8K, 32K, 128K) and the 160M config's (4K, 32K). Logs go to OUT_DIR; a summary is printed.
#   bash bench/gpu_indexer_run.sh OUT_DIR [extra bench flags]
set -uo pipefail
out="${1:?OUT_DIR}"; shift; mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" spargo_kernel_tests spargo_indexer_bench > "$out/build.txt" 2>&1 ||
  { grep -m20 -B2 -A8 error "$out/build.txt"; exit 1; }
echo "build ok $(date +%T)"
grep -i -A2 "indexer_scores.*warning" "$out/build.txt" | head -20
obj=build-gpu/kernels/CMakeFiles/spargo_kernels_cuda.dir/indexer_scores.cu.o
cuobjdump --dump-resource-usage "$obj" 2>/dev/null | grep -E "Function|REG" | head -8
cuobjdump --dump-sass "$obj" 2>/dev/null > "$out/sass.txt"
echo "HGMMA $(grep -c HGMMA "$out/sass.txt") QGMMA $(grep -c QGMMA "$out/sass.txt") LDL $(grep -c LDL "$out/sass.txt") C7514-serialized $(grep -c C7514 "$out/build.txt")"
timeout 150 build-gpu/tests/spargo_kernel_tests --gtest_filter='LightningIndexer*' > "$out/tests.txt" 2>&1
echo "tests exit $? $(date +%T)"
grep -E "^\[  (FAILED|PASSED) |relative error|rows exact|rows select|Failure|diag|^ got|^ want" "$out/tests.txt" | head -60
timeout 120 compute-sanitizer --tool memcheck build-gpu/tests/spargo_kernel_tests \
  --gtest_filter='LightningIndexerTiled.EqualsCpuReferenceOnConstructedTies:LightningIndexerTiled.ManyEqualScoresAtTheThreshold:LightningIndexerTiled.LongRowsWithRepeatedScoresEqualTheCpuSelection' > "$out/memcheck.txt" 2>&1
echo "memcheck exit $? $(date +%T)"; grep -E "ERROR SUMMARY|^\[  (FAILED|PASSED) " "$out/memcheck.txt"
timeout 150 build-gpu/bench/spargo_indexer_bench --sets deepseek --lengths 8192,32768,131072 --reps 3 "$@" \
  2>&1 | tee "$out/bench_deepseek.txt" | grep "^|"
timeout 60 build-gpu/bench/spargo_indexer_bench --sets 160m --lengths 4096,32768 --reps 5 "$@" \
  2>&1 | tee "$out/bench_160m.txt" | grep "^| 160m"
echo "done $(date +%T)"
