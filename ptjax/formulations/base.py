"""Formulations: how a task's examples are cast for a backbone and a head.

A formulation turns `Example`s into features (token ids, soft slots, targets) on the host, once,
names the head that scores them on the device, and turns the head's predictions back into the
task's answers. It is the only place where a task (what) meets a head (how); methods (where the
prompt goes) reach it only through the template they choose.

    formulation.featurize(examples) -> list[feature dict]   (feature.example: its example's index)
    formulation.head                 -> a ptjax.heads head
    formulation.decode(examples, features, predictions) -> one task answer per example
    formulation.scores(examples, features, predictions) -> one dict of scores per example
                                     (after decode; written to DIR/predictions, ptjax.eval.predictions)

`FormulatedTask` pairs a task, its examples and a formulation into the engine's TaskData.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol, Sequence

import numpy as np

from ptjax.eval.predictions import record
from ptjax.eval.scoring import score_predictions
from ptjax.tasks.base import Example, TaskSpec

log = logging.getLogger(__name__)

EXAMPLE_FIELD = "example"  # every feature holds the index of the example it came from


class Formulation(Protocol):
    head: Any
    pad_values: dict[str, int | float]
    length_groups: dict[str, str]

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        ...

    def decode(self, examples: Sequence[Example], features: Sequence[dict], predictions: Sequence[dict]) -> list:
        ...

    def scores(self, examples: Sequence[Example], features: Sequence[dict], predictions: Sequence[dict]) -> list[dict]:
        """Per example, what the head thought (label scores, top candidates...), JSON-able;
        called after decode on the same predictions."""
        ...

    def describe(self) -> dict:
        """JSON-able description (template, label words, head) for results and prompt exports."""
        ...


def sequence_pad_values(pad_id: int, *, decoder: bool = False) -> dict[str, int]:
    values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "soft_index": -1}
    if decoder:
        values.update(decoder_input_ids=pad_id, decoder_attention_mask=0)
    return values


def rendered_features(rendered) -> dict:
    """The backbone-input fields of one ptjax.prompts Rendered example."""
    return {
        "input_ids": rendered.input_ids,
        "attention_mask": np.ones_like(rendered.input_ids),
        "token_type_ids": rendered.token_type_ids,
        "soft_index": rendered.soft_index,
    }


def decode_argmax_labels(labels: Sequence[str], features, predictions) -> list[str]:
    """One label string per example from per-feature argmax predictions (one feature each)."""
    return [labels[int(p["prediction"])] for p in predictions]


def label_scores(labels: Sequence[str], features, predictions, mask_field: str = "label_mask") -> list[dict]:
    """{label: the head's score} per example (one feature each); labels an example masks out
    (feature[mask_field] == 0, PPT's unified choice) are left out."""
    out = []
    for feature, prediction in zip(features, predictions):
        keep = np.asarray(feature.get(mask_field, np.ones(len(labels))), bool)
        out.append({label: float(score) for label, score, kept in zip(labels, prediction["scores"], keep) if kept})
    return out


@dataclasses.dataclass
class FormulatedTask:
    """The engine's TaskData (ptjax.training.interfaces) for one task under one formulation.

    splits: engine split name -> the task's split name (e.g. "validation" -> "val").
    load_options: the task's loader options (config.task.options).
    max_examples: engine split name -> keep only the first N examples (0: all).
    """

    spec: TaskSpec
    formulation: Formulation
    data_dir: Any
    load_options: dict = dataclasses.field(default_factory=dict)
    max_examples: dict = dataclasses.field(default_factory=dict)
    examples_override: dict = dataclasses.field(default_factory=dict)
    primary_metric: str = "score"

    def __post_init__(self):
        self._examples: dict[str, list[Example]] = dict(self.examples_override)
        self._features: dict[str, list[dict]] = {}

    @property
    def pad_values(self) -> dict:
        return self.formulation.pad_values

    @property
    def length_groups(self) -> dict:
        return self.formulation.length_groups

    def examples(self, split: str) -> list[Example]:
        if split not in self._examples:
            examples = self.spec.load(self.data_dir, split, **self.load_options)
            limit = int(self.max_examples.get(split, 0) or 0)
            self._examples[split] = list(examples[:limit] if limit else examples)
        return self._examples[split]

    def features(self, split: str) -> list[dict]:
        if split not in self._features:
            self._features[split] = self.formulation.featurize(self.examples(split))
            log.info("%s/%s: %d examples -> %d features", self.spec.name, split, len(self.examples(split)),
                     len(self._features[split]))
        return self._features[split]

    def answers(self, split: str, predictions: list[dict]) -> list:
        """The formulation's answer per example of `split`."""
        features = self.features(split)
        if len(predictions) != len(features):
            raise ValueError(f"{len(predictions)} predictions for {len(features)} features of {split}")
        return self.formulation.decode(self.examples(split), features, predictions)

    def prediction_records(self, split: str, predictions: list[dict]) -> list[dict]:
        """One DIR/predictions line per example (ptjax.eval.predictions): id, prediction, gold
        label, the formulation's scores."""
        examples, features = self.examples(split), self.features(split)
        answers = self.answers(split, predictions)
        scorer = getattr(self.formulation, "scores", None)
        scores = scorer(examples, features, predictions) if scorer else [None] * len(examples)
        return [record(e, a, s) for e, a, s in zip(examples, answers, scores)]

    def evaluate(self, split: str, predictions: list[dict]) -> dict[str, float]:
        examples = self.examples(split)
        answers = self.answers(split, predictions)
        labeled = [(e, a) for e, a in zip(examples, answers) if e.label is not None]
        if not labeled:
            return {}
        return score_predictions(self.spec, [e for e, _ in labeled], [a for _, a in labeled])


@dataclasses.dataclass
class Experiment:
    """What ptjax.experiment.build returns: the engine's Model (a ptjax.methods PromptModel) and
    TaskData (a FormulatedTask), the backbone they share, and a JSON-able description."""

    model: Any
    data: FormulatedTask
    backbone: Any
    description: dict
