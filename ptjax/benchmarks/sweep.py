"""A sweep run one run after another against the same sweep as batched jobs (config.sweep.batched,
ptjax/training/batched.py), in one process on one machine: wall time, training examples/s, where
the time goes, and the results tables side by side.

    python -m ptjax.benchmarks.sweep                       # both cases, their full settings
    python -m ptjax.benchmarks.sweep --case ppt --steps 4 --eval-examples 32 --seeds 10,20
    python -m ptjax.benchmarks.sweep --case minilm_grid --steps 10 --eval-examples 64 --seeds 0,1

Cases:
  ppt          the 5-seed few-shot protocol of configs/ppt_smollm2.py (real SmolLM2-135M, 32 training
               examples, batch 8, 20 steps, dev32 + test), variant vanilla_pt (prompt.init=random:
               the pre-trained prompt under runs/ may be missing), seeds 10..50.
  minilm_grid  configs/superglue_minilm_compare.py's SST-2 P-tuning v2 run (real MiniLM, [CLS] head,
               batch 16) over a learning-rate x seed grid (3e-3, 1e-2) x (0, 1, 2), 20 steps, dev
               capped at 200 examples.

Time split (from hooks around the sweep, and JAX's compile-duration events attributed to the phase
they happen in): load (opening and reading the backbone), compile (tracing, lowering and XLA
compiling every jitted step), eval (predictions and metrics, its compiles apart), train+other (the
rest: train steps, tokenization, checkpoints and exports). Writes --out (JSON) when given.
The backbone is read once, untimed, before either sweep (so neither pays for cold files), and
JAX's persistent compilation cache stays off (main.py turns it on on GPU/TPU): both ways compile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from jax import monitoring

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


def ppt_config(args):
    from ptjax.configs import ppt_smollm2

    config = ppt_smollm2.get_config(args.task)
    config.mode = "sweep"
    config.sweep.variants = ("vanilla_pt: prompt.init=random",)
    config.sweep.seeds = tuple(args.seeds or (10, 20, 30, 40, 50))
    if args.steps:
        config.train.num_steps = config.train.eval_every = args.steps
    if args.eval_examples:
        config.task.max_eval_examples = args.eval_examples
    return config


def minilm_grid_config(args):
    from ptjax.configs import superglue_minilm_compare

    config = superglue_minilm_compare.get_config("sst2")
    config.method.name = "ptuning_v2"
    config.sweep.variants = ()
    config.sweep.grid = ("optimizer.learning_rate=(3e-3, 1e-2)",)
    config.sweep.seeds = tuple(args.seeds or (0, 1, 2))
    config.train.num_steps = config.train.eval_every = args.steps or 20
    config.task.max_eval_examples = args.eval_examples or 200
    return config


CASES = {"ppt": ppt_config, "minilm_grid": minilm_grid_config}


class Profile:
    """Seconds per phase of one sweep: load, eval and the rest, compiles counted apart."""

    def __init__(self):
        self.phase = "train+other"
        self.wall = {"load": 0.0, "eval": 0.0}
        self.compile = {"load": 0.0, "eval": 0.0, "train+other": 0.0}

    def on_event(self, name, seconds, **_):
        if name in COMPILE_EVENTS:
            self.compile[self.phase] += seconds

    @contextlib.contextmanager
    def timing(self, phase):
        outer, self.phase = self.phase, phase
        started = time.perf_counter()
        try:
            yield
        finally:
            if outer == "train+other":  # nested phases count once
                self.wall[phase] += time.perf_counter() - started
            self.phase = outer

    def split(self, total: float) -> dict:
        compile_s = sum(self.compile.values())
        return {"load_s": self.wall["load"] - self.compile["load"], "compile_s": compile_s,
                "eval_s": self.wall["eval"] - self.compile["eval"],
                "train_other_s": total - self.wall["load"] - self.wall["eval"] - self.compile["train+other"]}


_ACTIVE: list = [None]  # the Profile of the sweep running now (None: hooks pass through)


def _wrap(owner, name: str, phase: str) -> None:
    original = getattr(owner, name)
    if getattr(original, "profiled", False):
        return

    def wrapped(*args, **kwargs):
        if _ACTIVE[0] is None:
            return original(*args, **kwargs)
        with _ACTIVE[0].timing(phase):
            return original(*args, **kwargs)

    wrapped.profiled = True
    setattr(owner, name, wrapped)


def _install_hooks() -> None:
    from ptjax import experiment
    from ptjax.models.loading import Backbone
    from ptjax.training import batched
    from ptjax.training.engine import Engine

    _wrap(experiment, "open_configured_backbone", "load")
    _wrap(Backbone, "load_weights", "load")
    _wrap(Engine, "predict_split", "eval")
    _wrap(batched._Job, "predict", "eval")
    monitoring.register_event_duration_secs_listener(
        lambda name, seconds, **kw: _ACTIVE[0] is not None and _ACTIVE[0].on_event(name, seconds))


def one_sweep(config, workdir: Path, batched: bool, devices: list | None = None) -> dict:
    """Run the sweep in `workdir` (which must not hold finished runs); timings and its rows."""
    from ptjax.eval.summary import collect
    from ptjax.sweep import plan_runs, run_sweep

    config = config.copy_and_resolve_references()
    config.sweep.batched = batched
    profile = _ACTIVE[0] = Profile()
    started = time.perf_counter()
    try:
        run_sweep(config, workdir, devices=devices)
    finally:
        _ACTIVE[0] = None
    wall = time.perf_counter() - started
    runs = plan_runs(config, workdir)
    results = [json.loads((run.path / "results.json").read_text()) for run in runs]
    examples = sum(r["steps"] * r["config"]["train"]["batch_size"] for r in results)
    return {"wall_s": wall, "runs": len(runs), "train_examples": examples, "examples_per_s": examples / wall,
            **profile.split(wall), "rows": collect(runs)}


def side_by_side(rows_one, rows_batched) -> str:
    """Markdown: per row (variant and grid point) and metric, one-by-one vs batched (mean ± std)."""
    from ptjax.eval.summary import cell, is_percent, md_row

    names = list(dict.fromkeys(n for row in rows_one for n in row.metrics if n.count("/") <= 1))
    lines = [md_row(["run", *(f"{n} ({w})" for n in names for w in ("one by one", "batched"))]),
             md_row(["---"] * (1 + 2 * len(names)))]
    for one, together in zip(rows_one, rows_batched):
        cells = []
        for name in names:
            percent = is_percent(one.metrics.get(name, []) + together.metrics.get(name, []))
            cells += [cell(one.metrics.get(name), percent), cell(together.metrics.get(name), percent)]
        lines.append(md_row([one.label, *cells]))
    return "".join(lines)


def run_both(case: str, config, root: Path, devices: list | None = None) -> dict:
    """The sweep one by one, then batched, each in its own fresh folder under root."""
    _install_hooks()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"error: {root} is not empty (finished runs would be skipped, not timed)")
    from ptjax.experiment import open_configured_backbone

    open_configured_backbone(config).load_weights()  # untimed: both ways then read warm files
    measured = {mode: one_sweep(config, root / mode, mode == "batched", devices)
                for mode in ("one_by_one", "batched")}
    keys = ("wall_s", "examples_per_s", "load_s", "compile_s", "eval_s", "train_other_s")
    table = _md_row_plain(["", "runs", "train examples", *keys])
    table += _md_row_plain(["---"] * (3 + len(keys)))
    for mode, m in measured.items():
        table += _md_row_plain([mode, m["runs"], m["train_examples"], *(f"{m[k]:.1f}" for k in keys)])
    speedup = measured["one_by_one"]["wall_s"] / measured["batched"]["wall_s"]
    text = (f"\n## {case}\n\n{table}\nbatched / one by one: {speedup:.2f}x faster (wall)\n\n"
            + side_by_side(measured["one_by_one"]["rows"], measured["batched"]["rows"]))
    print(text, flush=True)
    return {mode: {k: v for k, v in m.items() if k != "rows"} for mode, m in measured.items()} | {
        "speedup": speedup, "table": text}


def _md_row_plain(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--task", default="sst2", help="ppt: the few-shot task (sst2, boolq, rte, cb)")
    parser.add_argument("--steps", type=int, default=0, help="train steps per run (one evaluation, at the end)")
    parser.add_argument("--eval-examples", type=int, default=0, help="cap on each eval split's examples")
    parser.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=())
    parser.add_argument("--workdir", default="", help="where the sweeps run (default: a temporary folder, removed)")
    parser.add_argument("--out", default="", help="write the measurements as JSON here")
    args = parser.parse_args(argv)
    import jax

    if jax.default_backend() == "cpu":  # as main.py runs a sweep (ptjax/hostmem.py)
        from ptjax.hostmem import keep_freed_memory

        keep_freed_memory()
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ptjax_sweep_bench_"))
    report = {}
    try:
        for case in CASES if args.case == "all" else (args.case,):
            report[case] = run_both(case, CASES[case](args), root / case)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
