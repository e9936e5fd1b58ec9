"""Serving many prompts on one frozen backbone: mixed batches, one forward pass.

    python -m ptjax.serve --config configs/X.py --export rte=RUN_RTE --export boolq=RUN_BOOLQ \
        [--split validation] [--batch_size 32] [--compare] [--repeats 3]

Each --export names a task (overriding config.task.name; the rest of the config is shared) and
the prompt export (or workdir) trained for it on the configured backbone. The exports' prompts
are stacked into one bank: soft prompts become a [tasks, tokens, embed] table (encoders are
materialized first; shorter prompts are zero-padded, their templates never read the padding),
deep prompts a [tasks, length, layers, 2, kv_heads, head_dim] table. Every example carries the
prompt_id of its task, so a batch may hold examples of every task; the backbone runs once per
batch and each task's own head (verbalizer words, linear weights) scores its own rows.

Prints one JSON line: per-task metrics of the mixed evaluation and, with --compare, the
throughput of the mixed evaluation against evaluating the tasks one after another (each with
its own un-banked model, same examples, backbone and batch size); both are timed after a
warm-up pass that compiles every shape, best of --repeats.

Compatible exports: same backbone (fingerprints are checked), all soft prompts or all deep
prompts, deep prompts of one length and layer range, one prompt each (not a bank), tasks whose
features have the same fields (e.g. classification tasks with verbalizer or linear heads).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from ptjax import cli
from ptjax.data import pipeline
from ptjax.errors import InputError
from ptjax.methods.model import PromptModel
from ptjax.prompts.deep import materialize_deep_prompt
from ptjax.prompts.encoders import materialize_encoder
from ptjax.training import checkpoints as ckpt
from ptjax.training.step import as_float32, split_params

_EXPORTS = flags.DEFINE_multi_string("export", [], "TASK=EXPORT_DIR: a task and its prompt export (repeat)")
_SPLIT = flags.DEFINE_string("split", "", "split to evaluate (default: the config's first eval split)")
_BATCH = flags.DEFINE_integer("batch_size", 0, "examples per batch (default: config.train.eval_batch_size)")
_COMPARE = flags.DEFINE_bool("compare", False, "also time the tasks one after another")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed passes per side (best is reported)")

BANK_FIELD = "prompt_id"


@dataclasses.dataclass
class ServedTask:
    """One task: its experiment (model + data) on the shared backbone and its export's params."""

    name: str
    model: PromptModel
    data: object
    trainable: dict
    export: Path


def load_tasks(config: ml_collections.ConfigDict, exports: Sequence[tuple[str | ml_collections.ConfigDict,
                                                                          str | Path]], *,
               backbone=None) -> list[ServedTask]:
    """Build each task's experiment on one backbone (loaded once) and restore its export.
    exports: (task name, export) pairs, the task's config being `config` with that task.name,
    or (a task's own config, export) pairs (its model section must name the same backbone)."""
    from ptjax.experiment import build, open_configured_backbone

    if not exports:
        raise InputError("serving needs at least one --export TASK=EXPORT_DIR")
    backbone = backbone or open_configured_backbone(config)
    if backbone.params is None:
        backbone.load_weights()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tasks = []
    for task, path in exports:
        if isinstance(task, ml_collections.ConfigDict):
            task_config, name = task, task.task.name
        else:
            task_config, name = config.copy_and_resolve_references(), task
            task_config.task.name = name
        experiment = build(task_config, backbone=backbone)
        model = experiment.model
        shapes, _ = model.abstract_params()
        trainable_shapes = as_float32(split_params(shapes, model.is_trainable)[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), trainable_shapes)
        trainable, _ = ckpt.read_export(path, target, fingerprint=backbone.fingerprint)
        tasks.append(ServedTask(name, model, experiment.data, trainable, ckpt.resolve_export(path)))
    return tasks


# --------------------------------------------------------------------------------------------
# The bank.


def _materialized(task: ServedTask) -> tuple[dict, dict]:
    """(plain modules, their params) of a task's prompt: {"soft": ..., "deep": ...}."""
    prompt = task.trainable.get("prompt", {})
    modules, params = {}, {}
    if "decoder_deep" in prompt:
        raise InputError(f"{task.export}: T5 decoder prefixes are not served from a bank")
    if task.model.soft_prompt is not None:
        if task.model.soft_prompt.num_prompts or "encoder" in prompt["soft"]:
            raise InputError(f"{task.export}: already a bank of prompts; serve exports of one prompt each")
        modules["soft"], params["soft"] = materialize_encoder(task.model.soft_prompt, prompt["soft"])
    if task.model.deep_prompt is not None:
        if task.model.deep_prompt.num_prompts:
            raise InputError(f"{task.export}: already a bank of prompts; serve exports of one prompt each")
        modules["deep"], params["deep"] = materialize_deep_prompt(task.model.deep_prompt, prompt["deep"])
    return modules, params


