"""Few-shot samples of tasks that have no fixed few-shot split (FewGLUE has train/dev32 files).

PPT's protocol: a training set of 32 examples and a dev set of 32 other examples, both drawn from
the original training data with the labels balanced (tasks with many labels: 8 per label), and the
original validation set as the test set (PPT §2 and §4.1). `<task>_fewshot` is that view of a task:

    get_task("sst2_fewshot").load(data_dir, "train")              # 32 of SST-2 train, 16 per label
    get_task("sst2_fewshot").load(data_dir, "dev32")              # 32 others
    get_task("sst2_fewshot").load(data_dir, "dev")                # GLUE dev, whole
    get_task("yahoo_answers_fewshot").load(data_dir, "train", per_label=8)
    get_task("rte_fewshot").load(data_dir, "train", shots=128)   # sample-efficiency study (32-256)

BoolQ, RTE and CB sample their ORIGINAL training sets (superglue_full/<Task>/train.jsonl under
data_dir, or <Task>/train.jsonl when data_dir is that folder), never FewGLUE's 32-example files;
their "val" (the test set) is the task's own. From a config: task.name="rte_fewshot",
task.options.shots=64, task.eval_splits=("dev32", "val"). With config.task.source (a hub dataset
such as "aps/super_glue:boolq", or data files) the sample is drawn from the source's "train" and
the other splits are the source's.

Options: shots (examples per sample, default 32), per_label (examples per label; overrides
shots), sample_seed (which sample; the same seed gives the same examples on every machine),
balanced (split `shots` evenly over the labels, a label short of examples giving all it has and
the others filling in: `balanced_quota`; False: a plain random draw). Any other split name is the
base task's own split.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from ptjax.errors import InputError
from ptjax.tasks import glue, race, sst, superglue, yahoo  # noqa: F401  (register the tasks sampled here first)
from ptjax.tasks.base import Example, TaskSpec, get_task, register

SAMPLED_SPLITS = ("train", "dev32")
BASES = ("sst2", "sst5", "yahoo_answers", "race", "race_m", "race_h", "boolq", "rte", "cb")
log = logging.getLogger(__name__)
# Tasks whose plain "train" split is FewGLUE's 32 examples: the sample comes from the full set.
ORIGINAL_TRAIN_FOLDER = "superglue_full"


def balanced_quota(shots: int, capacity: list[int], name: str = "task") -> list[int]:
    """Examples per label in one sample of `shots`: as even as the labels allow (the remainder to
    the first labels), a label with fewer than its share (`capacity`, per sample) giving all it
    has and the others sharing its shortfall evenly (CB's original training set has 16 neutral
    examples among 250, fewer than two balanced samples of 32 need)."""
    capped: set[int] = set()  # labels that give all they have; the others share the rest
    while True:
        free = [k for k in range(len(capacity)) if k not in capped]
        if not free:
            raise InputError(f"{name}: {sum(capacity)} training examples per sample (by label {capacity}); "
                             f"a sample of {shots} needs more")
        rest = shots - sum(capacity[k] for k in capped)
        quota = [capacity[k] if k in capped else 0 for k in range(len(capacity))]
        for rank, k in enumerate(free):
            quota[k] = rest // len(free) + (rank < rest % len(free))
        over = {k for k in free if quota[k] > capacity[k]}
        if not over:
            break
        capped |= over  # over at this level, over at any higher one: capping them is final
    if any(q < shots // len(capacity) for q in quota):
        log.warning("%s: labels short of examples; %d-shot samples hold %s per label", name, shots, quota)
    return quota


def sample(examples: list[Example], labels: tuple[str, ...], *, shots: int, per_label: int, seed: Any,
           balanced: bool, samples: int = 2, name: str = "task") -> list[list[Example]]:
    """`samples` disjoint samples of the examples (in a random order), each balanced over labels."""
    order = list(range(len(examples)))
    random.Random(f"{name}/{seed}").shuffle(order)
    if per_label or balanced:
        by_label: dict[str, list[int]] = {label: [] for label in labels}
        for index in order:
            label = examples[index].label
            if label in by_label:
                by_label[label].append(index)
        quota = [per_label] * len(labels) if per_label else balanced_quota(
            shots, [len(by_label[label]) // samples for label in labels], name)
        for label, want in zip(labels, quota):
            if len(by_label[label]) < samples * want:
                raise InputError(f"{name}: label {label!r} has {len(by_label[label])} training examples; "
                                 f"{samples} samples of {want} need {samples * want}")
        chosen = []
        for s in range(samples):
            rows = {i for label, want in zip(labels, quota) for i in by_label[label][s * want:(s + 1) * want]}
            chosen.append([i for i in order if i in rows])
    else:
        if len(order) < samples * shots:
            raise InputError(f"{name}: {len(order)} training examples; {samples} samples of {shots} need more")
        chosen = [order[s * shots:(s + 1) * shots] for s in range(samples)]
    return [[examples[i] for i in rows] for rows in chosen]


def _original_train(spec: TaskSpec, data_dir: Any) -> list[Example]:
    """The base task's original training set: its "train" split, but for the SuperGLUE tasks,
    whose "train" under the shared root is FewGLUE's sample, the full set beside it."""
    if spec.name not in superglue.FOLDERS:
        return spec.load(data_dir, "train")
    root, folder = Path(data_dir), superglue.FOLDERS[spec.name]
    for full in ([root] if root.name == ORIGINAL_TRAIN_FOLDER else []) + [root / ORIGINAL_TRAIN_FOLDER]:
        if (full / folder / "train.jsonl").is_file():
            return spec.load(full, "train")
    raise InputError(f"{spec.name}_fewshot: PPT samples the original training set, and "
                     f"{root / ORIGINAL_TRAIN_FOLDER / folder / 'train.jsonl'} does not exist (FewGLUE's "
                     f"32-example train.jsonl is not it); put the full SuperGLUE {folder} train.jsonl there")


