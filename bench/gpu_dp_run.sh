#!/usr/bin/env bash
# Data parallelism on a machine with several GPUs (after `bash bench/gpu_grpo_run.sh build OUT_DIR`):
#   bash bench/gpu_dp_run.sh bench OUT_DIR   # spargo_learner_bench on 1 GPU and on all GPUs (the same rows per GPU),
#                                            # then the group's all-reduce and weight-broadcast bandwidth;
#                                            # $SPARGO_BENCH_FLAGS go to the multi-GPU runs
#   bash bench/gpu_dp_run.sh check OUT_DIR   # the same warm-up steps on 1 GPU and on 2 GPUs (NCCL): the checkpoints'
#                                            # master weights agree to bf16-gradient rounding; $SPARGO_DP_FLAGS (e.g.
#                                            # "--set learner.shard_optimizer_state=true") go to the 2-GPU run
#   bash bench/gpu_dp_run.sh grpo OUT_DIR [STEPS] [extra flags]
#                                            # configs/h200_160m.txtpb on all GPUs (scripts/launch_ranks.sh), as
#                                            # gpu_grpo_run.sh's grpo mode runs it on one
# Environment: $SPARGO_ENV, $SPARGO_TOKENIZER, $SPARGO_TRAIN_SECONDS as in gpu_grpo_run.sh; $SPARGO_GPUS (default:
# every visible GPU).
set -uo pipefail
mode="${1:?bench|check|grpo}"
out="${2:-/tmp/spargo-gpu}"
mkdir -p "$out"
[[ -n "${SPARGO_ENV:-}" ]] && source "$SPARGO_ENV" > /dev/null 2>&1
tokenizer="${SPARGO_TOKENIZER:-.devdata/tokenizer.json}"
gpus="${SPARGO_GPUS:-$(nvidia-smi -L | wc -l)}"
launch() { scripts/launch_ranks.sh "$@"; }
case "$mode" in
  bench)
    for shape in 8x1024 4x4096; do
      b="${shape%x*}"; l="${shape#*x}"
      build-gpu/bench/spargo_learner_bench --config 160m --device cuda --dtype bfloat16 --shapes "$shape" \
        --micro_batch_rows 4 --reps 5 2>&1 | tee -a "$out/dp_bench_1.txt"
      # shellcheck disable=SC2086
      launch "$gpus" build-gpu/bench/spargo_learner_bench --config 160m --device cuda --dtype bfloat16 \
        --shapes "$((b * gpus))x$l" --micro_batch_rows 4 --reps 5 ${SPARGO_BENCH_FLAGS:-} 2>&1 | tee -a "$out/dp_bench_$gpus.txt"
    done
    ;;
  check)
    python3 scripts/make_arithmetic_jsonl.py --out-dir data/arith --train 8000 --heldout 256 --digits 2 --seed 1
    flags=(--config configs/h200_160m.txtpb --set "model.tokenizer=$tokenizer" --set metrics.port=0
           --set learner.warmup.steps=4 --set rollout.max_new_tokens=16 --set rollout.prompts_per_step=4
           --set eval.heldout_prompts=8 --stop_after_grpo_step 1)
    rm -rf runs/dp1 runs/dp2
    build-gpu/cli/spargo train --run-dir runs/dp1 "${flags[@]}" > "$out/check_1gpu.txt" 2>&1
    echo "1 GPU: exit $?"
    # shellcheck disable=SC2086
    launch 2 build-gpu/cli/spargo train --run-dir runs/dp2 "${flags[@]}" ${SPARGO_DP_FLAGS:-} > "$out/check_2gpu.txt" 2>&1
    echo "2 GPUs: exit $?"
    python3 - <<'PY' | tee "$out/check.txt"
from safetensors.torch import load_file
a = load_file("runs/dp1/checkpoints/warmup-000004/model.safetensors")
b = load_file("runs/dp2/checkpoints/warmup-000004/model.safetensors")
assert a.keys() == b.keys(), "different tensors"
worst = max(((a[k].double() - b[k].double()).abs().max().item(), k) for k in a)
scale = max(a[k].double().abs().max().item() for k in a)
print(f"{len(a)} tensors; largest |1 GPU - 2 GPUs| = {worst[0]:.3g} (in {worst[1]}); largest |weight| {scale:.3g}")
PY
    ;;
  grpo)
    steps="${3:-200}"
    shift 3 2>/dev/null || shift $#
    python3 scripts/make_arithmetic_jsonl.py --out-dir data/arith --train 8000 --heldout 256 --digits 2 --seed 1
    rm -rf runs/h200dp
    limit=()
    [[ -n "${SPARGO_TRAIN_SECONDS:-}" ]] && limit=(timeout -s TERM "$SPARGO_TRAIN_SECONDS")
    "${limit[@]}" scripts/launch_ranks.sh "$gpus" build-gpu/cli/spargo train --config configs/h200_160m.txtpb \
      --run-dir runs/h200dp --set "model.tokenizer=$tokenizer" --set "learner.grpo.steps=$steps" --set metrics.port=0 \
      "$@" > "$out/dp_train.txt" 2>&1
    echo "spargo train on $gpus GPUs: exit code $?"
    cp runs/h200dp/metrics.jsonl runs/h200dp/summary.json "$out/" 2>/dev/null
    grep -E "held-out|done|error|ERROR" "$out/dp_train.txt" | head
    tail -3 "$out/dp_train.txt"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
