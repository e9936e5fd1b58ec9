"""Generic tasks a config defines: a user's classification or tagging data set without code.

    config.task.name = "text_classification"        # or "token_tagging"
    config.task.source = "my_data/{split}.csv"      # any source (ptjax.tasks.sources)
    config.task.labels = ("negative", "positive")   # tagging: empty collects the training tags
    config.task.columns = ("text=review", "label=stars")
    config.prompt.template = "{text} All in all, it was [MASK]."   # verbalizer heads
    config.head.verbalizer = ("bad", "good")        # default: the label names themselves

text_classification: the fields are the task.columns names other than label and id ("text" when
there are none); each row's label must be one of task.labels (numbers match their text, JSON
true/false "True"/"False"). Score: accuracy.
token_tagging: rows {"tokens": [...], "tags": [...]} (IOB1 or IOB2; a csv cell holds them
space-separated); score: entity F1 (conlleval).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ptjax.data.readers import get_field
from ptjax.errors import InputError
from ptjax.tasks.base import Example, TaskSpec, check_label, register
from ptjax.tasks.tagging import tagging_parser

GENERIC = ("text_classification", "token_tagging")
_NOT_FIELDS = ("label", "id", "idx")


def _needs_source(data_dir: Any, split: str) -> list[Example]:
    raise InputError(f"the generic tasks ({', '.join(GENERIC)}) read config.task.source "
                     f"(a hub dataset, a save_to_disk folder or 'data/{{split}}.jsonl')")


def classification_parser(name: str, labels: Sequence[str], fields: Sequence[str]):
    """A record parser for rows with text `fields` and a "label" (absent or null: unlabeled)."""

    def parse(records, split: str) -> list[Example]:
        out = []
        for n, (where, record) in enumerate(records):
            values = {field: get_field(record, field, str, where) for field in fields}
            label = None if record.get("label") in (None, "") else check_label(record["label"], labels, where)
            key = record.get("id", record.get("idx", n))
            key = key if isinstance(key, (str, int)) and not isinstance(key, bool) else n
            out.append(Example(f"{name}-{split}-{key}", values, label, {"idx": key, "where": where}))
        return out

    return parse


def is_generic(spec: TaskSpec) -> bool:
    return spec.name in GENERIC


def specialize(spec: TaskSpec, labels: Sequence[str], columns: Mapping[str, str]) -> TaskSpec:
    """The generic `spec` with the config's labels and fields."""
    labels = tuple(str(label) for label in labels)
    if len(set(labels)) != len(labels):
        raise InputError(f"config.task.labels repeats a label: {list(labels)}")
    if spec.kind == "tagging":
        labels = labels or None  # None: collected from the training data
        return dataclasses.replace(spec, labels=labels, parse=tagging_parser(spec.name, labels))
    if len(labels) < 2:
        raise InputError(f"task {spec.name}: set config.task.labels to its label names (two or more)")
    fields = tuple(field for field in columns if field not in _NOT_FIELDS) or ("text",)
    return dataclasses.replace(spec, labels=labels, fields=fields,
                               parse=classification_parser(spec.name, labels, fields))


register(TaskSpec("text_classification", "classification", None, ("accuracy",), _needs_source,
                  ("train", "validation", "test"), ("text",),
                  description="any classification data set: config.task.labels, .columns and .source",
                  split_aliases={}, parse=_needs_source))
register(TaskSpec("token_tagging", "tagging", None, ("entity_f1",), _needs_source,
                  ("train", "validation", "test"), ("tokens",),
                  description="any IOB tagging data set: config.task.source (and .columns, .labels)",
                  split_aliases={}, parse=_needs_source))
