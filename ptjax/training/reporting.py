"""What a run writes for people: DIR/metrics.jsonl, DIR/results.json, TensorBoard events under
DIR/tensorboard, progress on stderr, and the parameter counts at the start.

Progress: on a terminal, a bar whose loss and examples/s stay visible between readings, each
the mean of the last few readings (Readout); the first examples/s reading of a run, which
includes compiling the step, is left out. When stderr is not a terminal (a log file, a batch
job), a plain line every PROGRESS_LINE_EVERY_S seconds and at the end replaces the bar's
carriage-return frames.

Only process 0 writes; the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
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


PROGRESS_WINDOW = 5  # readings (train log lines) averaged in the progress readout
PROGRESS_LINE_EVERY_S = 30.0  # seconds between progress lines when stderr is not a terminal


class Readout:
    """Loss and examples/s averaged over the last `window` readings. The first examples/s reading
    is dropped: its time includes compiling the train step (a 5x lower figure otherwise)."""

    def __init__(self, window: int = PROGRESS_WINDOW):
        self.losses: deque[float] = deque(maxlen=window)
        self.rates: deque[float] = deque(maxlen=window)
        self.readings = 0

    def add(self, loss: float | None = None, ex_s: float | None = None) -> None:
        if loss is not None:
            self.losses.append(float(loss))
        if ex_s is not None and self.readings > 0:
            self.rates.append(float(ex_s))
        self.readings += 1

    def values(self) -> dict[str, str]:
        shown = {}
        if self.losses:
            shown["loss"] = f"{np.mean(self.losses):.4g}"
        if self.rates:
            shown["ex/s"] = f"{np.mean(self.rates):.3g}"
        return shown


class Reporter:
    """metrics.jsonl + TensorBoard + progress (bar or lines) for one run."""

    def __init__(self, workdir: str | Path, *, enabled: bool, tensorboard: bool, progress: bool):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._bar = None
        self._lines = None  # step, total, time and step of the last line: progress as lines
        self._readout = Readout()
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
        self._readout = Readout()
        if not sys.stderr.isatty():
            self._lines = {"step": initial, "total": total, "printed_at": time.monotonic(),
                           "printed_step": initial}
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def progress(self, steps: int, *, loss: float | None = None, ex_s: float | None = None) -> None:
        """`steps` more steps done; loss and ex_s: a new reading (the train log's means)."""
        if loss is not None or ex_s is not None:
            self._readout.add(loss, ex_s)
        if self._bar is not None:
            self._bar.update(steps)
            if loss is not None or ex_s is not None:
                self._bar.set_postfix(self._readout.values(), refresh=False)
        elif self._lines is not None:
            self._lines["step"] += steps
            now = time.monotonic()
            if now - self._lines["printed_at"] >= PROGRESS_LINE_EVERY_S:
                self._progress_line(now)

    def _progress_line(self, now: float) -> None:
        lines = self._lines
        if lines["step"] == lines["printed_step"]:
            return
        lines.update(printed_at=now, printed_step=lines["step"])
        shown = ", ".join(f"{k} {v}" for k, v in self._readout.values().items())
        print(f"step {lines['step']}/{lines['total']}" + (f": {shown}" if shown else ""), file=sys.stderr,
              flush=True)

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
        if self._lines is not None and self.enabled:
            self._progress_line(time.monotonic())  # where the run ended
            self._lines = None
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
