"""Training and evaluation runs over a workdir.

    results = train(config, workdir, model, data)      # resumes from DIR/checkpoints/latest
    results = evaluate(config, workdir, model, data)   # mode "eval": restore an export, evaluate

A run writes DIR/metrics.jsonl, DIR/results.json, DIR/tensorboard/, DIR/checkpoints/ and
DIR/export/ (see ptjax.training.checkpoints and ptjax.training.reporting), and DIR/config.json, the
config the workdir was started with (ptjax.training.run_config: a rerun compares against it).

A resumed run is bit-equal to an uninterrupted one: parameters, optimizer state, the dropout key,
the data position and the steps of the current logging window all come from the checkpoint, and
metrics.jsonl is cut back to the restored step first, so no step is logged twice. Ctrl-C or
SIGTERM stops a run after its current step with a checkpoint of that step (errors.Interrupted);
a full disk or a workdir that cannot be written stops it with errors.DiskFull or
errors.WorkdirNotWritable. Checkpoints already written stay readable in every case.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ptjax.data import pipeline
from ptjax.errors import InputError, Interrupted, write_failure
from ptjax.eval.predictions import check_submission, write_predictions
from ptjax.training import checkpoints as ckpt
from ptjax.training import run_config
from ptjax.training.config import validate
from ptjax.training.engine import Engine
from ptjax.training.export_config import recordable
from ptjax.training.interfaces import Model, TaskData
from ptjax.training.optimizer import build_optimizer
from ptjax.training.reporting import Reporter, describe_counts, parameter_counts, write_json_atomic
from ptjax.training.run_state import Progress, StopRequests, base_results, cut_metrics, prepare_split
from ptjax.training.step import step_rng

Hook = Callable[[int], None]


class Diverged(InputError):
    """The loss or the params became NaN/inf; the run stopped, earlier checkpoints are kept."""


def _evaluate_splits(engine: Engine, eval_step, trainable, frozen, data: TaskData,
                     splits: dict[str, pipeline.SplitData], batch_size: int,
                     outputs: dict | None = None) -> dict[str, dict]:
    """Metrics per split; `outputs` (when given) receives each split's predictions, for
    DIR/predictions (ptjax.eval.predictions)."""
    metrics = {}
    for name, split in splits.items():
        predictions = engine.predict_split(eval_step, trainable, frozen, split, batch_size)
        metrics[name] = {k: float(v) for k, v in data.evaluate(name, predictions).items()}
        if outputs is not None:
            outputs[name] = predictions
    return metrics


def train(config: ml_collections.ConfigDict, workdir: str | Path, model: Model, data: TaskData, *,
          devices: list | None = None, hooks: Sequence[Hook] = ()) -> dict:
    """Train (or resume) in `workdir`; returns what results.json holds."""
    workdir = Path(workdir)
    devices = list(jax.devices() if devices is None else devices)
    validate(config, len(devices))
    check_submission(config, getattr(getattr(data, "spec", None), "name", None))
    primary = jax.process_index() == 0
    checkpoints, opened = None, []  # the Reporter opens once metrics.jsonl is cut back to the resume step
    try:
        checkpoints = ckpt.Checkpoints(workdir, keep=config.checkpoint.keep, keep_best=config.checkpoint.keep_best,
                                       best_mode=config.train.best_mode, async_save=config.checkpoint.async_save)
        resuming = checkpoints.latest_step() is not None
        changed = run_config.compare(workdir, config, resuming=resuming)
        if primary and not resuming:
            run_config.record(workdir, config)
        engine = Engine(config, model, devices=devices)
        results = _train(config, workdir, engine, model, data, opened, checkpoints, hooks, primary, changed)
        _close(checkpoints, opened)
        return results
    except BaseException as err:
        _close(checkpoints, opened, quietly=True)  # an in-flight save completes; the first error is the one reported
        stopped = write_failure(err, workdir, _resume_hint(checkpoints)) if isinstance(err, Exception) else None
        if stopped is not None:
            raise stopped from err
        raise


def _close(checkpoints: ckpt.Checkpoints | None, opened: list, *, quietly: bool = False) -> None:
    for close in ([checkpoints.wait, checkpoints.close] if checkpoints is not None else []) + [
            r.close for r in opened]:
        try:
            close()
        except Exception:
            if not quietly:
                raise


def _resume_hint(checkpoints: ckpt.Checkpoints | None) -> str:
    step = checkpoints.latest_step() if checkpoints is not None else None
    return "" if step is None else f" (it resumes from step {step}, the last checkpoint)"


def _say(primary: bool):
    """Print on process 0, before the Reporter is open."""
    return lambda message: print(message, file=sys.stderr, flush=True) if primary else None


def _stop(done: int, trainable, opt_state, meta, checkpoints: ckpt.Checkpoints) -> None:
    """Save step `done` (unless just saved) and raise Interrupted. The checkpoint holds what a
    regular one holds, so the rerun continues exactly where this run stopped."""
    if checkpoints.latest_step() != done:
        checkpoints.save(done, trainable, opt_state, meta())
    checkpoints.wait()
    raise Interrupted(f"interrupted at step {done}, last checkpoint at step {checkpoints.latest_step()}; "
                      f"rerun to resume")


def _train(config, workdir, engine: Engine, model, data, opened: list,
           checkpoints: ckpt.Checkpoints, hooks, primary, changed: dict):
    say = _say(primary)
    cache_dir = workdir / "cache"
    train_split = prepare_split(config, data, config.task.train_split, cache_dir)
    eval_splits = {name: prepare_split(config, data, name, cache_dir) for name in config.task.eval_splits}
    batch_size = config.train.batch_size
    order = pipeline.TrainOrder(len(train_split), batch_size, config.seed)
    if order.steps_per_epoch == 0:
        raise InputError(
            f"split {config.task.train_split!r} has {len(train_split)} examples, fewer than "
            f"config.train.batch_size={batch_size}"
        )
    total_steps = config.train.num_steps or config.train.num_epochs * order.steps_per_epoch

    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    trainable, frozen = engine.init_params(init_rng)
    counts = parameter_counts(trainable, frozen)
    say(describe_counts(counts))
    optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable,
                                total_steps=total_steps, steps_per_epoch=order.steps_per_epoch,
                                bank=getattr(model, "bank", None))
    # A prompt bank trained entry by entry also picks each entry's best step and stops each early
    # on its own metric (LAMA: P@1 per relation), as separate runs would (ptjax/prompts/banks.py).
    bank = getattr(model, "bank", None)
    selection = None if bank is None else bank.selection(
        getattr(data, "bank_metrics", ()), mode=config.train.best_mode,
        patience=config.train.early_stopping_patience, folder=workdir / "bank_selection")
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    opt_state = engine.init_opt_state(optimizer.transform, trainable, opt_shardings)

    progress = Progress()
    pending: list[tuple[int, dict]] = []  # (step, its metrics) not yet logged
    window = {"examples": 0, "tokens": 0, "time": time.perf_counter()}
    restored = checkpoints.restore_latest(
        engine.trainable_target(), engine.opt_state_target(optimizer.transform, opt_shardings), warn=say)
    if restored is not None:
        trainable, opt_state, meta = restored
        if meta["num_train_examples"] != len(train_split):
            raise InputError(
                f"{workdir}/checkpoints: saved by a run whose train split had "
                f"{meta['num_train_examples']} examples; it now has {len(train_split)} (use a new workdir)"
            )
        dropout_rng = jax.numpy.asarray(np.array(meta["rng"], np.uint32))
        progress = Progress(**meta["progress"])
        # The steps of the logging window the checkpoint cut: the next train record averages
        # the same steps as in a run that never stopped.
        pending.extend((step, values) for step, values in meta.get("pending", []))
        window.update(meta.get("window", {}))
    if primary:
        cut_metrics(workdir / "metrics.jsonl", progress.step)
    reporter = Reporter(workdir, enabled=primary, tensorboard=config.logging.tensorboard,
                        progress=config.logging.progress)
    opened.append(reporter)
    if restored is not None:
        reporter.print(f"resuming from step {progress.step} ({workdir / 'checkpoints'})")
        reporter.log("resume", progress.step, {"epoch_batch": list(order.position(progress.step))})
    if changed:
        reporter.print(f"warning: the config differs from {workdir / run_config.CONFIG_FILE}, which this "
                       f"workdir was started with: {run_config.describe(changed)}; resuming with the new values")
        reporter.log("config_change", progress.step, {"changed": {k: list(v) for k, v in changed.items()}})

    train_step = engine.compile_train_step(optimizer.transform, opt_shardings)
    eval_step = engine.compile_eval_step()
    best_metric = config.train.best_metric or data.primary_metric
    results = base_results(config, model, counts)
    results.update(total_steps=total_steps, steps_per_epoch=order.steps_per_epoch,
                   num_train_examples=len(train_split))

    def meta() -> dict:
        epoch, batch_in_epoch = order.position(progress.step)
        settle()
        return {"step": progress.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "num_train_examples": len(train_split), "seed": config.seed,
                "rng": np.asarray(jax.device_get(dropout_rng)).tolist(),
                "progress": dataclasses.asdict(progress),
                "pending": [[step, values] for step, values in pending],
                "window": {"examples": window["examples"], "tokens": window["tokens"]}}

    def settle() -> None:
        """Fetch pending step metrics to the host (as float32 values, the same ones a checkpoint
        holds); stop on a non-finite step."""
        fetched = jax.device_get([m for _, m in pending])
        steps = [s for s, _ in pending]
        pending[:] = [(s, {k: float(np.float32(v)) for k, v in m.items()}) for s, m in zip(steps, fetched)]
        bad = [s for s, m in pending if m["nonfinite"] > 0]
        if bad:
            last_good = checkpoints.latest_step()
            raise Diverged(
                f"loss or parameters became NaN/inf at step {bad[0]}; training stopped "
                f"(last good checkpoint: {'none' if last_good is None else f'step {last_good}'} in "
                f"{workdir / 'checkpoints' / 'latest'}); try a lower config.optimizer.learning_rate"
            )

    def flush() -> None:
        """Log the mean of the pending step metrics (a float64 mean of float32 values: the same
        whether the values come from this run or a checkpoint); stop on a non-finite step."""
        if not pending:
            return
        settle()
        steps, fetched = [s for s, _ in pending], [m for _, m in pending]
        pending.clear()
        elapsed = max(time.perf_counter() - window["time"], 1e-9)
        values = {k: float(np.mean(np.array([m[k] for m in fetched], np.float64))) for k in fetched[0]
                  if k != "nonfinite"}
        values["learning_rate"] = {g: float(s(steps[-1] - 1)) for g, s in optimizer.schedules.items()}
        values["examples_per_s"] = window["examples"] / elapsed
        values["tokens_per_s"] = window["tokens"] / elapsed
        values["epoch"] = (steps[-1]) / order.steps_per_epoch
        reporter.log("train", steps[-1], values)
        reporter.progress(0, loss=values["loss"], ex_s=values["examples_per_s"])
        window.update(examples=0, tokens=0, time=time.perf_counter())

    def run_eval() -> None:
        flush()
        outputs = {}
        metrics = _evaluate_splits(engine, eval_step, trainable, frozen, data, eval_splits,
                                   config.train.eval_batch_size, outputs)
        progress.last_metrics = metrics
        reporter.log("eval", progress.step, metrics)
        reporter.print(f"step {progress.step}: " + "; ".join(
            f"{split} " + ", ".join(f"{k}={v:.4f}" for k, v in m.items()) for split, m in metrics.items()))
        first = metrics[next(iter(eval_splits))]
        if best_metric not in first:
            raise InputError(
                f"config.train.best_metric={best_metric!r} is not among the metrics of split "
                f"{next(iter(eval_splits))!r}: {sorted(first)}"
            )
        if selection is not None:
            selection.observe(progress.step, first, trainable, write=primary)
        value = first[best_metric]
        if progress.improved(value, config.train.best_mode):
            progress.best_value, progress.best_step, progress.best_metrics = value, progress.step, metrics
            progress.evals_since_best = 0
            checkpoints.save_best(progress.step, trainable, value, meta())
            if primary:  # the best checkpoint's predictions: the ones its export gives
                write_predictions(config, workdir, data, outputs)
        else:
            progress.evals_since_best += 1
            patience = 0 if selection is not None else config.train.early_stopping_patience  # per entry
            if patience and progress.evals_since_best >= patience:
                progress.stopped_early = True
                reporter.print(f"early stopping at step {progress.step}: no improvement of "
                               f"{best_metric} in {patience} evaluations")
        if selection is not None and selection.all_stopped and not progress.stopped_early:
            progress.stopped_early = True
            reporter.print(f"early stopping at step {progress.step}: every bank entry went "
                           f"{config.train.early_stopping_patience} evaluations without improving")

    try:
        start = progress.step
        if start < total_steps and not progress.stopped_early:
            reporter.start_progress(total_steps, start)
            batches = pipeline.train_batches(
                train_split, order, start_step=start, stop_step=total_steps,
                host_range=engine.host_rows(batch_size), to_device=engine.to_device(batch_size))
            with pipeline.Prefetch(batches) as prefetched, StopRequests() as stop:
                for batch in prefetched:
                    trainable, opt_state, metrics = train_step(
                        trainable, frozen, opt_state, batch.arrays, step_rng(dropout_rng, batch.step))
                    progress.step = done = batch.step + 1
                    pending.append((done, metrics))
                    window["examples"] += batch_size
                    window["tokens"] += batch.tokens
                    reporter.progress(1)
                    if done % config.train.log_every == 0 or done == total_steps:
                        flush()
                    eval_every = config.train.eval_every or order.steps_per_epoch
                    if eval_splits and (done % eval_every == 0 or done == total_steps):
                        run_eval()
                    every = config.checkpoint.every_steps
                    if (every and done % every == 0) or done == total_steps or progress.stopped_early:
                        checkpoints.save(done, trainable, opt_state, meta())
                    for hook in hooks:
                        hook(done)
                    if stop.requested:
                        _stop(done, trainable, opt_state, meta, checkpoints)
                    if progress.stopped_early:
                        break
            flush()
    except Diverged as err:
        results.update(status="diverged", error=str(err), steps=progress.step,
                       metrics=progress.best_metrics or progress.last_metrics or {})
        if primary:
            write_json_atomic(workdir / "results.json", results)
        raise
    checkpoints.wait()

    final = trainable
    best = (checkpoints.restore_best(engine.trainable_target(), warn=reporter.print)
            if checkpoints.best is not None else None)
    if best is not None:
        final = best[0]
    if selection is not None and eval_splits:  # each entry at its own best step, and its metrics
        final = selection.select(final)
        progress.best_metrics = _evaluate_splits(engine, eval_step, final, frozen, data, eval_splits,
                                                 config.train.eval_batch_size)
        reporter.log("eval_selected", progress.step, progress.best_metrics)
        results["bank_selection"] = selection.describe()
    if config.checkpoint.export:
        ckpt.write_export(workdir / "export", final, metadata=model.export_metadata(),
                          fingerprint=model.fingerprint, backbone=config.model.name,
                          config=recordable(config))
    results.update(
        status="early_stopped" if progress.stopped_early else "completed",
        steps=progress.step,
        best={"metric": best_metric, "value": progress.best_value, "step": progress.best_step}
        if progress.best_step is not None else None,
        metrics=progress.best_metrics or progress.last_metrics or {},
        last_metrics=progress.last_metrics or {},
        export=str(workdir / "export") if config.checkpoint.export else None,
    )
    if primary:
        write_json_atomic(workdir / "results.json", results)
    return results


def evaluate(config: ml_collections.ConfigDict, workdir: str | Path, model: Model, data: TaskData, *,
             devices: list | None = None) -> dict:
    """Mode "eval": load the export named by config.restore (if any) and evaluate every eval split."""
    workdir = Path(workdir)
    devices = list(jax.devices() if devices is None else devices)
    validate(config, len(devices))
    check_submission(config, getattr(getattr(data, "spec", None), "name", None))
    primary = jax.process_index() == 0
    engine = Engine(config, model, devices=devices)
    reporter = Reporter(workdir, enabled=primary, tensorboard=config.logging.tensorboard, progress=False)
    try:
        export_info = None
        if config.restore:
            ckpt.read_export_metadata(config.restore)  # a missing or foreign export fails first
        trainable, frozen = engine.init_params(jax.random.PRNGKey(config.seed))
        counts = parameter_counts(trainable, frozen)
        reporter.print(describe_counts(counts))
        if config.restore:
            trainable, export_info = ckpt.read_export(
                config.restore, engine.trainable_target(), fingerprint=model.fingerprint)
        splits = {name: prepare_split(config, data, name, workdir / "cache") for name in config.task.eval_splits}
        outputs = {}
        metrics = _evaluate_splits(engine, engine.compile_eval_step(), trainable, frozen, data, splits,
                                   config.train.eval_batch_size, outputs)
        if primary:
            write_predictions(config, workdir, data, outputs)
        reporter.log("eval", 0, metrics)
        for split, values in metrics.items():
            reporter.print(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
        results = base_results(config, model, counts)
        results.update(status="completed", metrics=metrics,
                       restore=str(ckpt.resolve_export(config.restore)) if config.restore else None,
                       export_method=export_info["method"] if export_info else None)
        if primary:
            write_json_atomic(workdir / "results.json", results)
        return results
    finally:
        reporter.close()