def fewshot_task(base: str) -> TaskSpec:
    """Register `<base>_fewshot` (see the module docstring)."""
    return register(fewshot_view(get_task(base)), replace=True)


def fewshot_view(spec: TaskSpec, from_source: bool = False) -> TaskSpec:
    """`<spec.name>_fewshot` over `spec` (not registered). from_source: spec reads a source bound by
    config.task.source (ptjax.tasks.sources), whose "train" is the original training set."""
    name = f"{spec.name}_fewshot"

    def load(data_dir: Any, split: str, shots: int = 32, per_label: int = 0, sample_seed: int = 0,
             balanced: bool = True) -> list[Example]:
        if split not in SAMPLED_SPLITS:
            return spec.load(data_dir, split)
        if shots < 1 or per_label < 0:
            raise InputError(f"{name}: need shots >= 1 and per_label >= 0, got {shots}, {per_label}")
        original = spec.load(data_dir, "train") if from_source else _original_train(spec, data_dir)
        train = [e for e in original if e.label is not None]
        picked = sample(train, tuple(spec.labels), shots=shots, per_label=per_label, seed=sample_seed,
                        balanced=balanced, name=name)[SAMPLED_SPLITS.index(split)]
        return [Example(f"{name}-{split}-{k}", e.fields, e.label, {**e.meta, "source_guid": e.guid})
                for k, e in enumerate(picked)]

    splits = SAMPLED_SPLITS + tuple(s for s in spec.splits if s != "train")
    return TaskSpec(name, spec.kind, spec.labels, spec.metrics, load, splits, spec.fields,
                    choices=spec.choices, description=f"{spec.description} (few-shot sample)",
                    split_aliases=dict(spec.split_aliases))


def base_of(name: str) -> str | None:
    """The task a registered `<base>_fewshot` samples, else None."""
    base = name.removesuffix("_fewshot")
    return base if base != name and base in BASES else None


for _base in BASES:
    fewshot_task(_base)
