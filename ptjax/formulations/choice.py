"""Multiple-choice formulation: every example has candidate answers, one of them right.

scoring="lm": each candidate fills the template's [MASK] slot and is scored by the log-likelihood
  of its tokens (masked LMs: one mask per token; causal LMs: the candidate is appended and
  teacher-forced; T5: the candidate is the decoder target after the sentinel). COPA, multi-token
  label words and PPT's unified multiple choice use it.
scoring="linear": each candidate is rendered into the input (field {option}) and a linear head
  scores the pooled representation (fine-tuning style multiple choice).

Features are [options, length] arrays (padded to the longest candidate of the example) plus
option_mask [options] for examples with fewer candidates than `num_options`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ptjax.errors import InputError
from ptjax.formulations.base import EXAMPLE_FIELD, rendered_features, sequence_pad_values
from ptjax.formulations.classification import FieldsFn, example_fields, seq2seq_decoder_prefix
from ptjax.heads.choice import ChoiceHead
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.templates import Template, parse_template
from ptjax.prompts.verbalizers import tokenize_word
from ptjax.tasks.base import Example

SCORE_FIELDS = ("score_positions", "score_targets", "score_mask")


def _stack(rows: Sequence[np.ndarray], pad: int) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), pad, np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@dataclasses.dataclass
class MultipleChoice:
    """options_fn: example -> candidate texts; label_fn: example -> index of the right one;
    answer_fn: (example, chosen index) -> the task's answer (default: the index as a string)."""

    template: Template | str
    renderer: Renderer
    options_fn: Callable[[Example], Sequence[str]]
    label_fn: Callable[[Example], int]
    num_options: int
    scoring: str = "lm"
    answer_fn: Callable[[Example, int], Any] = lambda example, index: str(index)
    fields_fn: FieldsFn = example_fields
    decoder_start_id: int = 0
    length_normalize: bool = False
    pooling: str = "first"
    dropout: float = 0.1

    def __post_init__(self):
        self.template = parse_template(self.template)
        kind = self.renderer.kind
        if self.scoring == "lm":
            if not self.template.has_target:
                raise InputError(f"{self.template.describe()}: LM-scored choices fill a [MASK] slot")
            if kind == "encoder":
                raise InputError("LM-scored choices need an LM head; this backbone has none: use scoring='linear'")
            if kind == "causal_lm":
                self.template = self.template.until_target()
        elif "option" not in self.template.field_names:
            raise InputError(f"{self.template.describe()}: linear-scored choices put {{option}} in the input")
        self.head = ChoiceHead(scoring=self.scoring, length_normalize=self.length_normalize, pooling=self.pooling,
                               dropout=self.dropout)
        seq2seq = kind == "seq2seq"
        self.pad_values = {**sequence_pad_values(self.renderer.pad_id, decoder=seq2seq),
                           "score_positions": 0, "score_targets": 0, "score_mask": 0}
        self.length_groups = {name: "answer_length" for name in SCORE_FIELDS}
        self.length_groups.update(decoder_input_ids="target_length", decoder_attention_mask="target_length")

    def _option_features(self, example: Example, option: str) -> dict:
        fields = dict(self.fields_fn(example))
        if self.scoring == "linear":
            return rendered_features(self.renderer(self.template, {**fields, "option": option}))
        kind, tokenizer = self.renderer.kind, self.renderer.tokenizer
        answer = tokenize_word(tokenizer, option, follows_space=self.template.target_follows_space)
        if not answer:
            raise InputError(f"{example.meta.get('where', example.guid)}: empty candidate answer {option!r}")
        if kind == "seq2seq":
            rendered = self.renderer(self.template, fields)
            feature = rendered_features(rendered)
            prefix = seq2seq_decoder_prefix(tokenizer, self.decoder_start_id)
            decoder = prefix + answer[:-1]
            feature["decoder_input_ids"] = np.asarray(decoder, np.int32)
            feature["decoder_attention_mask"] = np.ones(len(decoder), np.int32)
            first = len(prefix) - 1
        else:
            rendered = self.renderer(self.template, fields, answer_ids=answer)
            feature = rendered_features(rendered)
            first = rendered.target_index
        feature["score_positions"] = first + np.arange(len(answer), dtype=np.int32)
        feature["score_targets"] = np.asarray(answer, np.int32)
        feature["score_mask"] = np.ones(len(answer), np.int32)
        return feature

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        features = []
        for index, example in enumerate(examples):
            options = list(self.options_fn(example))
            if not 1 <= len(options) <= self.num_options:
                raise InputError(f"{example.meta.get('where', example.guid)}: {len(options)} candidates; this "
                                 f"formulation takes 1 to {self.num_options}")
            per_option = [self._option_features(example, o) for o in options]
            per_option += [per_option[0]] * (self.num_options - len(options))
            feature = {name: _stack([f[name] for f in per_option], self.pad_values[name]) for name in per_option[0]}
            feature["option_mask"] = (np.arange(self.num_options) < len(options)).astype(np.int32)
            feature["label"] = self.label_fn(example) if example.label is not None else 0
            feature[EXAMPLE_FIELD] = index
            features.append(feature)
        return features

    def decode(self, examples, features, predictions) -> list:
        return [self.answer_fn(e, int(p["prediction"])) for e, p in zip(examples, predictions)]

    def scores(self, examples, features, predictions) -> list[dict]:
        """{answer: the option's score} per example, over the options it has."""
        return [{str(self.answer_fn(e, i)): float(p["scores"][i]) for i in np.flatnonzero(f["option_mask"])}
                for e, f, p in zip(examples, features, predictions)]

    def describe(self) -> dict:
        return {"formulation": "choice", "template": self.template.source, "scoring": self.scoring}


@dataclasses.dataclass
class WordChoice(MultipleChoice):
    """Multiple choice among label words (those that are not single tokens); describe() names
    them, as a verbalizer's does (prompt.init='label_words' reads them there)."""

    label_words: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> dict:
        return {**super().describe(), "label_words": dict(self.label_words)}


def label_word_choice(
    template, renderer: Renderer, labels: Sequence[str], label_words: Mapping[str, str | Sequence[str]], **kwargs
) -> MultipleChoice:
    """Classification whose label words are not single tokens, scored as choices among the words
    (the first word of each label)."""
    words = [label_words[label] if isinstance(label_words[label], str) else label_words[label][0] for label in labels]
    return WordChoice(
        template=template, renderer=renderer, options_fn=lambda example: words,
        label_fn=lambda example: list(labels).index(example.label), num_options=len(labels),
        answer_fn=lambda example, index: labels[index], label_words=dict(zip(labels, words)), **kwargs,
    )
