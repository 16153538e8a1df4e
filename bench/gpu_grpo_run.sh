#!/usr/bin/env bash
# GRPO on the H200 with configs/h200_160m.txtpb, and the learner's training step against HF's on the same shapes.
#   bash bench/gpu_grpo_run.sh build OUT_DIR   # build spargo and the benchmarks against the machine's CUDA libtorch
#   bash bench/gpu_grpo_run.sh bench OUT_DIR   # spargo_learner_bench and the HF peer (same call: side by side)
#   bash bench/gpu_grpo_run.sh grpo OUT_DIR [STEPS] [extra spargo train flags...]
#                                              # the GRPO run on a generated dataset; metrics and summary to OUT_DIR
#   bash bench/gpu_grpo_run.sh services OUT_DIR [STEPS] [extra flags...]
#                                              # the same run disaggregated on the one GPU: `spargo reward` and two
#                                              # `spargo rollout --device cuda` workers as their own processes
#   bash bench/gpu_grpo_run.sh learner OUT_DIR [STEPS] [extra flags...]
#                                              # the same run with the policy trained by a `spargo learner` process
#                                              # on the GPU (sampling in the run's process with pulled weights)
# Environment: $SPARGO_ENV (a script putting the Debian libraries on the paths, e.g. .devdeps/env.sh),
# $SPARGO_TOKENIZER (a tokenizer.json; default .devdata/tokenizer.json), $SPARGO_HF_PEER (HF's peer script; default
# .devdata/hf_v32_peer.py), $SPARGO_TRAIN_SECONDS (stop the GRPO run after this long; what it logged comes back).
set -uo pipefail
mode="${1:?build|bench|grpo}"
out="${2:-/tmp/spargo-gpu}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
tokenizer="${SPARGO_TOKENIZER:-.devdata/tokenizer.json}"
case "$mode" in
  build)
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARGO_BUILD_TESTS=OFF > "$out/cmake.txt" 2>&1 \
      || { tail -20 "$out/cmake.txt"; exit 1; }
    ninja -C build-gpu -j"$(nproc)" spargo spargo_learner_bench spargo_model_bench > "$out/build.txt" 2>&1 \
      || { grep -m5 -A5 error "$out/build.txt"; exit 1; }
    echo "build ok"
    ;;
  bench)
    for args in "--shapes 1x4096,4x4096,1x8192 --micro_batch_rows 1" "--shapes 1x16384 --micro_batch_rows 1 --checkpointing"; do
      build-gpu/bench/spargo_learner_bench --config 160m --device cuda --dtype bfloat16 $args 2>&1 | tee -a "$out/learner_bench.txt"
    done
    PYTHONUNBUFFERED=1 timeout 300 python3 "${SPARGO_HF_PEER:-.devdata/hf_v32_peer.py}" 2>&1 | grep '^{' | tee "$out/hf_peer.jsonl"
    ;;
  grpo|services|learner)
    steps="${3:-200}"
    shift 3 2>/dev/null || shift $#
    python3 scripts/make_arithmetic_jsonl.py --out-dir data/arith --train 8000 --heldout 256 --digits 2 --seed 1
    rm -rf runs/h200
    config=configs/h200_160m.txtpb
    if [[ "$mode" == services ]]; then
      config="$out/h200_160m_services.txtpb"
      sed -e '/^rollout {/,/^}/{/device:/d}' -e '/^rollout {/a\  workers: "127.0.0.1:50161"\n  workers: "127.0.0.1:50163"' \
        -e '$a\services { reward_address: "127.0.0.1:50162" }' configs/h200_160m.txtpb > "$config"
      pids=()
      build-gpu/cli/spargo reward --config "$config" --listen 127.0.0.1:50162 > "$out/reward.txt" 2>&1 &
      pids+=($!)
      for port in 50161 50163; do
        build-gpu/cli/spargo rollout --config "$config" --listen "127.0.0.1:$port" --set "model.tokenizer=$tokenizer" \
          --set metrics.port=0 --device cuda --dtype bfloat16 > "$out/rollout_$port.txt" 2>&1 &
        pids+=($!)
      done
      trap 'kill "${pids[@]}" 2> /dev/null' EXIT
    fi
    if [[ "$mode" == learner ]]; then
      config="$out/h200_160m_learner.txtpb"
      sed -e '$a\services { learner_address: "127.0.0.1:50164" }' configs/h200_160m.txtpb > "$config"
      build-gpu/cli/spargo learner --config "$config" --listen 127.0.0.1:50164 --set "model.tokenizer=$tokenizer" \
        --set metrics.port=0 > "$out/learner.txt" 2>&1 &
      learner_pid=$!
      trap 'kill "$learner_pid" 2> /dev/null' EXIT
    fi
    limit=()
    [[ -n "${SPARGO_TRAIN_SECONDS:-}" ]] && limit=(timeout -s TERM "$SPARGO_TRAIN_SECONDS")
    "${limit[@]}" build-gpu/cli/spargo train --config "$config" --run-dir runs/h200 --set "model.tokenizer=$tokenizer" \
      --set "learner.grpo.steps=$steps" --set metrics.port=0 "$@" > "$out/train_stdout.txt" 2> "$out/train_stderr.txt"
    echo "spargo train exit code $?"
    cp runs/h200/metrics.jsonl runs/h200/summary.json "$out/" 2>/dev/null
    grep -E "held-out|done|error" "$out/train_stdout.txt" "$out/train_stderr.txt" | head
    tail -3 "$out/train_stdout.txt"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
