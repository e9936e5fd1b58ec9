"""A sweep's results as tables: one row per variant and grid point, each metric as mean ± sample
std over the finished seeds (each run's results.json), per-group tables for metrics reported per
group (LAMA's p_at_1/<relation>), and optionally PET's over-variants report.

    rows = collect(runs)                    # runs: anything with .variant, .point and .path (ptjax.sweep.Run)
    markdown = write_tables(workdir, rows)  # writes results.md, results.csv, results_<metric>.csv
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path
from typing import Any

FINISHED = ("completed", "early_stopped", "diverged")  # results.json statuses of a run that is done


def read_json_or_none(path: Path) -> dict | None:
    """A run's JSON record, None when it is missing or unreadable (ptjax.data.readers.read_json
    is the strict reader of input data)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def slug(value: Any) -> str:
    """`value` as a file-name part."""
    text = value if isinstance(value, str) else repr(value)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "_"


@dataclasses.dataclass
class Row:
    variant: str
    point: tuple[tuple[str, Any], ...]
    metrics: dict[str, list[float]]  # "split/metric" or "metric" -> one value per finished seed
    seeds: int
    statuses: list[str]

    @property
    def label(self) -> str:
        if not self.point:
            return self.variant
        return f"{self.variant} [" + ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.point) + "]"


def collect(runs: list) -> list[Row]:
    """One Row per variant and grid point, with each run's final metrics (results.json)."""
    rows: dict[tuple, Row] = {}
    for run in runs:
        row = rows.setdefault((run.variant, run.point), Row(run.variant, run.point, {}, 0, []))
        results = read_json_or_none(run.path / "results.json") or {}
        row.statuses.append(results.get("status", "missing"))
        metrics = results.get("metrics") or {}
        if not metrics:
            continue
        row.seeds += 1
        single = len(metrics) == 1
        for split, values in metrics.items():
            for name, value in (values or {}).items():
                if isinstance(value, (int, float)):
                    row.metrics.setdefault(name if single else f"{split}/{name}", []).append(float(value))
    return list(rows.values())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _breakdowns(names: list[str]) -> dict[str, list[str]]:
    """metric -> its groups, for metrics reported per group ("p_at_1/P19" -> p_at_1: [P19])."""
    found: dict[str, list[str]] = {}
    for name in names:
        base, _, group = name.rpartition("/")
        if base and base in names:
            found.setdefault(base, []).append(group)
    return {base: sorted(groups, key=_natural) for base, groups in found.items()}


