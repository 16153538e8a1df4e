#!/usr/bin/env bash
# Builds the whole-layer DSA benchmark (bench/dsa_layer_bench.cc) against the machine's CUDA libtorch and runs it at
# DeepSeek-V3.2's shapes: one attention layer, dense (MLA in MHA form through torch SDPA) against DSA (indexer top-k
# + sparse MLA in MQA form), projections included, whole prefill and last-chunk cost at each length, printing one
# table (also written to OUT_DIR/bench.txt). Usage:
#   bash bench/gpu_dsa_layer_run.sh OUT_DIR [LENGTHS] [INDEXERS]
#   (defaults 8192,32768,65536,131072 and the benchmark's --indexer default). Dependencies: an env script that puts
#   the Debian libraries on the paths may be given as $SPARGO_ENV. SPARGO_BENCH_TIMEOUT (seconds, default 300)
#   bounds the benchmark run.
set -uo pipefail
out="${1:-/tmp/spargo-dsa-layer}"
lengths="${2:-8192,32768,65536,131072}"
indexers="${3:-}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
start=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/cmake.txt" 2>&1 \
  || { tail -20 "$out/cmake.txt"; exit 1; }
grep "spargo CUDA kernels" "$out/cmake.txt"
ninja -C build-gpu -j"$(nproc)" spargo_dsa_layer_bench > "$out/build.txt" 2>&1 \
  || { grep -m10 -A6 error "$out/build.txt"; exit 1; }
echo "build ok in $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())' 2>/dev/null
timeout "${SPARGO_BENCH_TIMEOUT:-300}" build-gpu/bench/spargo_dsa_layer_bench --device cuda --lengths "$lengths" \
  ${indexers:+--indexer "$indexers"} 2>&1 | tee "$out/bench.txt"
echo "bench exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
