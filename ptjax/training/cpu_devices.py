"""How many CPU devices JAX starts with for a run: `config.mesh.cpu_devices`.

XLA:CPU runs one device's step on all cores: its dense products split across them, but its
batched attention products and many small kernels run on one thread while another core waits,
and a split product costs more core-time than one on a single core. One device per core, the
batch split between them (data parallel, the default mesh), keeps every core on its own kernel:
the bf16 MiniLM P-tuning v2 step (32 x 128 tokens) ran 0.405 -> 0.332 s on a 2-core EPYC, and
the float32 RTE run of configs/superglue_minilm_compare.py 32 -> 42 examples/s. Where a step has
little work the split costs more than it gains: MiniLM at 8 x 32 tokens 25 -> 29 ms, the
quickstart's float32 SmolLM2 steps (8 short queries) 26.3 -> 17.9 examples/s, SST-2's short
sentences 19% slower (BENCHMARKS.md, "One device or several").

So "auto" (the default) starts one device per core (within a container's CPU quota and memory
limit: ptjax/training/host_limits.py) only where each device gets at least
MIN_TOKENS_PER_DEVICE tokens of every run's step, the batches divide and the copies of the
frozen weights (one per device) fit in memory; otherwise JAX's one device. A step's tokens are
its rows times the length its batch is padded to, a length bucket that depends on the examples
drawn. Rows x task.max_length (or the longest bucket) bounds them from above; where that bound
allows more than one device, the tokens are counted on the data: the median padded step over
random batches of the split's first SAMPLE_EXAMPLES examples, featurized as the run does it
(`sampled_step_tokens`). Featurizing builds the backbone's abstract shapes, which starts JAX, so
it runs in a child process: this process's JAX must start after the count is known.

On a host with an accelerator the CPU devices are not used (JAX's default backend is the
accelerator), so the setting does nothing there. It must be applied before JAX starts.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

from absl import logging

from ptjax.training.host_limits import available_memory_bytes, physical_cores

AUTO = "auto"
MEMORY_SHARE = 0.5  # the weight copies may take at most this share of the available memory
# Tokens (rows x task.max_length) of a step each device must get. Measured on 2 cores, two devices
# against one: no step of 512 or more tokens a device was slower (MiniLM 32 x 32: equal; 8 x 128:
# -17%; SmolLM2 bf16 8 x 148: -13%), while 128-256 a device were (MiniLM 8 x 32: +16%; the
# quickstart, at most 8 x 64: +32%).
MIN_TOKENS_PER_DEVICE = 512
SAMPLE_EXAMPLES = 512  # examples of the split featurized to count a step's tokens
SAMPLE_BATCHES = 64  # random batches drawn from them
SAMPLE_TIMEOUT_S = 600


@functools.cache  # "auto" asks twice (the bound, then the count on the data); a hub id is looked up once
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


def step_rows(config) -> int:
    """Rows of the step a run repeats: the train microbatch, or the eval batch in mode eval."""
    if config.mode == "eval":
        return int(config.train.eval_batch_size)
    return int(config.train.batch_size) // max(int(config.optimizer.grad_accum_steps), 1)


def sampled_step_tokens(config) -> int:
    """Median padded tokens (rows x the padded lengths of every length group) of a step of
    `config`, over SAMPLE_BATCHES random batches of the first SAMPLE_EXAMPLES examples of the
    split it steps through (the train split; the first eval split in mode eval), featurized as
    the run does it, with the backbone's abstract shapes (ptjax.planning: no weight is read; a
    hub id from its downloaded copy). Starts JAX."""
    import numpy as np

    from ptjax.data import pipeline
    from ptjax.experiment import build
    from ptjax.planning import open_architecture

    sampled = config.copy_and_resolve_references()
    sampled.model.name, sampled.plan.architecture = _local_backbone_name(config.model.name), ""
    evaluating = config.mode == "eval"
    split_name = config.task.eval_splits[0] if evaluating else config.task.train_split
    limit_key = "max_eval_examples" if evaluating else "max_train_examples"
    limit = int(sampled.task[limit_key])
    sampled.task[limit_key] = min(limit, SAMPLE_EXAMPLES) if limit else SAMPLE_EXAMPLES
    data = build(sampled, backbone=open_architecture(sampled)).data
    split = pipeline.prepare_split(split_name, data.features(split_name), data.pad_values,
                                   getattr(data, "length_groups", {}) or {}, tuple(config.task.length_buckets))
    rows, rng = step_rows(config), np.random.default_rng(0)
    tokens = [rows * sum(split.batch_lengths(rng.choice(len(split), rows, replace=len(split) < rows)).values())
              for _ in range(SAMPLE_BATCHES)]
    return int(np.median(tokens))


def _local_backbone_name(name: str) -> str:
    """A hub id's local copy, which open_architecture reads (it downloads nothing itself; the run
    downloads the checkpoint next in any case, and weight_bytes already has); other names as
    they are."""
    from ptjax.models.architectures import ARCHITECTURES
    from ptjax.models.loading import WEIGHT_PACKAGES, resolve_checkpoint

    if name in WEIGHT_PACKAGES or name in ARCHITECTURES or Path(name).expanduser().exists():
        return name
    files = resolve_checkpoint(name)
    return str(files.weights if files.gguf_file else files.folder)


def _sampling_key(config) -> str:
    """What decides a run's featurized lengths and step rows (sweep runs that differ only in
    their optimizer or seed share it)."""
    parts = {name: config[name].to_dict() for name in ("model", "task", "method", "prompt", "head")}
    return json.dumps([parts, config.data_dir, config.mode, step_rows(config)], sort_keys=True, default=str)


def sampled_tokens_in_child(configs: list) -> list[int] | None:
    """sampled_step_tokens of each config (once per _sampling_key), computed in a child process
    so that this process's JAX starts later; None if the child fails (the run's own build then
    reports any bad input)."""
    import ptjax

    unique = list({_sampling_key(config): config for config in configs}.values())
    try:
        payload = pickle.dumps(unique)
    except (pickle.PicklingError, TypeError, AttributeError) as err:  # a config holding a callable
        logging.info("could not count a step's tokens on the data (%s); using the bound from task.max_length", err)
        return None
    # The child imports this ptjax, installed or not (main.py run from another folder).
    root = str(Path(ptjax.__file__).resolve().parents[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")])))
    child = subprocess.Popen([sys.executable, "-m", "ptjax.training.cpu_devices"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    result = {}
    talk = threading.Thread(target=lambda: result.update(zip(("out", "err"), child.communicate(payload))),
                            daemon=True)
    talk.start()
    try:
        _import_run_modules()  # meanwhile: the child spends most of its seconds importing too
        talk.join(SAMPLE_TIMEOUT_S)
    finally:  # a timeout, or an import that failed or was interrupted, leaves no child behind
        timed_out = talk.is_alive()
        if timed_out:
            child.kill()
    if timed_out:
        logging.warning("counting a step's tokens took over %d s; using the bound from task.max_length",
                        SAMPLE_TIMEOUT_S)
        return None
    if child.returncode != 0:
        last = (result["err"].decode(errors="replace").strip().splitlines() or [""])[-1]
        logging.info("could not count a step's tokens on the data (%s); using the bound from task.max_length", last)
        return None
    return json.loads(result["out"].decode().strip().splitlines()[-1])


def _import_run_modules() -> None:
    """Import what the run needs next, none of which starts JAX's backends: the experiment builders,
    the training loop and transformers' tokenizers (which import torch where it is installed).
    On RTE the child took 3.6 s, mostly its own imports, and these 2.6 s no longer wait for it."""
    for name in ("ptjax.experiment", "ptjax.training.loop"):
        importlib.import_module(name)
    from transformers import AutoTokenizer  # noqa: F401


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
    reason = ""
    if setting == AUTO:
        if accelerator_expected() or not all(default_mesh(config.mesh) for config in configs):
            return 0
        rows = tuple(r for config in configs for r in (step_rows(config), int(config.train.eval_batch_size)))
        names = tuple(config.model.name for config in configs)
        bound = min(step_rows(config) * longest_batch_length(config.task) for config in configs)
        count, reason = auto_devices(rows, bound, names), f", at most {bound} tokens a step"
        if count > 1 and (sampled := sampled_tokens_in_child(configs)) is not None:
            count, reason = auto_devices(rows, min(sampled), names), f", {min(sampled)} tokens a step on the data"
    else:
        count = int(setting)
    from ptjax.planning import request_cpu_devices

    request_cpu_devices(count)
    logging.info("JAX's CPU backend starts with %d device(s) (config.mesh.cpu_devices=%s%s)", count, setting, reason)
    return count


if __name__ == "__main__":  # sampled_tokens_in_child's child: pickled configs in, token counts out
    print(json.dumps([sampled_step_tokens(config) for config in pickle.load(sys.stdin.buffer)]))
