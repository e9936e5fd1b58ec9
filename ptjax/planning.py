"""Plan mode: will a config's train step fit a device mesh? Answered before a pod is paid for.

    python main.py --config configs/NAME.py --config.mode=plan \
        --config.plan.devices=8 --config.plan.device_memory_gib=32 [--config.mesh.fsdp=8 ...]

The train step of the config (same model, method, optimizer, batch, mesh, remat policy and layer
scanning as `train`) is compiled ahead of time with abstract parameters: the backbone is built
from its transformers config (a local folder, a config.json, or a preset in ARCHITECTURES for a
hub model that is not on this machine), no weight is read and nothing is downloaded. The step
is compiled on the devices of this process, or on `plan.devices` simulated CPU devices
(`use_simulated_devices`; the same as XLA_FLAGS=--xla_force_host_platform_device_count=N).

The report gives, per device, the memory of the compiled step from XLA's buffer assignment
(arguments: frozen weights, trainable params, optimizer state, batch; outputs; donated outputs
that reuse argument buffers; temporaries such as activations kept for the backward pass;
generated code), the peak estimate arguments + outputs - aliased + temporaries + code, the
step's FLOPs (XLA's cost analysis of the whole step; scanned layers and accumulated
microbatches are counted on a twin without loops, `count_step_flops`), compile time, and a
verdict against plan.device_memory_gib minus plan.memory_margin.

The compile targets the platform of the devices used. Simulated CPU devices stand in for
accelerators: weights, optimizer state and the activations kept for the backward pass have their
real sizes. XLA-CPU has no bf16 matmul; it converts operands and results to float32 and copies
per-layer weight slices that accelerator compilers fuse into the matmuls (CPU_COMPILER_OPTIONS
keeps those copies inside the layer loop), so temporaries are an upper bound: a tight one for
scanned layers (one layer's copies at a time), a loose one with model.scan_layers=False (every
layer's copies at once).

The batch has the config's global batch size and the longest shapes a run can take: the
default length group padded to the bucket that holds task.max_length, other groups (e.g. T5
decoder targets) to the bucket that holds the longest of `plan.examples` featurized examples.
Examples are read and tokenized as in training; an architecture without its own tokenizer
(a preset or a bare config.json) is tokenized by `plan.tokenizer` with the special tokens of the
backbone's kind added: tokenization only decides shapes the plan pads anyway (label words must be
single tokens in it, as they are in the real tokenizers for the default verbalizers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from ptjax.data import pipeline
from ptjax.errors import InputError
from ptjax.models import architectures
from ptjax.models.loading import Backbone
from ptjax.training import sharding as shd
from ptjax.training.engine import Engine
from ptjax.training.flops import cost_flops, unrolled_flops
from ptjax.training.optimizer import build_optimizer

GIB = 2 ** 30

# --------------------------------------------------------------------------------------------
# Devices.


def use_simulated_devices(count: int) -> None:
    """Make JAX start with `count` CPU devices (count 0: leave the devices as they are).
    Must run before JAX initializes its backends; afterwards only an already matching set of
    devices is accepted."""
    if count <= 0:
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        devices = jax.devices()
        if len(devices) != count or devices[0].platform != "cpu":
            raise InputError(
                f"config.plan.devices={count}: JAX already started with {len(devices)} "
                f"{devices[0].platform} devices; set XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{count} JAX_PLATFORMS=cpu before Python starts"
            )
        return
    jax.config.update("jax_platforms", "cpu")
    request_cpu_devices(count)


def request_cpu_devices(count: int) -> bool:
    """Give JAX's CPU backend `count` devices, accelerators left as they are. Only before JAX
    initializes its backends: returns False (nothing changed) once it has."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    jax.config.update("jax_num_cpu_devices", count)
    return True


# --------------------------------------------------------------------------------------------
# The backbone, without weights.


def architecture_name(config: ml_collections.ConfigDict) -> str:
    return config.plan.architecture or config.model.name


