"""Comparison runs: named variants x grid points x seeds of one config, each in its own run
directory, and their results as tables (mode "sweep").

    python main.py --config configs/quickstart.py --workdir DIR
    python main.py --config configs/superglue_paper.py:rte,lester --workdir DIR --config.mode=sweep \
        --config.sweep.grid="('optimizer.learning_rate=(1e-3, 3e-3)', 'prompt.length=(20, 100)')" \
        --config.sweep.seeds="(0, 1, 2)"

config.sweep (configs/base.py):
  variants  ("name: key=value; key=value", ...): config overrides per variant, e.g.
            "manual: mode=eval; method.name=manual". Runs default to mode "train". No variants: one
            variant "base" with no overrides.
  grid      ("key=(v1, v2)", ...): every combination runs for every variant.
  seeds     (0, 1, ...): config.seed of each run; empty: config.seed alone.
Values are Python literals (numbers, tuples, True/False) or plain text, converted to the type
of the key they set. A run applies its variant's overrides, then its grid point's, then its seed.

Run directories: DIR/<variant>/[<key>=<value>,.../]seed_<seed>/ with the run's own metrics.jsonl,
results.json, checkpoints and export. A rerun with the same DIR skips finished runs (results.json
completed, early stopped or diverged), resumes unfinished ones from their checkpoints, and refuses a
run directory made by a config that would change its results, naming the keys (the sweep's own
section, logging, devices and other keys of run_config.NOT_RESULTS aside: adding variants or seeds,
or rerunning on another machine, keeps the finished runs; so does a key a newer ptjax added, at its
default). Then it writes (ptjax/eval/summary.py)
  DIR/results.md    the summary table (one row per variant and grid point: metrics of each eval
                    split as mean ± std over seeds) and, for metrics reported per group
                    ("p_at_1/P19": LAMA's per-relation P@1), one table per such metric with rows =
                    groups + the overall value and columns = variants; printed at the end too
  DIR/results.csv   the summary, raw values (mean and std columns)
  DIR/results_<metric>.csv   each per-group table, raw values
  DIR/results.png   the summary as a plot (ptjax/sweep_plot.py: lines over a numeric grid key,
                    else bars)
The tables are task-agnostic: they hold whatever metrics the runs' results.json report.

sweep.batched=True: the runs that differ only in seed, learning rate, prompt init and number of
training examples (ptjax.training.variants.plan_groups) train as one job per group on one backbone
(ptjax/training/batched.py; checkpoints in DIR/batched_jobs/<job>/), in the same run directories
with the same files; the plan is printed and written to DIR/batched_plan.txt, and the other runs
run one by one as above.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from ptjax import sweep_plot
from ptjax.errors import InputError
from ptjax.eval.summary import FINISHED, collect, read_json_or_none, slug, write_tables
from ptjax.training import run_config as recorded_config

RUN_RECORD = "sweep_run.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


@dataclasses.dataclass(frozen=True)
class Run:
    variant: str
    point: tuple[tuple[str, Any], ...]  # grid assignments
    seed: int
    overrides: tuple[tuple[str, Any], ...]  # variant, then grid, then seed
    path: Path


# --------------------------------------------------------------------------------------------
# Parsing the sweep section.


def parse_value(text: str) -> Any:
    """A Python literal when the text is one (1e-3, (0, 1), True), else the text itself."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_variant(entry: str, where: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """ "name: key=value; key=value" -> (name, ((key, value), ...))."""
    name, _, body = entry.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise InputError(f"{where}: variant name {name!r} must be letters, digits, _ . + - (a folder name)")
    assignments = []
    for part in filter(str.strip, body.split(";")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{where}: {part.strip()!r} is not key=value")
        assignments.append((key.strip(), parse_value(value)))
    return name, tuple(assignments)


def parse_grid(entry: str, where: str) -> tuple[str, tuple[Any, ...]]:
    """ "key=(v1, v2)" -> (key, (v1, v2))."""
    key, sep, values = entry.partition("=")
    parsed = parse_value(values) if sep else None
    if not key.strip() or not isinstance(parsed, (tuple, list)) or not parsed:
        raise InputError(f"{where}: {entry!r} should be key=(value, value, ...)")
    return key.strip(), tuple(parsed)


def set_key(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
    """config.<key> = value, converted to the type the key holds (int -> float, list -> tuple,
    text -> str). task.options takes new keys; every other key must exist."""
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise InputError(f"{where}: config has no section {'.'.join(parents[: i + 1])!r} (in {key!r})")
        node = node[part]
    free = ".".join(parents) == "task.options"
    if leaf not in node and not free:
        raise InputError(f"{where}: config has no key {key!r}")
    current = node.get(leaf)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(current, str) and not isinstance(value, str):
        value = str(value)
    elif isinstance(current, bool) and not isinstance(value, bool):
        raise InputError(f"{where}: {key} takes True or False, got {value!r}")
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(current, tuple) and isinstance(value, (str, int, float)):
        value = (value,)
    try:
        node[leaf] = value
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise InputError(f"{where}: cannot set {key}={value!r}: {err}") from None


def plan_runs(config: ml_collections.ConfigDict, workdir: Path) -> list[Run]:
    """Every run of the sweep, in order: variants, then grid points, then seeds."""
    sweep = config.sweep
    variants = [parse_variant(v, f"config.sweep.variants[{i}]") for i, v in enumerate(sweep.variants)]
    variants = variants or [("base", ())]
    names = [name for name, _ in variants]
    if len(set(names)) != len(names):
        raise InputError(f"config.sweep.variants: names must differ, got {names}")
    grid = [parse_grid(g, f"config.sweep.grid[{i}]") for i, g in enumerate(sweep.grid)]
    seeds = tuple(int(s) for s in sweep.seeds) or (int(config.seed),)
    if len(set(seeds)) != len(seeds):
        raise InputError(f"config.sweep.seeds={seeds}: repeated seed")
    runs = []
    for name, assignments in variants:
        for values in itertools.product(*(vals for _, vals in grid)):
            point = tuple((key, value) for (key, _), value in zip(grid, values))
            folder = workdir / name
            if point:
                folder = folder / ",".join(f"{key}={slug(value)}" for key, value in point)
            for seed in seeds:
                runs.append(Run(name, point, seed, assignments + point + (("seed", seed),),
                                folder / f"seed_{seed}"))
    return runs


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
    """The base config with mode "train" and the run's overrides applied."""
    derived = copy.deepcopy(config)
    derived.mode = "train"
    derived.task.options.unlock()
    for key, value in run.overrides:
        set_key(derived, key, value, f"sweep run {run.path.name} of variant {run.variant!r}")
    if derived.mode == "sweep":
        raise InputError(f"variant {run.variant!r}: a sweep run cannot itself be a sweep (mode=sweep)")
    return derived


