"""Batches from a task's tokenized features: fixed bucketed shapes, deterministic order,
per-host shards, background prefetch.

Sequence fields (TaskData.pad_values) are padded on their last axis to a bucket length: the
smallest configured bucket that holds the longest example of the batch in that field's length
group. So the step compiles once per bucket combination and never again after warm-up.

Training: epoch e visits the examples in the order permutation(seed, e); batches are always
full (an epoch's last partial batch is dropped) and are a pure function of the step number, so
resuming at step s continues exactly where the interrupted run was.

Evaluation: every example exactly once. Examples are grouped by bucket (less padding) and the
last batch of a group is filled with copies marked valid=False, index=-1; "index" carries each
row's position in the split, so predictions go back to their examples.

Each process collates only its own rows [start, stop) of every global batch (see
ptjax.training.sharding.host_rows); all processes know all lengths, so they agree on shapes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ptjax.errors import InputError

DEFAULT_GROUP = "length"
VALID, INDEX = "valid", "index"


# --------------------------------------------------------------------------------------------
# Features and their lengths.


def feature_cache_key(config, data=None) -> str:
    """Hash of everything that can change tokenization (model, task, method, prompt, head
    config sections, data_dir, and the task's own optional `cache_key`)."""
    relevant = {k: config[k].to_dict() for k in ("model", "task", "method", "prompt", "head")}
    relevant["data_dir"] = str(config.data_dir)
    relevant["task_cache_key"] = str(getattr(data, "cache_key", ""))
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_features(data, split: str, cache_dir: Path | None, key: str) -> list[dict]:
    """data.features(split), cached as a pickle under cache_dir (tokenize once per workdir)."""
    if cache_dir is None:
        return data.features(split)
    path = Path(cache_dir) / f"features-{split}-{key}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    features = data.features(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(features, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)  # atomic: concurrent processes write identical files
    return features


@dataclasses.dataclass
class SplitData:
    """One split's features with the per-group lengths and bucket sets."""

    name: str
    features: list[dict]
    pad_values: dict[str, int | float]
    groups: dict[str, str]  # sequence field -> length group
    lengths: dict[str, np.ndarray]  # group -> [num_examples] longest field length per example
    buckets: dict[str, tuple[int, ...]]  # group -> sorted bucket lengths

    def __len__(self) -> int:
        return len(self.features)

    def batch_lengths(self, rows: np.ndarray) -> dict[str, int]:
        """Bucket length per group for a batch holding `rows`."""
        out = {}
        for group, lengths in self.lengths.items():
            longest = int(lengths[rows].max())
            out[group] = next(b for b in self.buckets[group] if b >= longest)
        return out


def default_buckets(longest: int) -> tuple[int, ...]:
    """Powers of two from 16 up to the first one holding `longest`."""
    buckets = [16]
    while buckets[-1] < longest:
        buckets.append(buckets[-1] * 2)
    return tuple(buckets)


def prepare_split(name: str, features: list[dict], pad_values: dict, length_groups: dict,
                  configured_buckets: tuple[int, ...]) -> SplitData:
    if not features:
        raise InputError(f"split {name!r} has no examples")
    groups = {field: length_groups.get(field, DEFAULT_GROUP) for field in pad_values}
    fields = set(features[0])
    for i, feature in enumerate(features):
        if set(feature) != fields:
            raise InputError(
                f"split {name!r} example {i}: fields {sorted(feature)} differ from example 0's "
                f"{sorted(fields)}"
            )
    lengths = {}
    for group in sorted(set(groups.values())):
        members = [f for f, g in groups.items() if g == group and f in fields]
        if not members:
            continue
        lengths[group] = np.array(
            [max(np.shape(feature[f])[-1] for f in members) for feature in features], np.int64
        )
    buckets = {}
    for group, values in lengths.items():
        longest = int(values.max())
        chosen = tuple(sorted(set(configured_buckets))) or default_buckets(longest)
        if chosen[-1] < longest:
            chosen = chosen + (longest,)  # one extra shape for the over-long tail
        buckets[group] = chosen
    return SplitData(name, features, dict(pad_values), groups, lengths, buckets)


def collate(split: SplitData, rows: np.ndarray, lengths: dict[str, int],
            valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stack the examples at `rows` into arrays, padding sequence fields to `lengths`.

    Adds "valid" (bool) and "index" (int32, -1 where not valid)."""
    valid = np.ones(len(rows), bool) if valid is None else valid
    batch = {}
    for field in split.features[0]:
        values = [split.features[r][field] for r in rows]
        if field in split.groups:
            target = lengths[split.groups[field]]
            pad = split.pad_values[field]
            first = np.asarray(values[0])
            out = np.full((len(rows),) + first.shape[:-1] + (target,), pad, dtype=first.dtype)
            for i, value in enumerate(values):
                value = np.asarray(value)
                if value.shape[:-1] != first.shape[:-1]:
                    raise InputError(
                        f"split {split.name!r} example {rows[i]}: field {field!r} has shape "
                        f"{value.shape}, example {rows[0]} has {first.shape} (only the last axis may vary)"
                    )
                out[i, ..., : value.shape[-1]] = value
            batch[field] = out
        else:
            try:
                batch[field] = np.stack([np.asarray(v) for v in values])
            except ValueError as err:
                shapes = sorted({np.shape(v) for v in values})
                raise InputError(
                    f"split {split.name!r}: field {field!r} has shapes {shapes}; a field not in "
                    f"TaskData.pad_values must have one shape"
                ) from err
    batch[VALID] = valid
    batch[INDEX] = np.where(valid, np.asarray(rows), -1).astype(np.int32)
    return batch


def count_tokens(split: SplitData, rows: np.ndarray, lengths: dict[str, int]) -> tuple[int, int]:
    """(real tokens, padded tokens) of a batch, summed over the length groups."""
    real = sum(int(split.lengths[g][rows].sum()) for g in split.lengths)
    padded = len(rows) * sum(lengths.values())
    return real, padded


# --------------------------------------------------------------------------------------------
# Orders.


@dataclasses.dataclass(frozen=True)
class TrainOrder:
    """Which examples form the batch of each step."""

    num_examples: int
    batch_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within epoch) of the batch consumed by `step` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def rows(self, step: int) -> np.ndarray:
        epoch, index = self.position(step)
        return self.epoch_order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]


def eval_plan(split: SplitData, batch_size: int) -> list[tuple[np.ndarray, np.ndarray, dict[str, int]]]:
    """[(rows, valid, lengths)] covering every example once, grouped by bucket."""
    keys = []
    for i in range(len(split)):
        keys.append(tuple(sorted(split.batch_lengths(np.array([i])).items())))
    plan = []
    for key in sorted(set(keys)):
        members = np.array([i for i, k in enumerate(keys) if k == key])
        for start in range(0, len(members), batch_size):
            rows = members[start:start + batch_size]
            valid = np.ones(batch_size, bool)
            if len(rows) < batch_size:
                valid[len(rows):] = False
                rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
            plan.append((rows, valid, dict(key)))
    return plan


# --------------------------------------------------------------------------------------------
# Iterators.


@dataclasses.dataclass
class Batch:
    step: int  # train step number (0-based), or eval batch number
    arrays: dict  # global arrays (device) or numpy arrays
    tokens: int  # real tokens in the global batch
    padded_tokens: int
    rows: np.ndarray  # [global batch] example positions in the split
    valid: np.ndarray  # [global batch] False on padding rows


def train_batches(split: SplitData, order: TrainOrder, *, start_step: int, stop_step: int,
                  host_range: tuple[int, int], to_device: Callable[[dict], dict]) -> Iterator[Batch]:
    """Batches of steps start_step .. stop_step - 1; this process collates rows host_range."""
    start, stop = host_range
    for step in range(start_step, stop_step):
        rows = order.rows(step)
        lengths = split.batch_lengths(rows)
        real, padded = count_tokens(split, rows, lengths)
        arrays = collate(split, rows[start:stop], lengths)
        yield Batch(step, to_device(arrays), real, padded, rows, np.ones(len(rows), bool))


def variant_train_batch(split: SplitData, orders: list[TrainOrder], stops: list[int], step: int) -> dict:
    """One step of a batched sweep (ptjax.training.variants): variant k's rows of `step` from its own
    order (its seed, its number of examples: TrainOrder.num_examples), one block per variant, with
    "prompt_id" = k. A variant past its last step (stops[k]) keeps its block as padding rows
    (valid False, so its bank entry gets no update), and the batch keeps one shape."""
    blocks = [order.rows(min(step, stop - 1)) for order, stop in zip(orders, stops)]
    rows = np.concatenate(blocks)
    valid = np.concatenate([np.full(len(b), step < stop) for b, stop in zip(blocks, stops)])
    arrays = collate(split, rows, split.batch_lengths(rows), valid)
    arrays["prompt_id"] = np.repeat(np.arange(len(blocks), dtype=np.int32), [len(b) for b in blocks])
    return arrays


def eval_batches(split: SplitData, batch_size: int, *, host_range: tuple[int, int],
                 to_device: Callable[[dict], dict]) -> Iterator[Batch]:
    start, stop = host_range
    for number, (rows, valid, lengths) in enumerate(eval_plan(split, batch_size)):
        real, padded = count_tokens(split, rows[valid], lengths)
        arrays = collate(split, rows[start:stop], lengths, valid[start:stop])
        yield Batch(number, to_device(arrays), real, padded, rows, valid)


class Prefetch:
    """Runs an iterator in a background thread, `size` items ahead. Exceptions re-raise in the
    consumer; close() (or leaving a `with` block) stops the thread."""

    _DONE = object()

    def __init__(self, iterator: Iterator, size: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True)
        self._thread.start()

    def _run(self, iterator):
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(err)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is self._DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        return item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
