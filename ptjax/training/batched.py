"""A batched sweep job: the runs of one group of ptjax.training.variants.plan_groups (runs that
differ only in seed, peak learning rate, prompt initialisation and number of training examples)
trained as one job on one frozen backbone (config.sweep.batched, ptjax/sweep.py).

    reason = run_job(members, root, backbone, devices=None)   # None: trained; else why not

How. The job keeps the model each run would build alone (one prompt, its head) and applies it to
N variants at once with jax.vmap over a leading variant axis: every trainable leaf (prompt table,
prompt encoder, deep prefixes, a trained [CLS] head) is a bank with a leading "prompt_bank" axis,
each entry initialised exactly as its own run initialises it (its seed's key), and a step's batch
is N blocks of rows, block k holding variant k's own batch (pipeline.variant_train_batch: its
seed's data order, its number of examples; every row carries prompt_id = k). Gradients of entry k
come from block k only, by construction. The optimizer runs per entry (BankTraining with the
variants' learning rates, each entry clipped by its own norm, an entry without rows left as it
was), so entry k computes what its run computes; only the order of some float sums may differ
(the block is padded to the job's longest length bucket; XLA may tile the larger matmuls otherwise).
The model side is variants.VariantModel, the optimizer variants.entry_optimizer. Why a vmap
rather than the gather by prompt_id of experiment.build(num_prompts=N): every trainable group
becomes per variant with no change to the models (P-tuning v2's trained [CLS] head would
otherwise be shared by the variants), and each block can take its own dropout key.

Dropout: variant k's block draws its masks from the key its own run would use at that step,
fold_in(split(PRNGKey(seed_k))[1], step), passed per block through the vmap. So a variant's masks
depend on its own seed only (changing another variant's seed changes nothing in it) and are the
separate run's masks whenever the block has its run's shape; when the job pads the block to a
longer bucket they are other draws of the same law. tests/test_sweep_batched.py checks equality
to separate runs with dropout on (one length bucket, Lester: bit-equal) and with padded blocks
(dropout off, P-tuning v2: within float-summation noise).

Evaluation: each eval batch is repeated once per variant (block k with prompt_id k), so a variant's
predictions and metrics are its own; its eval steps, best step (BankSelection), early stopping,
predictions, export, metrics.jsonl and results.json are its own, in its own run directory. The
job's checkpoints (the stacked trainable tree, the optimizer state and every variant's progress)
and its best-entry copies live in DIR/batched_jobs/<job>/, which a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from ptjax.data import pipeline
from ptjax.errors import InputError, Interrupted
from ptjax.eval.predictions import write_predictions
from ptjax.training import checkpoints as ckpt
from ptjax.training import run_config
from ptjax.training.config import validate
from ptjax.training.engine import Engine
from ptjax.training.export_config import recordable
from ptjax.training.optimizer import GROUPS, group_learning_rate, make_schedule
from ptjax.training.reporting import Reporter, parameter_counts, write_json_atomic
from ptjax.training.run_state import Progress, StopRequests, base_results, cut_metrics, prepare_split
from ptjax.training.variants import VariantModel, entry_optimizer, stack_entries

JOBS = "batched_jobs"  # DIR/batched_jobs/<job>/: checkpoints and best-entry copies of each job


@dataclasses.dataclass
class Member:
    """One run of the job: the sweep's Run (its path) and its config (mode train)."""

    run: Any
    config: ml_collections.ConfigDict

    @property
    def path(self) -> Path:
        return Path(self.run.path)


def job_folder(root: Path, members: Sequence[Member]) -> Path:
    """DIR/batched_jobs/job_<hash of the member run folders>: the same group resumes its job."""
    names = ",".join(str(m.path.relative_to(root)) for m in members)
    return Path(root) / JOBS / ("job_" + hashlib.sha1(names.encode()).hexdigest()[:10])


def peak_rate(config: ml_collections.ConfigDict, groups: Sequence[str]) -> tuple[float | None, str | None]:
    """(the run's one peak rate, None) or (None, why it has several: a bank holds one per entry)."""
    rates = {g: group_learning_rate(config, g) for g in groups if g in GROUPS}
    if len(set(rates.values())) > 1:
        return None, f"seed {config.seed}: groups with different learning rates {rates} (one rate per bank entry)"
    return next(iter(rates.values()), config.optimizer.learning_rate), None