def build_bank(tasks: Sequence[ServedTask]) -> tuple[PromptModel, dict]:
    """(a PromptModel whose prompts are banks over the tasks, its prompt params)."""
    parts = [_materialized(task) for task in tasks]
    kinds = {tuple(sorted(modules)) for modules, _ in parts}
    if len(kinds) != 1:
        raise InputError(f"the exports mix prompt kinds {sorted(kinds)}; serve soft prompts or deep prompts "
                         "together, not both")
    first = tasks[0].model
    shifts = {task.model.shift_positions for task in tasks}
    if len(shifts) != 1:
        raise InputError("the exports disagree on config.prompt.deep.shift_positions; a bank needs one setting")
    soft = deep = None
    params = {}
    if "soft" in parts[0][0]:
        tables = [p["soft"]["embedding"] for _, p in parts]
        longest = max(t.shape[0] for t in tables)
        padded = [np.pad(t, ((0, longest - t.shape[0]), (0, 0))) for t in tables]
        soft = parts[0][0]["soft"].clone(num_tokens=longest, num_prompts=len(tasks))
        params["soft"] = {"embedding": jnp.asarray(np.stack(padded))}
    if "deep" in parts[0][0]:
        shapes = {(m["deep"].length, m["deep"].prompt_layers) for m, _ in parts}
        if len(shapes) != 1:
            raise InputError(f"deep prompts of different lengths or layer ranges {sorted(shapes)} cannot share a "
                             "bank; serve exports trained with the same config.prompt.deep")
        deep = parts[0][0]["deep"].clone(num_prompts=len(tasks))
        params["deep"] = {"prefix": jnp.asarray(np.stack([p["deep"]["prefix"] for _, p in parts]))}
    bank = PromptModel(backbone=first.backbone, head=None, soft_prompt=soft, deep_prompt=deep,
                       shift_positions=first.shift_positions)
    return bank, params


# --------------------------------------------------------------------------------------------
# Mixed and one-after-another evaluation.


def mixed_split(tasks: Sequence[ServedTask], split: str, buckets: tuple[int, ...], *,
                seed: int = 0) -> tuple[pipeline.SplitData, np.ndarray, np.ndarray]:
    """Every task's features in one split, interleaved in a random order (a stream of requests
    for different tasks), each with its task's prompt_id. Returns (split, task of each row,
    position of each row in its task's own split)."""
    features, owners, local = [], [], []
    fields = None
    for number, task in enumerate(tasks):
        own = task.data.features(split)
        if own and BANK_FIELD in own[0]:
            raise InputError(f"task {task.name}: its features already carry {BANK_FIELD!r} (a prompt bank)")
        names = set(own[0]) if own else set()
        if fields is not None and names != fields:
            raise InputError(f"task {task.name}: features {sorted(names)} differ from task {tasks[0].name}'s "
                             f"{sorted(fields)}; only tasks of one formulation kind share batches")
        fields = names
        features += [{**f, BANK_FIELD: np.int32(number)} for f in own]
        owners += [number] * len(own)
        local += list(range(len(own)))
    order = np.random.default_rng(seed).permutation(len(features))
    pad_values = tasks[0].data.pad_values
    groups = getattr(tasks[0].data, "length_groups", {}) or {}
    merged = pipeline.prepare_split(split, [features[i] for i in order], pad_values, groups, buckets)
    return merged, np.asarray(owners)[order], np.asarray(local)[order]


def _device_batch(arrays: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in arrays.items() if k not in (pipeline.VALID, pipeline.INDEX)}


def _split_predictions(outputs: dict, rows: np.ndarray, valid: np.ndarray, out: list) -> None:
    outputs = jax.tree.map(np.asarray, outputs)
    for row, (index, ok) in enumerate(zip(rows, valid)):
        if ok:
            out[index] = {k: v[row] for k, v in outputs.items()}


class MixedServer:
    """One jitted function: banked prompts -> backbone once -> every task's head on the batch."""

    def __init__(self, tasks: Sequence[ServedTask]):
        self.tasks = list(tasks)
        self.bank, self.bank_params = build_bank(self.tasks)
        self.heads = [task.trainable.get("head", {}) for task in self.tasks]
        self.frozen = self.tasks[0].model.backbone.params

        def predict(bank_params, heads, frozen, batch):
            outputs, lm_logits, flat = self.bank._forward({"backbone": frozen, "prompt": bank_params}, batch,
                                                          train=False, rng=None)
            return [task.model.head.predict(head, outputs, lm_logits, flat)
                    for task, head in zip(self.tasks, heads)]

        self._predict = jax.jit(predict)

    def predict_split(self, split: pipeline.SplitData, owners: np.ndarray, local: np.ndarray,
                      batch_size: int) -> list[list[dict]]:
        """Per task, its predictions in its own split order (owners, local: from mixed_split)."""
        results: list[list] = [[None] * int((owners == t).sum()) for t in range(len(self.tasks))]
        for rows, valid, lengths in pipeline.eval_plan(split, batch_size):
            batch = pipeline.collate(split, rows, lengths, valid)
            per_task = self._predict(self.bank_params, self.heads, self.frozen, _device_batch(batch))
            per_task = jax.tree.map(np.asarray, per_task)
            for row, (index, ok) in enumerate(zip(rows, valid)):
                if ok:
                    task = owners[index]
                    results[task][local[index]] = {k: v[row] for k, v in per_task[task].items()}
        return results


