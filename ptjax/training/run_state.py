"""What a training run keeps beside its parameters, and what it shares with a batched sweep job
(ptjax.training.loop, ptjax.training.batched): the progress saved in every checkpoint, the cut of
metrics.jsonl back to a resumed step, stop requests by signal, a split's features ready for the
pipeline, and the head of results.json."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from pathlib import Path
from typing import Self

import jax

from ptjax.data import pipeline
from ptjax.training.interfaces import Model, TaskData


@dataclasses.dataclass
class Progress:
    """Run state beyond params and optimizer state; saved in every checkpoint's metadata."""

    step: int = 0
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None
    last_metrics: dict | None = None
    evals_since_best: int = 0
    stopped_early: bool = False

    def improved(self, value: float, mode: str) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if mode == "max" else value < self.best_value


def prepare_split(config, data: TaskData, split: str, cache_dir: Path | None) -> pipeline.SplitData:
    """A split's features (cached under cache_dir) bucketed by the config's length buckets."""
    features = pipeline.load_features(data, split, cache_dir, pipeline.feature_cache_key(config, data))
    return pipeline.prepare_split(split, features, data.pad_values, getattr(data, "length_groups", {}) or {},
                                  tuple(config.task.length_buckets))


def base_results(config, model: Model, counts: dict) -> dict:
    """What every results.json starts with: mode, backbone, parameter counts, config, devices."""
    return {
        "mode": config.mode,
        "backbone": config.model.name,
        "fingerprint": model.fingerprint,
        "params": counts,
        "config": config.to_dict(),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }


def cut_metrics(path: Path, step: int) -> None:
    """Drop the records a resumed run logs again (steps after `step`, and the resume and
    config-change records of `step` itself) and any line a crash left half-written; replaced
    atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) < step or (record.get("step") == step and record.get("kind") not in (
                "resume", "config_change")):
            kept.append(line + "\n")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


class StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM while training: the first asks the loop to stop after the
    current step, with a checkpoint of that step; a second one interrupts at once. Handlers are
    installed from the main thread only (elsewhere Python refuses them) and restored on exit.
    With several processes every process must get the signal, as SLURM and TPU pods send it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