def open_architecture(config: ml_collections.ConfigDict, *, scan_layers: bool | None = None) -> Backbone:
    """The config's backbone as module + abstract params, weights neither read nor downloaded
    (ptjax.models.architectures)."""
    from ptjax.experiment import backbone_options

    options = backbone_options(config)
    if scan_layers is not None:
        options["scan_layers"] = scan_layers
    try:
        return architectures.open_architecture(architecture_name(config), **options, standin=config.plan.tokenizer)
    except InputError as err:
        key = "config.plan.architecture" if config.plan.architecture else "config.model.name"
        raise InputError(f"{key}: {err}") from None


def planning_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with the training split cut to plan.examples examples (they only give the
    batch's fields; shapes come from the config)."""
    planned = config.copy_and_resolve_references()
    limit = config.task.max_train_examples
    planned.task.max_train_examples = min(limit, config.plan.examples) if limit else config.plan.examples
    return planned


def build_without_weights(config: ml_collections.ConfigDict):
    """experiment.build with the backbone from open_architecture (main.py's builder for plans)."""
    from ptjax.experiment import build

    return build(planning_config(config), backbone=open_architecture(config))


# --------------------------------------------------------------------------------------------
# The batch.


def planned_lengths(config: ml_collections.ConfigDict, split: pipeline.SplitData) -> dict[str, int]:
    """Per length group, the padded length of the longest batch a run can see (module doc)."""
    lengths = {}
    for group, values in split.lengths.items():
        longest = int(values.max())
        if group == pipeline.DEFAULT_GROUP:
            longest = max(longest, config.task.max_length)
        buckets = tuple(sorted(set(config.task.length_buckets))) or pipeline.default_buckets(longest)
        lengths[group] = next((b for b in buckets if b >= longest), longest)
    return lengths


def abstract_batch(config: ml_collections.ConfigDict, data, engine: Engine) -> tuple[dict, dict[str, int]]:
    """({field: ShapeDtypeStruct with its batch sharding}, lengths) for one global train batch."""
    split_name = config.task.train_split
    groups = getattr(data, "length_groups", {}) or {}
    split = pipeline.prepare_split(split_name, data.features(split_name), data.pad_values, groups,
                                   tuple(config.task.length_buckets))
    lengths = planned_lengths(config, split)
    rows = np.arange(config.train.batch_size) % len(split)  # a few examples, repeated
    arrays = pipeline.collate(split, rows, lengths)
    batch = {
        name: jax.ShapeDtypeStruct(
            value.shape, jax.dtypes.canonicalize_dtype(value.dtype),
            sharding=NamedSharding(engine.mesh, shd.batch_spec(engine.rules, value.ndim)))
        for name, value in arrays.items()
    }
    return batch, lengths


# --------------------------------------------------------------------------------------------
# The plan.


# XLA-CPU has no bf16 matmul: it converts the operands to float32, and loop-invariant code
# motion then hoists the conversion of a whole scanned weight stack out of the layer loop (a
# float32 copy of every layer's weights at once, which no accelerator makes). Without that pass
# the conversion stays per layer.
CPU_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def compiler_options() -> dict | None:
    """Options for the plan's compile. Given at compile time, they replace the jitted step's own
    (ptjax.training.step.step_compiler_options, CPU kernel choices for training on a CPU, which
    say nothing of the accelerator the plan stands in for)."""
    return CPU_COMPILER_OPTIONS if jax.devices()[0].platform == "cpu" else None


@dataclasses.dataclass
class Memory:
    """Per-device bytes of a compiled executable (XLA's memory analysis)."""

    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    generated_code: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.generated_code

    @classmethod
    def of(cls, compiled) -> Memory:
        stats = compiled.memory_analysis()
        if stats is None:
            platform = jax.devices()[0].platform
            raise RuntimeError(f"{platform}: XLA reports no memory analysis for this backend")
        return cls(int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes),
                   int(stats.alias_size_in_bytes), int(stats.temp_size_in_bytes),
                   int(stats.generated_code_size_in_bytes))