class SequentialServer:
    """Each task with its own (un-banked) model: one jitted predict per task, run in turn."""

    def __init__(self, tasks: Sequence[ServedTask]):
        self.tasks = list(tasks)
        self.frozen = self.tasks[0].model.backbone.params
        self._predicts = []
        for task in self.tasks:
            def predict(trainable, frozen, batch, model=task.model):
                return model.predict({"backbone": frozen, **trainable}, batch)
            self._predicts.append(jax.jit(predict))

    def predict_split(self, splits: Sequence[pipeline.SplitData], batch_size: int) -> list[list[dict]]:
        results = []
        for task, split, predict in zip(self.tasks, splits, self._predicts):
            out: list[dict | None] = [None] * len(split)
            for rows, valid, lengths in pipeline.eval_plan(split, batch_size):
                batch = pipeline.collate(split, rows, lengths, valid)
                _split_predictions(predict(task.trainable, self.frozen, _device_batch(batch)), rows, valid, out)
            results.append(out)
        return results


def text_generator(tasks: Sequence[ServedTask], *, template: str = "", batch_size: int = 8, devices=None):
    """The served tasks' prompts as one generation bank: .generate(texts, prompts=[task name per
    text], max_new_tokens=..., strategy=...) writes text, a batch mixing tasks (ptjax.generation.text).
    devices: split each batch's rows over that many local devices (ptjax.generation.Generator)."""
    from ptjax.generation.text import TextGenerator, entry_from_parts

    entries = [entry_from_parts(t.name, t.model, t.data, t.trainable, template) for t in tasks]
    return TextGenerator(tasks[0].model.backbone, entries, batch_size=batch_size, devices=devices)


def _best_time(run, repeats: int) -> tuple[float, object]:
    result = run()  # warm-up: compiles every batch shape
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def serve(config: ml_collections.ConfigDict, exports: Sequence[tuple], *, split: str = "",
          batch_size: int = 0, compare: bool = False, repeats: int = 3, backbone=None) -> dict:
    """Mixed evaluation of every export's task (and the one-after-another baseline with compare).
    exports: as in load_tasks."""
    tasks = load_tasks(config, exports, backbone=backbone)
    split = split or config.task.eval_splits[0]
    batch_size = batch_size or config.train.eval_batch_size
    buckets = tuple(config.task.length_buckets)
    merged, owners, local = mixed_split(tasks, split, buckets, seed=config.seed)
    mixed = MixedServer(tasks)
    mixed_s, mixed_predictions = _best_time(lambda: mixed.predict_split(merged, owners, local, batch_size),
                                            repeats)
    examples = len(merged)
    result = {
        "backbone": config.model.name, "method": config.method.name, "split": split, "batch_size": batch_size,
        "tasks": {t.name: {"examples": int((owners == i).sum()), "export": str(t.export),
                           "metrics": {k: float(v) for k, v in t.data.evaluate(split, p).items()}}
                  for i, (t, p) in enumerate(zip(tasks, mixed_predictions))},
        "examples": examples, "mixed_s": mixed_s, "mixed_examples_per_s": examples / mixed_s,
        "device": jax.devices()[0].device_kind,
    }
    if compare:
        splits = [pipeline.prepare_split(split, t.data.features(split), t.data.pad_values,
                                         getattr(t.data, "length_groups", {}) or {}, buckets) for t in tasks]
        sequential = SequentialServer(tasks)
        sequential_s, _ = _best_time(lambda: sequential.predict_split(splits, batch_size), repeats)
        result.update(sequential_s=sequential_s, sequential_examples_per_s=examples / sequential_s,
                      speedup=sequential_s / mixed_s)
    return result


def _parse_exports(values: Sequence[str]) -> list[tuple[str, str]]:
    exports = []
    for value in values:
        task, sep, path = value.partition("=")
        if not sep or not task or not path:
            raise InputError(f"--export {value!r}: expected TASK=EXPORT_DIR")
        exports.append((task, path))
    return exports


def main(argv) -> None:
    cli.quiet_logs()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    config = cli.load_config()
    try:
        result = serve(config, _parse_exports(_EXPORTS.value), split=_SPLIT.value, batch_size=_BATCH.value,
                       compare=_COMPARE.value, repeats=_REPEATS.value)
    except InputError as err:
        cli.fail(str(err))
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    app.run(main, flags_parser=cli.parse_flags)