def _natural(text: str) -> list:
    """Sort key with numbers compared as numbers (P19 before P101)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def is_percent(values: list[float]) -> bool:
    return bool(values) and all(0.0 <= v <= 1.0 for v in values)


def cell(values: list[float] | None, percent: bool) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    scale = 100.0 if percent else 1.0
    text = f"{mean * scale:.1f}" if percent else f"{mean:.4g}"
    if len(values) > 1:
        text += f" ± {std * scale:.1f}" if percent else f" ± {std:.2g}"
    return text


def over_variant_lines(rows: list[Row], summary: list[str], percent: dict[str, bool]) -> str:
    """PET's multi-pattern report (P-tuning's Tables 5 and 6) as markdown: per metric, the mean ±
    std over variants of each variant's mean over seeds, the best variant on that metric (PET
    best: chosen on the reported split), and the variant the first eval split's same metric picks
    (what dev32 would choose). Higher is better."""
    def mean_of(row, name):
        return mean_std(row.metrics[name])[0] if row.metrics.get(name) else None

    splits = list(dict.fromkeys(n.split("/", 1)[0] for n in summary if "/" in n))
    out = io.StringIO()
    out.write("\n## Over variants\n\nEach variant's mean over seeds, then mean ± sample std over the "
              f"{len(rows)} variants; best: the variant with the highest mean on the metric itself, "
              f"and the one {splits[0] if splits else 'the first split'}'s same metric picks.\n\n")
    header = ["metric", "over variants", "best variant", "picked on " + (splits[0] if splits else "-")]
    out.write(md_row(header) + md_row(["---"] * len(header)))
    for name in summary:
        means = [(mean_of(r, name), r) for r in rows if mean_of(r, name) is not None]
        if not means:
            continue
        def value(v: float, percent: bool = percent[name]) -> str:
            return f"{v * 100:.1f}" if percent else f"{v:.4g}"

        best_value, best_row = max(means, key=lambda pair: pair[0])
        selector = f"{splits[0]}/{name.split('/', 1)[1]}" if splits and "/" in name else None
        picks = [(mean_of(r, selector), mean_of(r, name), r) for r in rows
                 if selector and mean_of(r, selector) is not None and mean_of(r, name) is not None]
        picked = max(picks, key=lambda triple: triple[0]) if picks else None
        out.write(md_row([name + (" %" if percent[name] else ""), cell([m for m, _ in means], percent[name]),
                           f"{best_row.label}: {value(best_value)}",
                           f"{picked[2].label}: {value(picked[1])}" if picked else "-"]))
    return out.getvalue()


def write_tables(workdir: Path, rows: list[Row], *, over_variants: bool = False) -> str:
    """results.md, results.csv and results_<metric>.csv in workdir; returns the markdown.
    over_variants: add the over-variants section (config.sweep.over_variants)."""
    names = list(dict.fromkeys(n for row in rows for n in row.metrics))
    breakdowns = _breakdowns(names)
    grouped = {f"{base}/{g}" for base, groups in breakdowns.items() for g in groups}
    summary = [n for n in names if n not in grouped]
    # "score" repeats the primary metric for one-metric tasks (LAMA's p_at_1): keep it only when it differs.
    if "score" in summary and any(all(r.metrics.get("score") == r.metrics.get(o) for r in rows)
                                  for o in summary if o != "score"):
        summary.remove("score")
    percent = {n: is_percent([v for r in rows for v in r.metrics.get(n, [])]) for n in names}
    point_keys = list(dict.fromkeys(k for row in rows for k, _ in row.point))
    seeds = max((len(r.statuses) for r in rows), default=0)

    out = io.StringIO()
    out.write(f"# Sweep results ({workdir})\n\nMean ± sample std over {seeds} seed(s) per row; "
              "metrics marked % are ×100.\n\n")
    header = ["variant", *(k for k in point_keys), "runs", *(n + (" %" if percent[n] else "") for n in summary)]
    out.write(md_row(header) + md_row(["---"] * len(header)))
    for row in rows:
        point = dict(row.point)
        status = f"{row.seeds}/{len(row.statuses)}" + ("" if all(s in FINISHED for s in row.statuses) else " (unfinished)")
        out.write(md_row([row.variant, *(str(point.get(k, "")) for k in point_keys), status,
                           *(cell(row.metrics.get(n), percent[n]) for n in summary)]))
    for base, groups in breakdowns.items():
        mark = " (%)" if percent[base] else ""
        out.write(f"\n## {base} per group{mark}\n\n")
        header = ["group", *(row.label for row in rows)]
        out.write(md_row(header) + md_row(["---"] * len(header)))
        for group in groups:
            out.write(md_row([group, *(cell(r.metrics.get(f"{base}/{group}"), percent[base]) for r in rows)]))
        out.write(md_row([f"**all ({base})**", *(cell(r.metrics.get(base), percent[base]) for r in rows)]))
    if over_variants and rows:
        out.write(over_variant_lines(rows, summary, percent))
    markdown = out.getvalue()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.md").write_text(markdown)

    with open(workdir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", *point_keys, "seeds", "runs", *(f"{n}_{s}" for n in names if n not in grouped
                                                                     for s in ("mean", "std"))])
        for row in rows:
            point = dict(row.point)
            stats = [x for n in names if n not in grouped
                     for x in (mean_std(row.metrics[n]) if row.metrics.get(n) else ("", ""))]
            writer.writerow([row.variant, *(point.get(k, "") for k in point_keys), row.seeds, len(row.statuses),
                             *stats])
    for base, groups in breakdowns.items():
        with open(workdir / f"results_{slug(base)}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["group", *(f"{row.label}_{s}" for row in rows for s in ("mean", "std"))])
            for group, name in [*((g, f"{base}/{g}") for g in groups), ("all", base)]:
                writer.writerow([group, *(x for r in rows for x in (mean_std(r.metrics[name]) if r.metrics.get(name)
                                                                      else ("", "")))])
    return markdown


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |\n"
