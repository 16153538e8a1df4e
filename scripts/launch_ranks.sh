#!/usr/bin/env bash
# Starts N copies of a command on this machine as the ranks of one data-parallel group, the way torchrun does:
# each gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR (127.0.0.1) and MASTER_PORT ($MASTER_PORT or a free port), and
# its output prefixed with "[rank R]". If any rank fails, the others are stopped; the exit code is the first failure's.
#   scripts/launch_ranks.sh 2 build/cli/spargo train --config configs/h200_160m.txtpb
# (Where torchrun is installed, `torchrun --nproc-per-node 2 --no-python build/cli/spargo train ...` does the same;
# under Slurm, `srun` sets the SLURM_* variables spargo also reads.)
set -uo pipefail
n="${1:?usage: launch_ranks.sh N COMMAND [ARGS...]}"
shift
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "launch_ranks.sh: N must be a positive integer, got '$n'" >&2; exit 2; }
(($#)) || { echo "launch_ranks.sh: no command" >&2; exit 2; }
port="${MASTER_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
pids=()
for ((r = 0; r < n; r++)); do
  ( export RANK=$r LOCAL_RANK=$r WORLD_SIZE=$n LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port
    exec "$@" 2>&1 | sed -u "s/^/[rank $r] /" ) &
  pids+=($!)
done
stop_all() { kill "${pids[@]}" 2> /dev/null; }
trap 'stop_all; exit 130' INT TERM
status=0
remaining=$n
while ((remaining > 0)); do
  wait -n; rc=$?
  remaining=$((remaining - 1))
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "launch_ranks.sh: a rank exited with $rc; stopping the others" >&2
    stop_all
  fi
done
exit $status
