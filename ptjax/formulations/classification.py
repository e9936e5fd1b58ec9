"""Classification formulations: a pattern with a verbalizer (PET / P-tuning / PPT), or a plain
input with a linear [CLS] head (P-tuning v2, fine-tuning).

Verbalizer: the template's [MASK] is where the label word goes; masked LMs predict it at the
mask, causal LMs as the next token after the text before the slot, T5 in its decoder after the
sentinel (<extra_id_0>). Label words that are not one token are scored as multiple choice over
the label words (`ptjax.formulations.choice`), so any verbalizer works on any backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ptjax.errors import InputError
from ptjax.formulations.base import (
    EXAMPLE_FIELD, decode_argmax_labels, label_scores, rendered_features, sequence_pad_values,
)
from ptjax.heads.linear import SequenceClassifier
from ptjax.heads.verbalizer import VerbalizerHead
from ptjax.prompts.rendering import SEQ2SEQ_SENTINEL, Renderer
from ptjax.prompts.templates import Template, parse_template
from ptjax.prompts.verbalizers import build_verbalizer
from ptjax.tasks.base import Example

FieldsFn = Callable[[Example], Mapping[str, Any]]


def example_fields(example: Example) -> Mapping[str, Any]:
    return example.fields


def seq2seq_decoder_prefix(tokenizer, decoder_start_id: int) -> list[int]:
    """Decoder input before the label word: the start token, then the sentinel the label follows."""
    return [decoder_start_id, tokenizer.convert_tokens_to_ids(SEQ2SEQ_SENTINEL)]


@dataclasses.dataclass
class VerbalizerClassification:
    """labels: the task's label list (class order); label_words: label -> word(s).

    kind: backbone kind; decoder_start_id: the T5 decoder start token (seq2seq only).
    fields_fn: extra fields derived from an example (e.g. COPA's connective); default its fields.
    loss_over: "labels" (PET) or "vocab".
    """

    template: Template | str
    labels: Sequence[str]
    label_words: Mapping[str, str | Sequence[str]]
    renderer: Renderer
    decoder_start_id: int = 0
    fields_fn: FieldsFn = example_fields
    loss_over: str = "labels"

    def __post_init__(self):
        self.template = parse_template(self.template)
        if not self.template.has_target:
            raise InputError(f"{self.template.describe()}: a verbalizer needs a [MASK] slot for the label word")
        kind, tokenizer = self.renderer.kind, self.renderer.tokenizer
        if kind == "causal_lm":
            self.template = self.template.until_target()
        missing = [label for label in self.labels if label not in self.label_words]
        if missing:
            raise InputError(f"verbalizer has no word for label(s) {missing} (labels: {list(self.labels)})")
        self.verbalizer = build_verbalizer(
            {label: self.label_words[label] for label in self.labels}, tokenizer, kind,
            follows_space=self.template.target_follows_space,
        )
        if not self.verbalizer.is_single_token or self.verbalizer.token_ids.shape[1] != 1:
            raise InputError(
                f"label words {dict(self.label_words)} are not single tokens for this tokenizer; use "
                "head.type='choice' to score multi-token words"
            )
        self.head = VerbalizerHead(label_token_ids=self.verbalizer.label_token_ids(), loss_over=self.loss_over)
        seq2seq = kind == "seq2seq"
        self.pad_values = sequence_pad_values(self.renderer.pad_id, decoder=seq2seq)
        self.length_groups = {"decoder_input_ids": "target_length", "decoder_attention_mask": "target_length"}

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        features = []
        seq2seq = self.renderer.kind == "seq2seq"
        decoder_prefix = (seq2seq_decoder_prefix(self.renderer.tokenizer, self.decoder_start_id) if seq2seq else None)
        for index, example in enumerate(examples):
            rendered = self.renderer(self.template, self.fields_fn(example))
            feature = rendered_features(rendered)
            feature["target_index"] = rendered.target_index
            if seq2seq:
                feature["decoder_input_ids"] = np.asarray(decoder_prefix, np.int32)
                feature["decoder_attention_mask"] = np.ones(len(decoder_prefix), np.int32)
                feature["target_index"] = len(decoder_prefix) - 1
            feature["label"] = self.labels.index(example.label) if example.label is not None else 0
            feature[EXAMPLE_FIELD] = index
            features.append(feature)
        return features

    def decode(self, examples, features, predictions) -> list[str]:
        return decode_argmax_labels(self.labels, features, predictions)

    def scores(self, examples, features, predictions) -> list[dict]:
        return label_scores(self.labels, features, predictions)

    def describe(self) -> dict:
        return {"formulation": "verbalizer", "template": self.template.source,
                "label_words": {k: self.label_words[k] for k in self.labels}}


@dataclasses.dataclass
class LinearClassification:
    """A template without [MASK] (the input, maybe with soft tokens) and a linear head on the
    pooled representation: the backbone's pooler, the first token (encoders), the last real
    token (decoders)."""

    template: Template | str
    labels: Sequence[str]
    renderer: Renderer
    pooling: str = "first"
    dropout: float = 0.1
    fields_fn: FieldsFn = example_fields

    def __post_init__(self):
        self.template = parse_template(self.template)
        if self.template.has_target:
            raise InputError(f"{self.template.describe()}: a [CLS]/linear head needs no [MASK] slot")
        if self.renderer.kind == "seq2seq":
            raise InputError("linear heads are for encoders and decoders; use a verbalizer on T5")
        self.head = SequenceClassifier(label_counts=(len(self.labels),), dropout=self.dropout, pooling=self.pooling)
        self.pad_values = sequence_pad_values(self.renderer.pad_id)
        self.length_groups = {}

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        features = []
        for index, example in enumerate(examples):
            feature = rendered_features(self.renderer(self.template, self.fields_fn(example)))
            feature["label"] = self.labels.index(example.label) if example.label is not None else 0
            feature[EXAMPLE_FIELD] = index
            features.append(feature)
        return features

    def decode(self, examples, features, predictions) -> list[str]:
        return decode_argmax_labels(self.labels, features, predictions)

    def scores(self, examples, features, predictions) -> list[dict]:
        return label_scores(self.labels, features, predictions)

    def describe(self) -> dict:
        return {"formulation": "linear", "template": self.template.source, "pooling": self.pooling}
