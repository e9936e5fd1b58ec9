"""What a run writes for people: DIR/metrics.jsonl, DIR/results.json, TensorBoard events under
DIR/tensorboard, a progress bar, and the parameter counts at the start.

Only process 0 writes; the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class Reporter:
    """metrics.jsonl + TensorBoard + progress bar for one run."""

    def __init__(self, workdir: str | Path, *, enabled: bool, tensorboard: bool, progress: bool):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._bar = None
        self._progress = progress and enabled
        self._tb = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (open for the run)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One line of metrics.jsonl ({"kind", "step", "time", ...values}) and TB scalars."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")
        if self._tb is not None:
            for name, value in _flat_scalars(values):
                self._tb.add_scalar(f"{kind}/{name}", value, int(step))

    def start_progress(self, total: int, initial: int) -> None:
        if not self._progress:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def progress(self, steps: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()},
                                  refresh=False)

    def print(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.close()
        self._jsonl.close()
        self.enabled = False


def _flat_scalars(values: dict, prefix: str = ""):
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat_scalars(value, name + "/")
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            yield name, float(value)


def parameter_counts(trainable: dict, frozen: dict) -> dict[str, Any]:
    import jax

    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    n_trainable, n_frozen = count(trainable), count(frozen)
    total = n_trainable + n_frozen
    return {"trainable": n_trainable, "total": total,
            "trainable_ratio": n_trainable / total if total else 0.0}


def describe_counts(counts: dict[str, Any]) -> str:
    return (f"parameters: {counts['trainable']:,} trainable of {counts['total']:,} total "
            f"({100 * counts['trainable_ratio']:.4f}%)")