def schedule_reason(configs, totals: list[int], per_epoch: list[int]) -> str | None:
    """Why the variants' schedules cannot share one shape (the optimizer takes one total and one
    epoch length; each entry scales it by its own peak rate), or None."""
    sched = configs[0].schedule
    if len(set(totals)) > 1 and (sched.name != "constant" or sched.warmup_ratio):
        return f"schedule {sched.name!r} over different step counts {totals}"
    if len(set(per_epoch)) > 1 and sched.name == "exponential" and not sched.decay_every_steps:
        return f"exponential decay per epoch with different epoch lengths {per_epoch}"
    return None


def run_job(members: Sequence[Member], root: str | Path, backbone, *, devices: list | None = None,
            hooks: Sequence[Callable[[int], None]] = (), say: Callable[[str], None] = print) -> str | None:
    """Train the members as one job; None when done, else the reason they cannot (nothing ran)."""
    from ptjax.experiment import build

    root = Path(root)
    devices = list(jax.devices() if devices is None else devices)
    if jax.process_count() > 1:
        return "a batched job runs in one process"
    configs = [m.config for m in members]
    for config in configs:
        validate(config, len(devices))
    experiments = [build(config, backbone=backbone) for config in configs]
    # The train split of the variant reading the most examples holds every other's first n.
    limits = [int(c.task.max_train_examples or 0) for c in configs]
    widest = limits.index(0) if 0 in limits else int(np.argmax(limits))
    data, base = experiments[widest].data, configs[widest]
    folder = job_folder(root, members)
    cache = folder / "cache"
    train_split = prepare_split(base, data, base.task.train_split, cache)
    if len(set(limits)) > 1 and len(data.examples(base.task.train_split)) != len(train_split):
        return "the task makes several features per example, so a prefix of examples is not a prefix of features"
    sizes = [min(n, len(train_split)) if n else len(train_split) for n in limits]
    batch_size = base.train.batch_size
    orders = [pipeline.TrainOrder(n, batch_size, c.seed) for n, c in zip(sizes, configs)]
    for order, config in zip(orders, configs):
        if order.steps_per_epoch == 0:
            raise InputError(f"seed {config.seed}: {order.num_examples} training examples, fewer than "
                             f"config.train.batch_size={batch_size}")
    totals = [c.train.num_steps or c.train.num_epochs * o.steps_per_epoch for c, o in zip(configs, orders)]
    reason = schedule_reason(configs, totals, [o.steps_per_epoch for o in orders])
    single = experiments[0].model
    if getattr(single, "bank", None) is not None:
        return "each run already trains a prompt bank entry by entry (LAMA relations); a job of banks is not built"
    groups = sorted({path[0] for path in traverse_util.flatten_dict(single.abstract_params()[0])
                     if single.is_trainable(path)})
    rates = [peak_rate(c, groups) for c in configs]
    reason = reason or next((why for _, why in rates if why), None)
    if reason:
        return reason
    eval_splits = {name: prepare_split(base, data, name, cache) for name in base.task.eval_splits}

    num = len(members)
    model = VariantModel(single, num, tuple(rate for rate, _ in rates))
    engine = Engine(base, model, devices=devices)
    starts = []
    for config, experiment in zip(configs, experiments):
        init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as loop.train splits it
        starts.append(Engine(config, experiment.model, devices=devices).init_params(init_rng))
    frozen = starts[0][1]
    counts = parameter_counts(starts[0][0], frozen)
    trainable = jax.device_put(stack_entries([t for t, _ in starts], model.bank.is_bank_leaf),
                               engine.trainable_shardings)
    dropout_keys = np.stack([np.asarray(jax.random.split(jax.random.PRNGKey(c.seed))[1]) for c in configs])
    optimizer = entry_optimizer(base, engine.trainable_shapes, model, total_steps=max(totals),
                                steps_per_epoch=orders[0].steps_per_epoch)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    opt_state = engine.init_opt_state(optimizer.transform, trainable, opt_shardings)
    checkpoints = ckpt.Checkpoints(folder, keep=base.checkpoint.keep, keep_best=0, best_mode=base.train.best_mode,
                                   async_save=base.checkpoint.async_save)
    job = {"step": 0, "stops": list(totals), "total": max(totals), "progress": [Progress() for _ in members],
           "status": [None] * num, "pending": [], "seconds": 0.0}
    restored = checkpoints.restore_latest(engine.trainable_target(),
                                          engine.opt_state_target(optimizer.transform, opt_shardings), warn=say)
    if restored is not None:
        trainable, opt_state, meta = restored
        job.update(meta, progress=[Progress(**p) for p in meta["progress"]])
        say(f"batched job {folder.name}: resuming from step {job['step']}")
    else:  # evaluations of a start killed before its first checkpoint are done again
        shutil.rmtree(folder / "bank_selection", ignore_errors=True)
    selection = model.bank.selection([str(m.path.relative_to(root)) for m in members],
                                     mode=base.train.best_mode, patience=base.train.early_stopping_patience,
                                     folder=folder / "bank_selection")
    write_json_atomic(folder / "job.json", {"runs": [str(m.path) for m in members], "steps": totals,
                                            "seeds": [c.seed for c in configs],
                                            "learning_rates": list(model.bank.learning_rates)})
    reporters = []
    for member in members:
        if restored is None:
            run_config.record(member.path, member.config)
        cut_metrics(member.path / "metrics.jsonl", job["step"])
        reporters.append(Reporter(member.path, enabled=True, tensorboard=member.config.logging.tensorboard,
                                  progress=False))
    state = _Job(members, configs, experiments, data, engine, optimizer, checkpoints, selection, train_split,
                 eval_splits, orders, reporters, job, dropout_keys, frozen, say, folder, root)
    try:
        trainable = state.train(trainable, opt_state, hooks)
        state.finish(trainable, counts)
    finally:
        checkpoints.wait()
        checkpoints.close()
        for reporter in reporters:
            reporter.close()
    return None


