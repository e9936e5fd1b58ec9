"""How many CPU devices JAX starts with for a run: `config.mesh.cpu_devices`.

XLA:CPU runs one device's step on all cores: its dense products split across them, but its
batched attention products and many small kernels run on one thread while another core waits,
and a split product costs more core-time than one on a single core. One device per core, the
batch split between them (data parallel, the default mesh), keeps every core on its own kernel:
the bf16 MiniLM P-tuning v2 step (32 x 128 tokens) ran 0.405 -> 0.332 s on a 2-core EPYC. Where
a step has little work the split costs more than it gains: MiniLM at 8 x 32 tokens 25 -> 29 ms,
the quickstart's float32 SmolLM2 steps (8 short queries) 26.3 -> 17.9 examples/s (BENCHMARKS.md,
"One device or several"). So "auto" starts one device per core only where each device gets at
least MIN_TOKENS_PER_DEVICE tokens of every run's step, the batches divide and the copies of the
frozen weights (one per device) fit in memory; otherwise JAX's one device. It is not the default
(0): before JAX starts, a step's tokens are known only as rows x task.max_length (or the longest
bucket), an upper bound; SST-2's sentences are far shorter than its max_length of 64, and its
steps ran 19% slower on two devices.

On a host with an accelerator the CPU devices are not used (JAX's default backend is the
accelerator), so the setting does nothing there. It must be applied before JAX starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from absl import logging

AUTO = "auto"
MEMORY_SHARE = 0.5  # the weight copies may take at most this share of the available memory
# Tokens (rows x task.max_length) of a step each device must get. Measured on 2 cores, two devices
# against one: no step of 512 or more tokens a device was slower (MiniLM 32 x 32: equal; 8 x 128:
# -17%; SmolLM2 bf16 8 x 148: -13%), while 128-256 a device were (MiniLM 8 x 32: +16%; the
# quickstart, at most 8 x 64: +32%).
MIN_TOKENS_PER_DEVICE = 512


def physical_cores() -> int:
    """Cores this process may run on, counting hyperthreads of one core once."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("", str(cpu)))
    return max(len(cores), 1)


def available_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def weight_bytes(model_name: str) -> int | None:
    """Bytes of the backbone's weight files (one device's copy, at most: a float32 checkpoint
    loaded in bf16 takes half); None when the checkpoint cannot be found."""
    from ptjax.errors import InputError
    from ptjax.models.loading import resolve_checkpoint

    try:
        files = resolve_checkpoint(model_name)
    except InputError:  # the run's own loading reports it
        return None
    if files.weights.is_file():
        return files.weights.stat().st_size
    patterns = ("*.safetensors", "*.bin", "*.gguf", "*.msgpack")
    return sum(path.stat().st_size for pattern in patterns for path in files.weights.glob(pattern)) or None


def auto_count(cores: int, batch_rows: tuple[int, ...], step_tokens: int, one_copy: int | None,
               memory: int | None) -> int:
    """The most devices, at most one per core, that divide every batch, give each device at least
    MIN_TOKENS_PER_DEVICE of the smallest step's `step_tokens`, and whose weight copies fit in
    MEMORY_SHARE of the memory (unknown weights or memory: one device)."""
    for count in range(cores, 1, -1):
        if any(rows % count for rows in batch_rows) or step_tokens < count * MIN_TOKENS_PER_DEVICE:
            continue
        if one_copy is None or memory is None or count * one_copy > MEMORY_SHARE * memory:
            continue
        return count
    return 1


def auto_devices(batch_rows: tuple[int, ...], step_tokens: int, model_names: tuple[str, ...]) -> int:
    """auto_count on this host, for these batches and backbones (the largest one's copies)."""
    copies = [weight_bytes(name) for name in sorted(set(model_names))]
    return auto_count(physical_cores(), tuple(sorted(set(batch_rows))), step_tokens,
                      None if None in copies else max(copies), available_memory_bytes())


def accelerator_expected() -> bool:
    """Whether JAX will pick an accelerator, judged without starting it: JAX_PLATFORMS names
    another platform first, or a GPU/TPU plugin is installed (an entry point or a module in
    JAX's `jax_plugins` namespace, or libtpu). "auto" then leaves the CPU alone
    (and does not look for the weights: a hub id would download before the run's own loading)."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return not platforms.split(",")[0].strip().lower().startswith("cpu")
    return bool(entry_points(group="jax_plugins")) or any(find_spec(name) for name in ("jax_plugins", "libtpu"))


def longest_batch_length(task) -> int:
    """Tokens a row of a batch is padded to at most: task.max_length, or the longest length bucket
    when buckets are named (a batch with an example longer than every bucket, padded further,
    is not counted)."""
    buckets = [int(b) for b in task.length_buckets]
    return min(int(task.max_length), max(buckets)) if buckets else int(task.max_length)


def default_mesh(mesh) -> bool:
    return (int(mesh.data), int(mesh.fsdp), int(mesh.tensor)) == (-1, 1, 1)


def start_cpu_devices(configs: list) -> int:
    """Apply config.mesh.cpu_devices before JAX starts, for the runs of `configs` (one run's
    config, or every run of a sweep); returns the count requested (0: JAX's own devices left as
    they are: set to 0, JAX already started, XLA_FLAGS or JAX_NUM_CPU_DEVICES name a count, or
    "auto" with a mesh shape of the user's or an accelerator expected)."""
    from jax._src import xla_bridge

    from ptjax.errors import InputError

    setting = str(configs[0].mesh.cpu_devices)
    if setting != AUTO and not setting.isdigit():
        raise InputError(f"config.mesh.cpu_devices={setting!r}: \"auto\" or a device count (0: JAX's own)")
    if setting == "0" or xla_bridge.backends_are_initialized():
        return 0
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or \
            os.environ.get("JAX_NUM_CPU_DEVICES"):
        return 0
    if setting == AUTO:
        if accelerator_expected() or not all(default_mesh(config.mesh) for config in configs):
            return 0
        rows, tokens = [], []
        for config in configs:
            micro = config.train.batch_size // max(int(config.optimizer.grad_accum_steps), 1)
            rows += [micro, config.train.eval_batch_size]
            step_rows = config.train.eval_batch_size if config.mode == "eval" else micro
            tokens.append(step_rows * longest_batch_length(config.task))
        count = auto_devices(tuple(rows), min(tokens), tuple(config.model.name for config in configs))
    else:
        count = int(setting)
    from ptjax.planning import request_cpu_devices

    request_cpu_devices(count)
    logging.info("JAX's CPU backend starts with %d device(s) (config.mesh.cpu_devices=%s)", count, setting)
    return count
