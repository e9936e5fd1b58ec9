#!/usr/bin/env bash
# Train on every GPU of one machine: one process, no jax.distributed.
#
#   launch/gpu_host.sh --config configs/NAME.py --workdir DIR [--config.a.b=value ...]
#
# Environment (optional):
#   GPUS                     which GPUs to use, e.g. "0,1,2,3" (default: all; sets CUDA_VISIBLE_DEVICES)
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX takes up front (default here 0.92;
#                            JAX's own default is 0.75, which wastes a quarter of an H100 on an 11B model)
#
# One Python process drives all GPUs of the host: jax.devices() lists them, and config.mesh spreads
# the work over them (the default mesh.data=-1 splits the batch over all GPUs; mesh.fsdp=-1 with
# mesh.data=1 shards the frozen weights instead, for a backbone that does not fit one GPU;
# mesh.tensor splits each layer). Needs the CUDA build of JAX: pip install "jax[cuda12]==<version
# in requirements.txt>". Check the memory first: main.py --config ... --config.mode=plan
# --config.plan.device_memory_gib=80 compiles on these GPUs, or --config.plan.devices=N on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${GPUS:-}" ]]; then
  export CUDA_VISIBLE_DEVICES=$GPUS
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec python main.py "$@"
