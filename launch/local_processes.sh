#!/usr/bin/env bash
# The multi-host code path on one machine: N local processes on CPU, D simulated devices each.
#
#   launch/local_processes.sh N D --config configs/NAME.py --workdir DIR [--config.a.b=value ...]
#
# Starts N copies of `python main.py --distributed ...` with JAX_COORDINATOR_ADDRESS (localhost),
# JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=0..N-1, exactly the variables launch/slurm_gpu.sbatch
# sets on a cluster, and JAX_PLATFORMS=cpu (collectives over gloo). A dry run of a multi-node job
# before it is submitted. Process 0 prints to this terminal; process i > 0 logs to
# $PTJAX_LOG_PREFIX.process<i>.log (default prefix: run, in a new temporary folder).
# PTJAX_COORDINATOR_PORT picks the port (default: a free one).
# Exits with the first non-zero status of any process.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 PROCESSES DEVICES_PER_PROCESS --config configs/NAME.py [--workdir DIR] [--config.a.b=value ...]" >&2
  exit 2
fi
PROCESSES=$1
DEVICES=$2
shift 2
cd "$(dirname "$0")/.."
PORT=${PTJAX_COORDINATOR_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
LOGS=${PTJAX_LOG_PREFIX:-$(mktemp -d -t ptjax-processes-XXXXXX)/run}
export JAX_COORDINATOR_ADDRESS="localhost:$PORT" JAX_NUM_PROCESSES=$PROCESSES JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES"
pids=()
for ((i = 1; i < PROCESSES; i++)); do
  JAX_PROCESS_ID=$i python main.py --distributed "$@" > "$LOGS.process$i.log" 2>&1 &
  pids+=($!)
done
status=0
JAX_PROCESS_ID=0 python main.py --distributed "$@" || status=$?
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [[ $status -ne 0 ]] || status=$code; }
done
if [[ $status -ne 0 ]]; then
  echo "a process failed (status $status); logs of processes 1..$((PROCESSES - 1)): $LOGS.process*.log" >&2
fi
exit $status
