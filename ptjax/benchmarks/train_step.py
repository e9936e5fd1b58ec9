"""Throughput of the train step of an experiment config.

    python -m ptjax.benchmarks.train_step --config configs/NAME.py [--config.a.b=value ...]
        [--warmup 3] [--steps 10]

Builds the experiment, compiles the train step for one batch shape (the bucket lengths that
hold every benchmarked batch), runs warm-up steps, then times `steps` steps on real training
batches and prints one JSON line (on the CPU devices main.py would start the config on:
config.mesh.cpu_devices; `devices` says how many):

  examples_per_s, tokens_per_s (real tokens), padded_tokens_per_s (what the device computes),
  flops_per_step (XLA's cost analysis of the lowered step before partitioning: the whole
    step over all devices. XLA counts a loop body once, so with model.scan_layers=True the
    count comes from lowering the same step with unrolled layers; flops_source says which),
  flops_per_step_estimate (dense rule of thumb, attention excluded: per padded token
    2N forward + 2N backward through activations + 2 N_trainable for weight gradients,
    N = all parameters), achieved_flops_per_s (from the cost analysis, or the estimate when
    XLA reports none), peak_memory_bytes with peak_memory_source ("device" memory stats, or
    "process_rss" where the device reports none, e.g. CPU), and the run's shape.
"""

from __future__ import annotations

import json
import resource
import time

import jax
import numpy as np
from absl import app, flags

from ptjax import cli
from ptjax.data import pipeline
from ptjax.training.config import validate
from ptjax.training.engine import Engine
from ptjax.training.flops import cost_flops, unrolled_flops
from ptjax.training.interfaces import Model, TaskData
from ptjax.training.optimizer import build_optimizer
from ptjax.training.reporting import parameter_counts
from ptjax.training.step import step_rng

_WARMUP = flags.DEFINE_integer("warmup", 3, "untimed steps after compilation")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps")


def _peak_memory() -> tuple[int, str]:
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    if peaks:
        return max(peaks), "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_rss"


def benchmark(config, model: Model, data: TaskData, *, warmup: int = 3, steps: int = 10,
              unrolled_model: Model | None = None) -> dict:
    """Time the train step. unrolled_model: the same experiment built with
    model.scan_layers=False, used only to count FLOPs when `model` scans its layers."""
    validate(config, jax.device_count())
    engine = Engine(config, model)
    split = pipeline.prepare_split(config.task.train_split, data.features(config.task.train_split),
                                   data.pad_values, getattr(data, "length_groups", {}) or {},
                                   tuple(config.task.length_buckets))
    batch_size = config.train.batch_size
    order = pipeline.TrainOrder(len(split), batch_size, config.seed)
    if order.steps_per_epoch == 0:
        from ptjax.errors import InputError

        raise InputError(f"split {split.name!r} has {len(split)} examples, fewer than "
                         f"config.train.batch_size={batch_size}")
    total = warmup + steps
    all_rows = [order.rows(s) for s in range(total)]
    lengths = {g: max(split.batch_lengths(rows)[g] for rows in all_rows) for g in split.lengths}
    start, stop = engine.host_rows(batch_size)
    put = engine.to_device(batch_size)
    batches = [put(pipeline.collate(split, rows[start:stop], lengths)) for rows in all_rows]
    real_tokens = [pipeline.count_tokens(split, rows, lengths)[0] for rows in all_rows]
    padded_tokens = batch_size * sum(lengths.values())

    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    trainable, frozen = engine.init_params(init_rng)
    counts = parameter_counts(trainable, frozen)
    optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable,
                                total_steps=total, steps_per_epoch=order.steps_per_epoch)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    opt_state = engine.init_opt_state(optimizer.transform, trainable, opt_shardings)
    train_step = engine.compile_train_step(optimizer.transform, opt_shardings)

    compile_start = time.perf_counter()
    with engine.activate():
        lowered = train_step.jitted.lower(trainable, frozen, opt_state, batches[0], step_rng(dropout_rng, 0))
        lowered.compile()
    compile_s = time.perf_counter() - compile_start
    if config.model.scan_layers and unrolled_model is not None:
        unrolled = config.copy_and_resolve_references()
        unrolled.model.scan_layers = False
        flops = unrolled_flops(unrolled, unrolled_model, batches[0], step_rng(dropout_rng, 0))
        flops_source = "cost_analysis_unrolled"
    else:
        flops = cost_flops(lowered)
        flops_source = "cost_analysis" if not config.model.scan_layers else "cost_analysis_scan_body_once"

    metrics = None
    for step in range(warmup):
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batches[step],
                                                   step_rng(dropout_rng, step))
    jax.block_until_ready((trainable, metrics))
    begin = time.perf_counter()
    for step in range(warmup, total):
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batches[step],
                                                   step_rng(dropout_rng, step))
    jax.block_until_ready((trainable, opt_state, metrics))
    elapsed = time.perf_counter() - begin

    estimate = padded_tokens * (4 * counts["total"] + 2 * counts["trainable"])
    peak, peak_source = _peak_memory()
    per_step = elapsed / steps
    return {
        "backbone": config.model.name,
        "method": config.method.name,
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "mesh": {k: int(v) for k, v in engine.mesh.shape.items()},
        "batch_size": batch_size,
        "lengths": lengths,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "compile_s": round(compile_s, 3),
        "step_s": per_step,
        "examples_per_s": batch_size / per_step,
        "tokens_per_s": float(np.sum(real_tokens[warmup:])) / elapsed,
        "padded_tokens_per_s": padded_tokens / per_step,
        "flops_per_step": flops,
        "flops_source": flops_source if flops is not None else None,
        "flops_per_step_estimate": float(estimate),
        "achieved_flops_per_s": (flops if flops is not None else estimate) / per_step,
        "achieved_flops_source": flops_source if flops is not None else "estimate",
        "peak_memory_bytes": peak,
        "peak_memory_source": peak_source,
        "params": counts,
        "final_loss": float(metrics["loss"]),
    }


def main(argv) -> None:
    from ptjax.errors import InputError

    cli.quiet_logs()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    config = cli.load_config()
    try:
        from ptjax.training.cpu_devices import start_cpu_devices

        start_cpu_devices([config])  # the CPU devices main.py would start (config.mesh.cpu_devices)
        validate(config, jax.device_count())
        from ptjax.experiment import build

        experiment = build(config)
        unrolled_model = None
        if config.model.scan_layers:  # count FLOPs on an unrolled twin (traced, never run)
            unrolled = config.copy_and_resolve_references()
            unrolled.model.scan_layers = False
            unrolled_model = build(unrolled).model
        result = benchmark(config, experiment.model, experiment.data, warmup=_WARMUP.value,
                           steps=_STEPS.value, unrolled_model=unrolled_model)
    except InputError as err:
        cli.fail(str(err))
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    app.run(main, flags_parser=cli.parse_flags)