# --------------------------------------------------------------------------------------------
# Running.


def _comparable(config: ml_collections.ConfigDict) -> dict:
    """The run's config as JSON, without the sections that do not change its results (the sweep
    itself: adding a variant or a seed keeps the finished runs; logging)."""
    return {k: v for k, v in recorded_config.as_json(config).items() if k not in ("sweep", "logging")}


def _check_record(run: Run, config: ml_collections.ConfigDict) -> None:
    """Refuse a run folder made with settings that change the run's results (named); a key added
    to ptjax since, at its default, and the keys of NOT_RESULTS (devices, logging) may differ."""
    record = read_json_or_none(run.path / RUN_RECORD)
    if record is None:
        return
    changed = recorded_config.changes(record.get("config") or {}, config,
                                      ignored=recorded_config.NOT_RESULTS)
    if changed:
        raise InputError(
            f"{run.path}: made by a different config than this sweep's run of variant {run.variant!r} "
            f"({recorded_config.describe(changed)}); use another --workdir, set these back, or delete that folder"
        )


def is_finished(path: Path) -> bool:
    results = read_json_or_none(path / "results.json")
    return bool(results) and results.get("status") in FINISHED


class BackboneCache:
    """Opens each backbone once for the runs that leave it frozen (a run that trains the backbone
    donates its weights' buffers, so the next run opens a fresh copy)."""

    def __init__(self):
        self._key, self._backbone = None, None

    def get(self, config):
        from ptjax.experiment import open_configured_backbone

        key = json.dumps(config.model.to_dict(), sort_keys=True, default=str)
        if key != self._key:
            self._key, self._backbone = key, open_configured_backbone(config)
        return self._backbone

    def release_if_trained(self, config) -> None:
        if config.mode == "train" and (config.method.name == "fine_tune" or config.method.train_backbone):
            self._key, self._backbone = None, None


def execute(config: ml_collections.ConfigDict, workdir: Path, run: Run, backbones: BackboneCache,
            build: Callable | None = None, devices: list | None = None) -> None:
    """Train or evaluate one run in its directory (train resumes from its checkpoints)."""
    import jax

    from ptjax.training import loop
    from ptjax.training.config import validate

    validate(config, len(devices) if devices is not None else jax.device_count())
    _write_record(run, config, 0.0)  # before anything runs: a later rerun can check its config
    if build is None:
        from ptjax.experiment import build as build_experiment

        def build(cfg):
            return build_experiment(cfg, backbone=backbones.get(cfg))
    experiment = build(config)
    started = time.perf_counter()
    try:
        if config.mode == "train":
            loop.train(config, run.path, experiment.model, experiment.data, devices=devices)
        elif config.mode == "eval":
            loop.evaluate(config, run.path, experiment.model, experiment.data, devices=devices)
        else:
            raise InputError(f"variant {run.variant!r}: a sweep runs modes 'train' and 'eval', not {config.mode!r}")
    except loop.Diverged as err:  # recorded in its results.json; the other runs go on
        print(f"sweep: {run.path.relative_to(workdir)} diverged: {err}", flush=True)
    finally:
        backbones.release_if_trained(config)
    _write_record(run, config, time.perf_counter() - started)


