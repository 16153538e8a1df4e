#!/usr/bin/env bash
# One H200 call: where a decode step of the 160M model goes (issue 11). Builds the engine bench only, then runs the
# decode loads (prompt 128 + 256 new tokens, batches 64 and 256) through CUDA graphs and eagerly padded, each
# followed by one more call under libtorch's Kineto profiler (--profile_top: kernels by GPU time, GPU busy and idle
# time, host events). Extra bench flags may follow the output folder.
set -uo pipefail
out="$1"; shift; mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 || { tail -20 "$out/cmake.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" spargo_engine_bench > "$out/build.txt" 2>&1 || { grep -m10 -A6 error "$out/build.txt"; exit 1; }
echo "build ok $(date +%T)"
build-gpu/bench/spargo_engine_bench --config 160m --device cuda --dtype bfloat16 --modes decode --graphs auto,padded \
  --batches 64,256 --prompt 128 --new_tokens 256 --profile_top 45 "$@" 2>&1 | grep -v "^I " > "$out/profile.txt"
grep -E "^\| (64|256) |^profile:" "$out/profile.txt"
echo "done $(date +%T)"