def shard_bytes(tree: Any) -> int:
    """Bytes of the largest per-device shard of every leaf (ShapeDtypeStructs with a sharding)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _abstract(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def count_step_flops(config: ml_collections.ConfigDict, lowered, batch: dict,
                     rng) -> tuple[float | None, str]:
    """(FLOPs of one train step, how they were counted). XLA's cost analysis counts a loop body
    once, so a step with scanned layers or accumulated microbatches is counted on a twin that
    has neither: the same step lowered (never compiled) with unrolled layers and the whole batch
    at once, which does the same arithmetic."""
    if not config.model.scan_layers and config.optimizer.grad_accum_steps == 1:
        return cost_flops(lowered), "cost_analysis"
    from ptjax.experiment import build

    unrolled = config.copy_and_resolve_references()
    unrolled.model.scan_layers = False
    unrolled.optimizer.grad_accum_steps = 1
    twin = build(planning_config(unrolled), backbone=open_architecture(unrolled)).model
    return unrolled_flops(unrolled, twin, batch, rng), "cost_analysis_unrolled"


def flops_estimate(backbone: Backbone, n_trainable: int, n_frozen: int, tokens: int, *,
                   backbone_trains: bool) -> float:
    """Dense FLOPs of a train step over `tokens` padded tokens: per parameter a token meets, 2
    forward and 2 backward (to the input), 2 more for a trainable one's gradient. A layer shared by
    every depth (ALBERT, Family.shared_layer) is met once per depth."""
    shared = backbone.family.shared_layer
    repeated = (backbone.config.num_layers - 1) * sum(
        math.prod(x.shape) for x in jax.tree.leaves(backbone.shapes[shared])) if shared else 0
    if backbone_trains:
        n_trainable += repeated
    else:
        n_frozen += repeated
    return float(tokens * (4 * (n_trainable + n_frozen) + 2 * n_trainable))


def plan(config: ml_collections.ConfigDict, experiment, *, count_flops: bool = True) -> dict:
    """Compile the train step of `experiment` (built by build_without_weights) on the current
    devices and report memory, FLOPs and the verdict (see the module docstring)."""
    model, data = experiment.model, experiment.data
    engine = Engine(config, model)
    optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable, total_steps=1,
                                steps_per_epoch=1)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    trainable = engine.trainable_target()
    frozen = _abstract(engine.frozen_shapes, engine.frozen_shardings)
    opt_state = engine.opt_state_target(optimizer.transform, opt_shardings)
    batch, lengths = abstract_batch(config, data, engine)
    rng = jax.random.PRNGKey(config.seed)

    step = engine.compile_train_step(optimizer.transform, opt_shardings)
    start = time.perf_counter()
    with engine.activate():
        lowered = step.jitted.lower(trainable, frozen, opt_state, batch, rng)
    lowered_at = time.perf_counter()
    compiled = lowered.compile(compiler_options=compiler_options())
    compile_s = time.perf_counter() - lowered_at
    memory = Memory.of(compiled)

    flops, flops_source = None, None
    if count_flops:
        flops, flops_source = count_step_flops(config, lowered, batch, rng)

    count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
    n_trainable, n_frozen = count(engine.trainable_shapes), count(engine.frozen_shapes)
    padded_tokens = config.train.batch_size * sum(lengths.values())
    usable = config.plan.device_memory_gib * GIB * (1.0 - config.plan.memory_margin)
    fits = memory.peak <= usable
    report = {
        "architecture": architecture_name(config),
        "family": experiment.backbone.family.name,
        "method": config.method.name,
        "parameters": {"trainable": n_trainable, "frozen": n_frozen, "total": n_trainable + n_frozen},
        "dtype": config.model.dtype,
        "compute_dtype": config.model.compute_dtype or config.model.dtype,
        "remat_policy": config.model.remat_policy,
        "scan_layers": bool(config.model.scan_layers),
        "platform": jax.devices()[0].platform,
        "devices": jax.device_count(),
        "mesh": {k: int(v) for k, v in engine.mesh.shape.items()},
        "batch_size": config.train.batch_size,
        "grad_accum_steps": config.optimizer.grad_accum_steps,
        "lengths": lengths,
        "batch_fields": {name: list(x.shape) for name, x in batch.items()},
        "lower_s": round(lowered_at - start, 2),
        "compile_s": round(compile_s, 2),
        "memory_per_device": {**dataclasses.asdict(memory), "peak": memory.peak},
        "arguments_per_device": {
            "frozen": shard_bytes(frozen), "trainable": shard_bytes(trainable),
            "optimizer_state": shard_bytes(opt_state), "batch": shard_bytes(batch),
        },
        "flops_per_step": flops,
        "flops_source": flops_source if flops is not None else None,
        "flops_per_step_estimate": flops_estimate(experiment.backbone, n_trainable, n_frozen, padded_tokens,
                                                  backbone_trains=model.is_trainable(("backbone",))),
        "device_memory_gib": float(config.plan.device_memory_gib),
        "memory_margin": float(config.plan.memory_margin),
        "fits": bool(fits),
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict) -> str:
    peak = report["memory_per_device"]["peak"]
    capacity = report["device_memory_gib"] * GIB
    usable = capacity * (1.0 - report["memory_margin"])
    where = (f"{report['devices']} device(s) of {report['device_memory_gib']:g} GiB "
             f"({100 * report['memory_margin']:g}% kept free)")
    if report["fits"]:
        return f"fits: peak {peak / GIB:.2f} GiB per device is {100 * peak / capacity:.0f}% of {where}"
    return (f"does not fit: peak {peak / GIB:.2f} GiB per device exceeds the {usable / GIB:.2f} GiB usable "
            f"on {where} by {(peak - usable) / GIB:.2f} GiB")


def format_report(report: dict) -> str:
    gib = lambda n: f"{n / GIB:8.3f} GiB"
    memory, arguments = report["memory_per_device"], report["arguments_per_device"]
    params, flops = report["parameters"], report["flops_per_step"]
    if flops:
        flops_line = (f"  FLOPs per step: {flops:.4g} ({report['flops_source']}), "
                      f"{flops / report['devices']:.4g} per device")
    else:
        estimate = report["flops_per_step_estimate"]
        flops_line = f"  FLOPs per step: not reported by XLA; estimate {estimate:.4g}"
    lines = [
        (f"plan: {report['architecture']} ({report['family']}), method {report['method']}, "
         f"{params['total']:,} parameters ({params['trainable']:,} trainable), weights {report['dtype']}, "
         f"compute {report['compute_dtype']}"),
        (f"  mesh {report['mesh']} on {report['devices']} {report['platform']} device(s); remat "
         f"{report['remat_policy']}, scan_layers {report['scan_layers']}"),
        (f"  batch {report['batch_size']} (grad_accum_steps {report['grad_accum_steps']}), lengths "
         f"{report['lengths']}, fields {report['batch_fields']}"),
        f"  compile: lower {report['lower_s']:.1f} s, compile {report['compile_s']:.1f} s",
        "  memory per device:",
        (f"    arguments      {gib(memory['arguments'])}  (frozen {arguments['frozen'] / GIB:.3f}, trainable "
         f"{arguments['trainable'] / GIB:.4f}, optimizer {arguments['optimizer_state'] / GIB:.4f}, batch "
         f"{arguments['batch'] / GIB:.4f} GiB)"),
        f"    outputs        {gib(memory['outputs'])}",
        f"    aliased        {gib(memory['aliased'])}  (donated inputs reused by outputs)",
        f"    temporaries    {gib(memory['temporaries'])}",
        f"    generated code {gib(memory['generated_code'])}",
        f"    peak           {gib(memory['peak'])}",
        flops_line,
        f"  verdict: {report['verdict']}",
    ]
    return "\n".join(lines)


def run_plan(config: ml_collections.ConfigDict, workdir: str | None, experiment) -> dict:
    """main.py's runner for mode "plan": print the report, write DIR/plan.json when a workdir is given."""
    report = plan(config, experiment)
    print(format_report(report), flush=True)
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        (Path(workdir) / "plan.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report