def _write_record(run: Run, config: ml_collections.ConfigDict, seconds: float) -> None:
    """DIR/<run>/sweep_run.json: the run's config and the seconds spent on it (all invocations)."""
    from ptjax.training.reporting import write_json_atomic

    run.path.mkdir(parents=True, exist_ok=True)
    previous = read_json_or_none(run.path / RUN_RECORD) or {}
    record = {"variant": run.variant, "point": {k: repr(v) for k, v in run.point}, "seed": run.seed,
              "seconds": round(previous.get("seconds", 0.0) + seconds, 1),
              "config": _comparable(config)}
    write_json_atomic(run.path / RUN_RECORD, record)  # a kill or a full disk leaves the old record whole


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path, build: Callable | None = None,
              devices: list | None = None) -> dict:
    """Run (or finish) every run of config.sweep, write the tables; returns {"runs", "markdown"}.

    build: config -> Experiment (default ptjax.experiment.build, sharing opened backbones).
    devices: the devices each run uses (default all)."""
    workdir = Path(workdir)
    runs = plan_runs(config, workdir)
    configs = [run_config(config, run) for run in runs]
    for run, derived in zip(runs, configs):  # refuse a foreign directory before anything runs
        _check_record(run, derived)
    backbones = BackboneCache()
    numbers = {run.path: number for number, run in enumerate(runs, 1)}
    alone = list(zip(runs, configs))
    if config.sweep.get("batched", False):
        alone = run_batched(config, workdir, runs, configs, backbones, build, devices)

    for run, derived in alone:
        label = f"[{numbers[run.path]}/{len(runs)}] {run.path.relative_to(workdir)}"
        if is_finished(run.path):
            print(f"sweep {label}: finished earlier, skipped", flush=True)
            continue
        print(f"sweep {label}: {derived.mode} " + " ".join(f"{k}={v!r}" for k, v in run.overrides), flush=True)
        execute(derived, workdir, run, backbones, build, devices)
    markdown = write_tables(workdir, collect(runs), over_variants=config.sweep.get("over_variants", False))
    print(markdown, flush=True)
    figure = sweep_plot.plot(workdir)
    if figure:
        print(f"plot: {figure}", flush=True)
    return {"runs": [str(r.path) for r in runs], "markdown": markdown}


def run_batched(config, workdir: Path, runs: list[Run], configs: list, backbones: BackboneCache,
                build: Callable | None, devices: list | None) -> list[tuple[Run, Any]]:
    """config.sweep.batched: train each group of ptjax.training.variants.plan_groups as one job
    (ptjax/training/batched.py); the plan is printed and written to DIR/batched_plan.txt. Returns
    the (run, config) pairs left to run one by one: the runs that cannot batch, and a group's runs
    when the job finds it cannot train them together (the reason is printed)."""
    from ptjax.training import batched
    from ptjax.training.variants import describe, plan_groups

    by_path = {run.path: derived for run, derived in zip(runs, configs)}
    groups, alone = plan_groups(runs, configs)
    plan = describe(groups, alone, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "batched_plan.txt").write_text(plan + "\n")
    print("sweep plan (sweep.batched):\n" + plan, flush=True)
    left = [(run, by_path[run.path]) for run, _ in alone]
    for number, group in enumerate(groups, 1):
        todo = [run for run in group if not is_finished(run.path)]
        if len(todo) < len(group):
            print(f"batched job {number}: {len(group) - len(todo)} run(s) finished earlier, skipped", flush=True)
        if len(todo) < 2:
            left.extend((run, by_path[run.path]) for run in todo)
            continue
        members = [batched.Member(run, by_path[run.path]) for run in todo]
        print(f"batched job {number}: {len(todo)} runs in {batched.job_folder(workdir, members)}", flush=True)
        for member in members:
            _write_record(member.run, member.config, 0.0)
        started = time.perf_counter()
        backbone = backbones.get(members[0].config) if build is None else build(members[0].config).backbone
        reason = batched.run_job(members, workdir, backbone, devices=devices)
        seconds = (time.perf_counter() - started) / len(members)
        if reason:
            print(f"batched job {number}: its runs train one by one: {reason}", flush=True)
            left.extend((m.run, m.config) for m in members)
            continue
        for member in members:
            _write_record(member.run, member.config, seconds)
    return left
