"""The plain example every task produces, the task description, and the task registry.

A task turns files into `Example`s and names its labels and official metrics; it knows nothing
about tokenizers, templates or methods. Labels are strings from `TaskSpec.labels` (classification),
tuples of tags (tagging) or tuples of acceptable answers (QA, ReCoRD).

    spec = get_task("rte")
    examples = spec.load("/data", "val")     # list[Example]
    facts = get_task("lama").load("/data", "dev", relations=["P17"], common_vocab="29k")
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ptjax.errors import InputError

# What a task asks of a model; methods pick their head from it.
#   classification   one label of `labels` per example (pairs, single sentences, MultiRC answers)
#   multiple_choice  the label is the index ("0", "1") of the right one of the fields `choices`
#   entity_choice    pick one of meta["entities"] (ReCoRD); the label lists the right ones
#   tagging          one tag per token of fields["tokens"]
#   extractive_qa    a span of fields["context"] (or none, SQuAD 2.0); the label lists answers
#   fact_probe       predict the object word of a (subject, relation) fact (LAMA)
KINDS = ("classification", "multiple_choice", "entity_choice", "tagging", "extractive_qa", "fact_probe")


@dataclasses.dataclass(frozen=True)
class Example:
    """One input of a task.

    guid: unique within a split, stable across runs ("rte-val-17").
    fields: the text the template may use: str, or tuple[str, ...] (tokens, choices).
    label: the gold answer (see the module docstring), None for unlabeled data.
    meta: everything else (ids for grouping, offsets, spans); meta["where"] is "file:line".
    """

    guid: str
    fields: dict[str, Any]
    label: Any = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity (a registry entry)
class TaskSpec:
    """What a task is, independent of how it is solved.

    labels: the label list in a fixed order (head index i = labels[i]); None when the label set is
      read from the training data (`collect_labels`), as for SRL.
    metrics: names of the official metrics in ptjax.eval.metrics; the task score is their
      unweighted mean, as SuperGLUE averages CB's accuracy and F1.
    loader: (data_dir, split, **options) -> list[Example]; call it through `load`.
    splits: the split names the loader knows; `split_aliases` maps other names onto them
      ("validation" -> "dev", or -> "val" for SuperGLUE).
    fields: the names in Example.fields.
    choices: for multiple_choice, the fields that hold the options, in label order.
    parse: (records, split) -> list[Example], where records yields ("where", dict) pairs shaped
      like one line of the task's files; reads rows of any source (ptjax.tasks.sources: a hub
      dataset, a save_to_disk folder, parquet/jsonl/csv). None: the task reads its files only.
    source_columns: field -> column of the task's usual Hugging Face dataset where the names
      differ (conll2003's "ner_tags" for "tags"); config.task.columns overrides them.
    """

    name: str
    kind: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    loader: Callable[..., list[Example]]
    splits: tuple[str, ...]
    fields: tuple[str, ...]
    choices: tuple[str, ...] = ()
    description: str = ""
    split_aliases: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"validation": "dev", "valid": "dev"})
    parse: Callable[..., list[Example]] | None = None
    source_columns: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: unknown kind {self.kind!r}")

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the loader takes (config: task.options)."""
        parameters = list(inspect.signature(self.loader).parameters.values())[2:]
        return tuple(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    def load(self, data_dir: Any, split: str, **options: Any) -> list[Example]:
        """Examples of `split` read from data_dir (the shared data root or the task's own folder)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise InputError(f"task {self.name} has no option {unknown[0]!r} (options: {known})")
        return self.loader(data_dir, self.split_aliases.get(split, split), **options)


_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add a task (user data sets too); a second task with the same name is refused unless
    `replace` (a user task defined again)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The task called `name` (case-insensitive)."""
    import ptjax.tasks  # noqa: F401  (registers the built-in tasks)

    spec = _REGISTRY.get(name) or _REGISTRY.get(name.lower())
    if spec is None:
        raise InputError(f"unknown task {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return spec


def task_names() -> list[str]:
    import ptjax.tasks  # noqa: F401

    return sorted(_REGISTRY)


def load_examples(task: str | TaskSpec, data_dir: Any, split: str, **options: Any) -> list[Example]:
    spec = get_task(task) if isinstance(task, str) else task
    return spec.load(data_dir, split, **options)


# --------------------------------------------------------------------------------------------
# Helpers the task modules share.


def task_dir(data_dir: Any, folders: Sequence[str], marker: str | None = None) -> Path:
    """The folder of a task: data_dir itself when it holds the files, else data_dir/<folder>.

    `marker` is a file or folder name whose presence says "this is the task folder"; without it the
    first existing data_dir/<folder> wins and data_dir itself is the fallback.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"data directory {root} does not exist")
    if marker is not None and (root / marker).exists():
        return root
    for folder in folders:
        if (root / folder).is_dir():
            return root / folder
    return root


def check_label(value: Any, labels: Sequence[str], where: str) -> str:
    """A file's label as one of `labels`: JSON true/false become "True"/"False", numbers strings."""
    if isinstance(value, bool):
        text = "True" if value else "False"
    elif isinstance(value, (int, float)) and float(value).is_integer():
        text = str(int(value))
    else:
        text = str(value).strip()
    if text not in labels:
        raise InputError(f"{where}: label {value!r} is not one of {', '.join(labels)}")
    return text


def collect_labels(examples: Iterable[Example]) -> tuple[str, ...]:
    """The tag set of tagging examples: "O" first, then per type B- before I-, types sorted."""
    tags = {tag for example in examples for tag in example.label or ()}
    types = sorted({tag[2:] for tag in tags if tag != "O"})
    ordered = ["O"] if "O" in tags else []
    for type_ in types:
        ordered += [prefix + type_ for prefix in ("B-", "I-") if prefix + type_ in tags]
    ordered += sorted(tags - set(ordered))
    return tuple(ordered)
