"""A sweep's results as a plot: DIR/results.png from DIR/results.csv (written by mode "sweep").

    python -m ptjax.sweep_plot DIR [--metric val/score] [--x prompt.deep.length] [--out FILE.png]

One panel per metric (default: each eval split's "score", else every metric). With a numeric
grid key on the x axis (default: the sweep's only grid key, when it has one) every variant is a
line over that key, as the P-tuning v2 prompt-length ablation is drawn; without one every row
(variant and grid point) is a bar, as the prompt-depth ablation is. Error bars are the sample
standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ptjax import cli
from ptjax.errors import InputError

# results.csv columns that are not grid keys or metrics.
_FIXED = ("variant", "seeds", "runs")


def read_results(path: Path) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """(grid keys, metric names, rows) of a sweep's results.csv."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (run the sweep first: main.py --config.mode=sweep)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    metrics = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    stat_columns = {f"{m}_{s}" for m in metrics for s in ("mean", "std")}
    grid_keys = [c for c in columns if c not in _FIXED and c not in stat_columns]
    return grid_keys, metrics, rows


def default_metrics(metrics: list[str]) -> list[str]:
    scores = [m for m in metrics if m == "score" or m.endswith("/score")]
    return scores or metrics[:4]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot(workdir: Path, metrics: list[str] | None = None, x_key: str | None = None,
         out: Path | None = None) -> Path | None:
    """Draws the plot; returns its path, or None when results.csv has no finished row."""
    grid_keys, names, rows = read_results(workdir / "results.csv")
    rows = [r for r in rows if any(r.get(f"{m}_mean") for m in names)]
    if not rows:
        return None
    metrics = metrics or default_metrics(names)
    unknown = [m for m in metrics if m not in names]
    if unknown:
        raise InputError(f"{workdir / 'results.csv'}: no metric {unknown}; it has {', '.join(names)}")
    if x_key is None and len(grid_keys) == 1 and all(_number(r[grid_keys[0]]) is not None for r in rows):
        x_key = grid_keys[0]
    if x_key is not None and x_key not in grid_keys:
        raise InputError(f"--x {x_key}: not a grid key of this sweep ({', '.join(grid_keys) or 'none'})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        values = [(_number(r.get(f"{metric}_mean", "")), _number(r.get(f"{metric}_std", "")) or 0.0) for r in rows]
        if x_key:
            for variant in dict.fromkeys(r["variant"] for r in rows):
                series = sorted((_number(r[x_key]), v) for r, v in zip(rows, values)
                                if r["variant"] == variant and v[0] is not None)
                axis.errorbar([x for x, _ in series], [m for _, (m, _) in series],
                              yerr=[s for _, (_, s) in series], marker="o", capsize=3, label=variant)
            axis.set_xscale("log", base=2)
            axis.set_xlabel(x_key)
            axis.legend()
        else:
            labels = [" ".join([r["variant"], *(f"{k}={r[k]}" for k in grid_keys if r[k])]) for r in rows]
            axis.bar(range(len(rows)), [m or 0.0 for m, _ in values], yerr=[s for _, s in values], capsize=3)
            axis.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
        axis.set_ylabel(metric)
        axis.grid(True, alpha=0.3)
    figure.suptitle(str(workdir))
    figure.tight_layout()
    out = out or workdir / "results.png"
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptjax.sweep_plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="the sweep's --workdir")
    parser.add_argument("--metric", action="append", help="a results.csv metric (repeatable), e.g. val/score")
    parser.add_argument("--x", default=None, help="numeric grid key for the x axis")
    parser.add_argument("--out", type=Path, default=None, help="default: WORKDIR/results.png")
    args = parser.parse_args(argv)
    try:
        path = plot(args.workdir, args.metric, args.x, args.out)
    except InputError as err:
        cli.fail(str(err))
    print(path or f"{args.workdir}: no finished runs to plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
