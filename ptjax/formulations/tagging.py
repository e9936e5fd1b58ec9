"""Sequence tagging (NER, SRL) with a token-classification head, as P-tuning v2 does it.

Input: the sentence's words, tokenized as text (`token_inputs`), inside the method's template:
"{tokens}" (fine-tuning, P-tuning v2), "[P*n] {tokens}" (Lester: soft tokens after the leading
special token, labels IGNORE there). SRL appends the predicate as a second segment,
"{tokens} [SEP] {predicate}", and labels only the sentence's words.

Labels: the word's tag on its first sub-token; continuations, special tokens, soft tokens, the
predicate segment and padding are IGNORE. Decoders (causal attention) tag from their final
hidden states, so a token sees only its left context: a known limitation kept as it is.

Sentences longer than max_length are cut at a word boundary; the words cut off (and words the
tokenizer drops entirely, e.g. a lone control character) are predicted "O" so that every word
gets a tag. `stats` counts them.

Features: input_ids, attention_mask, token_type_ids, soft_index, labels [length] and
word_index [length] (the word a first sub-token starts, -1 elsewhere), example.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from ptjax.errors import InputError
from ptjax.formulations.base import EXAMPLE_FIELD, sequence_pad_values
from ptjax.formulations.token_inputs import TemplateLayout, first_subtokens, tokenize_words
from ptjax.heads.base import IGNORE
from ptjax.heads.linear import TokenClassifier
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.templates import Template, parse_template
from ptjax.tasks.base import Example

log = logging.getLogger(__name__)

WORDS_FIELD = "tokens"


@dataclasses.dataclass
class TaggingStats:
    """Counts over every featurized example."""

    examples: int = 0
    words: int = 0
    truncated_examples: int = 0
    truncated_words: int = 0  # cut off by max_length: predicted "O"
    untokenized_words: int = 0  # no sub-token at all: predicted "O"
    unknown_tags: int = 0  # gold tags outside the label set: not trained on

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TokenTagging:
    """labels: the tag set in head order; template: fields "tokens" (and any other text fields,
    e.g. "predicate"), soft tokens and [SEP]; renderer: tokenizer, backbone kind, max_length."""

    template: Template | str
    labels: Sequence[str]
    renderer: Renderer
    dropout: float = 0.1

    def __post_init__(self):
        self.labels = tuple(self.labels)
        if not self.labels:
            raise InputError("a tagging task needs at least one tag")
        self.label_ids = {label: i for i, label in enumerate(self.labels)}
        tokenizer, kind = self.renderer.tokenizer, self.renderer.kind
        names = list(parse_template(self.template, "tagging").field_names)
        if WORDS_FIELD not in names:
            raise InputError(f"tagging template {self.template!r} has no {{{WORDS_FIELD}}} field")
        self.layout = TemplateLayout(self.template, tokenizer, kind, names, placeholder_id=self.renderer.placeholder_id,
                                     origin="tagging")
        self.template = self.layout.template
        self.text_fields = [n for n in names if n != WORDS_FIELD]
        self.head = TokenClassifier(label_counts=(len(self.labels),), dropout=self.dropout)
        self.pad_values = {**sequence_pad_values(self.renderer.pad_id), "labels": IGNORE, "word_index": -1}
        self.length_groups = {}
        self.stats = TaggingStats()

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        tokenizer, max_length = self.renderer.tokenizer, self.renderer.max_length
        sentences = tokenize_words(tokenizer, [e.fields[WORDS_FIELD] for e in examples])
        texts = {name: tokenizer([str(e.fields[name]).strip() for e in examples], add_special_tokens=False)["input_ids"]
                 for name in self.text_fields} if examples else {}
        features, before = [], dataclasses.replace(self.stats)
        for index, (example, (ids, owners)) in enumerate(zip(examples, sentences)):
            words = example.fields[WORDS_FIELD]
            where = example.meta.get("where", example.guid)
            others = {name: np.asarray(texts[name][index], np.int32) for name in self.text_fields}
            budget = max_length - self.layout.fixed_length({n: len(v) for n, v in others.items()})
            if budget < 1:
                raise InputError(f"{where}: task.max_length={max_length} leaves no room for the sentence "
                                 f"(special tokens, soft tokens and {self.text_fields} take it all)")
            kept_words = len(words)
            if len(ids) > budget:  # cut before the first word that does not fit whole
                kept_words = int(owners[budget]) if owners[budget] >= 0 else int(owners[:budget].max()) + 1
                keep = (owners >= 0) & (owners < kept_words)
                keep[budget:] = False
                ids, owners = ids[keep], owners[keep]
            assembled = self.layout.assemble({WORDS_FIELD: ids, **others})
            offset = assembled.field_starts[WORDS_FIELD]
            first = first_subtokens(owners, len(words))
            labels = np.full(len(assembled.input_ids), IGNORE, np.int32)
            word_index = np.full(len(assembled.input_ids), -1, np.int32)
            tags = example.label
            if tags is not None and len(tags) != len(words):
                raise InputError(f"{where}: {len(tags)} tags for {len(words)} words")
            for word in range(kept_words):
                if first[word] < 0:
                    self.stats.untokenized_words += 1
                    continue
                position = offset + int(first[word])
                word_index[position] = word
                if tags is not None:
                    label = self.label_ids.get(tags[word])
                    if label is None:
                        self.stats.unknown_tags += 1
                    else:
                        labels[position] = label
            self.stats.examples += 1
            self.stats.words += len(words)
            self.stats.truncated_words += len(words) - kept_words
            self.stats.truncated_examples += int(kept_words < len(words))
            features.append({
                "input_ids": assembled.input_ids, "attention_mask": np.ones_like(assembled.input_ids),
                "token_type_ids": assembled.token_type_ids, "soft_index": assembled.soft_index,
                "labels": labels, "word_index": word_index, EXAMPLE_FIELD: index,
            })
        new = {k: v - getattr(before, k) for k, v in self.stats.as_dict().items()}
        if new["truncated_words"] or new["untokenized_words"] or new["unknown_tags"]:
            log.warning("tagging: %d of %d sentences cut to max_length %d (%d words predicted 'O'); %d words without "
                        "sub-tokens; %d gold tags outside the label set", new["truncated_examples"], new["examples"],
                        max_length, new["truncated_words"], new["untokenized_words"], new["unknown_tags"])
        return features

    def decode(self, examples: Sequence[Example], features: Sequence[dict], predictions: Sequence[dict]) -> list[tuple]:
        """One tag per word: the prediction at its first sub-token, "O" for words without one."""
        answers: list[list[str] | None] = [None] * len(examples)
        for feature, prediction in zip(features, predictions):
            example = examples[feature[EXAMPLE_FIELD]]
            tags = ["O"] * len(example.fields[WORDS_FIELD])
            predicted = np.asarray(prediction["prediction"])
            word_index = feature["word_index"]
            for position in np.flatnonzero(word_index >= 0):
                tags[word_index[position]] = self.labels[int(predicted[position])]
            answers[feature[EXAMPLE_FIELD]] = tags
        return [tuple(tags) if tags is not None else ("O",) * len(e.fields[WORDS_FIELD])
                for tags, e in zip(answers, examples)]

    def scores(self, examples: Sequence[Example], features: Sequence[dict], predictions: Sequence[dict]) -> list[dict]:
        """{"tag_probability": per word, the probability of its predicted tag (None for a word the
        model never saw)}."""
        out: list[list[float | None]] = [[None] * len(e.fields[WORDS_FIELD]) for e in examples]
        for feature, prediction in zip(features, predictions):
            probability, word_index = np.asarray(prediction["probability"]), feature["word_index"]
            for position in np.flatnonzero(word_index >= 0):
                out[feature[EXAMPLE_FIELD]][word_index[position]] = float(probability[position])
        return [{"tag_probability": words} for words in out]

    def describe(self) -> dict:
        return {"formulation": "tagging", "template": self.template.source, "labels": list(self.labels)}