@dataclasses.dataclass
class _Job:
    """The state of a running job and its steps (run_job builds it)."""

    members: list
    configs: list
    experiments: list
    data: Any
    engine: Engine
    optimizer: Any
    checkpoints: ckpt.Checkpoints
    selection: Any
    train_split: pipeline.SplitData
    eval_splits: dict
    orders: list
    reporters: list
    job: dict  # step, stops, total, progress, status, pending (per variant), seconds: what a checkpoint holds
    dropout_keys: np.ndarray  # uint32 [num, 2]: each variant's dropout key, as its run derives it
    frozen: dict
    say: Callable[[str], None]
    folder: Path
    root: Path

    def __post_init__(self):
        self.num = len(self.members)
        self.step_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
        self.windows = [time.perf_counter()] * self.num
        if not self.job["pending"]:
            self.job["pending"] = [[] for _ in self.members]

    def _meta(self) -> dict:
        return {**self.job, "progress": [dataclasses.asdict(p) for p in self.job["progress"]]}

    def _save(self, trainable, opt_state) -> None:
        if self.checkpoints.latest_step() != self.job["step"]:
            self.checkpoints.save(self.job["step"], trainable, opt_state, self._meta())

    def train(self, trainable, opt_state, hooks) -> dict:
        job, engine, base = self.job, self.engine, self.configs[0]
        train_step = engine.compile_train_step(self.optimizer.transform,
                                               engine.opt_state_shardings(self.optimizer.transform))
        self.eval_step = engine.compile_eval_step()
        put = engine.to_device(self.num * base.train.batch_size)
        started = time.perf_counter()
        with StopRequests() as stop:
            while any(job["step"] < s for s in job["stops"]):
                step = job["step"]
                active = [k for k in range(self.num) if step < job["stops"][k]]
                arrays = pipeline.variant_train_batch(self.train_split, self.orders, job["stops"], step)
                keys = self.step_keys(self.dropout_keys, step)
                trainable, opt_state, metrics = train_step(trainable, self.frozen, opt_state, put(arrays), keys)
                metrics = jax.device_get(metrics)
                if metrics["nonfinite"] > 0:  # the step kept every entry as it was: redo it without the culprits
                    bad = [k for k in active if not np.isfinite(metrics["variant_loss"][k])] or active
                    for k in bad:
                        self._diverged(k, step)
                    continue
                job["step"] = done = step + 1
                rows_of = arrays[pipeline.INDEX].reshape(self.num, -1)  # block k: variant k's rows
                for k in active:
                    job["progress"][k].step = done
                    tokens, _ = pipeline.count_tokens(self.train_split, rows_of[k], {})
                    job["pending"][k].append([done, {"tokens": tokens} | {
                        name: float(np.float32(v[k])) for name, v in metrics.items() if np.ndim(v) == 1}])
                    if done % self.configs[k].train.log_every == 0 or done == job["stops"][k]:
                        self._flush(k)
                due = [k for k in active if self.eval_splits and (
                    done % (self.configs[k].train.eval_every or self.orders[k].steps_per_epoch) == 0
                    or done == job["stops"][k])]
                if due:
                    self._evaluate(trainable, due)
                job["seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                every = base.checkpoint.every_steps
                if (every and done % every == 0) or done >= max(job["stops"]):
                    self._save(trainable, opt_state)
                for hook in hooks:
                    hook(done)
                if stop.requested:
                    self._save(trainable, opt_state)
                    self.checkpoints.wait()
                    raise Interrupted(f"batched job interrupted at step {done}; rerun the sweep to resume")
        self._save(trainable, opt_state)
        return trainable

    def _diverged(self, k: int, step: int) -> None:
        self.job["stops"][k] = step
        self.job["status"][k] = "diverged"
        self.reporters[k].print(f"{self.members[k].path}: loss became NaN/inf at step {step}; this variant stops "
                                "(the others go on)")

    def _flush(self, k: int) -> None:
        pending = self.job["pending"][k]
        if not pending:
            return
        steps, values = [s for s, _ in pending], [v for _, v in pending]
        tokens = sum(v.pop("tokens", 0) for v in values)  # the variant's own real tokens, as its run counts them
        # (A job checkpointed by an older ptjax resumes with steps that lack the newer metrics.)
        names = [name for name in values[0] if all(name in v for v in values)]
        record = {name: float(np.mean(np.array([v[name] for v in values], np.float64))) for name in names}
        record["loss"] = record.pop("variant_loss")
        if "variant_grad_norm" in record:
            record["grad_norm"] = record.pop("variant_grad_norm")
        config = self.configs[k]
        schedule = make_schedule(config, self.engine.model.bank.learning_rates[k], self.job["total"],
                                 self.orders[0].steps_per_epoch)
        record["learning_rate"] = {g: float(schedule(steps[-1] - 1)) for g in self.optimizer.schedules}
        elapsed = max(time.perf_counter() - self.windows[k], 1e-9)
        record["examples_per_s"] = len(steps) * config.train.batch_size / elapsed
        record["tokens_per_s"] = tokens / elapsed
        record["epoch"] = steps[-1] / self.orders[k].steps_per_epoch
        self.reporters[k].log("train", steps[-1], record)
        pending.clear()
        self.windows[k] = time.perf_counter()

    def predict(self, trainable) -> dict[str, list[list[dict]]]:
        """split -> per variant, its predictions of every example (each eval batch repeated per
        variant). Batches are collated, tiled and put on the devices ahead, as Engine.predict_split
        does for one run."""
        size = self.configs[0].train.eval_batch_size
        put = self.engine.to_device(self.num * size)

        def tiled(arrays: dict) -> dict:
            rows = len(next(iter(arrays.values())))
            out = {key: np.concatenate([value] * self.num) for key, value in arrays.items()}
            out["prompt_id"] = np.repeat(np.arange(self.num, dtype=np.int32), rows)
            return put(out)

        out = {}
        for name, split in self.eval_splits.items():
            predictions = [[None] * len(split) for _ in range(self.num)]
            batches = pipeline.eval_batches(split, size, host_range=(0, size), to_device=tiled)
            with pipeline.Prefetch(batches) as prefetched:
                for batch in prefetched:
                    outputs = self.engine.gather(self.eval_step(trainable, self.frozen, batch.arrays))
                    rows = len(batch.rows)
                    for k in range(self.num):
                        for r, (index, ok) in enumerate(zip(batch.rows, batch.valid)):
                            if ok:
                                predictions[k][index] = {f: v[k * rows + r] for f, v in outputs.items()}
            out[name] = predictions
        return out

    def _evaluate(self, trainable, due: list[int]) -> None:
        outputs = self.predict(trainable)
        done, first = self.job["step"], next(iter(self.eval_splits))
        observed = {}
        for k in due:
            config, progress, reporter = self.configs[k], self.job["progress"][k], self.reporters[k]
            self._flush(k)
            metrics = {split: {m: float(v) for m, v in self.data.evaluate(split, outputs[split][k]).items()}
                       for split in self.eval_splits}
            progress.last_metrics = metrics
            reporter.log("eval", done, metrics)
            shown = "; ".join(f"{split} " + ", ".join(f"{m}={v:.4f}" for m, v in values.items())
                              for split, values in metrics.items())
            reporter.print(f"{self.members[k].path.relative_to(self.root)} step {done}: {shown}")
            best_metric = config.train.best_metric or self.data.primary_metric
            if best_metric not in metrics[first]:
                raise InputError(f"config.train.best_metric={best_metric!r} is not among the metrics of split "
                                 f"{first!r}: {sorted(metrics[first])}")
            value = metrics[first][best_metric]
            observed[self.selection.names[k]] = value
            if progress.improved(value, config.train.best_mode):
                progress.best_value, progress.best_step, progress.best_metrics = value, done, metrics
                progress.evals_since_best = 0
                write_predictions(config, self.members[k].path, self.data, {s: outputs[s][k] for s in outputs})
            else:
                progress.evals_since_best += 1
        self.selection.observe(done, observed, trainable)
        for k in due:
            if self.selection.state["stopped"][k] and not self.job["progress"][k].stopped_early:
                self.job["progress"][k].stopped_early = True
                self.job["stops"][k] = done
                self.reporters[k].print(f"early stopping at step {done}: no improvement in "
                                        f"{self.configs[k].train.early_stopping_patience} evaluations")

    def finish(self, trainable, counts: dict) -> None:
        """Each variant's export, results.json (as its own run writes them)."""
        selected = self.selection.select(trainable) if self.eval_splits else trainable
        for k, (member, config) in enumerate(zip(self.members, self.configs)):
            progress, status = self.job["progress"][k], self.job["status"][k]
            use_best = config.checkpoint.keep_best > 0 and progress.best_step is not None
            final = jax.tree.map(lambda x, k=k: jnp.asarray(x[k]), selected if use_best else trainable)
            model = self.experiments[k].model
            export = None
            if status != "diverged" and config.checkpoint.export:
                export = str(member.path / "export")
                ckpt.write_export(export, final, metadata=model.export_metadata(), fingerprint=model.fingerprint,
                                  backbone=config.model.name, config=recordable(config))
            results = base_results(config, model, counts)
            results.update(
                total_steps=config.train.num_steps or config.train.num_epochs * self.orders[k].steps_per_epoch,
                steps_per_epoch=self.orders[k].steps_per_epoch, num_train_examples=self.orders[k].num_examples,
                status=status or ("early_stopped" if progress.stopped_early else "completed"), steps=progress.step,
                best={"metric": config.train.best_metric or self.data.primary_metric, "value": progress.best_value,
                      "step": progress.best_step} if progress.best_step is not None else None,
                metrics=progress.best_metrics or progress.last_metrics or {},
                last_metrics=progress.last_metrics or {}, export=export,
                batched={"job": str(self.folder), "seconds": round(self.job["seconds"], 1),
                         "trained_with": [str(m.path) for m in self.members if m is not member]},
            )
            if status == "diverged":
                results["error"] = f"loss became NaN/inf at step {progress.step}"
            write_json_atomic(member.path / "results.json", results)
