"""Extractive QA (SQuAD 1.1 / 2.0) with a start/end span head over sliding context windows.

Input: "{question} [SEP] {context}" in the method's template ("[P*n] {question} [SEP] {context}"
for Lester). The question is cut to `max_question_length` tokens; the context is tokenized once
with character offsets and cut into windows of what max_length leaves, consecutive windows
overlapping by `doc_stride` tokens (Hugging Face's meaning of the word), so every context
token, and so every character, is in some window.

Targets: the answer's first and last token when the window holds the whole answer (the first
gold answer of the example); otherwise, and for unanswerable SQuAD 2.0 questions, the
"no answer" position: the leading special token ([CLS] / <s>) for encoders. A decoder's first token sees
nothing, so decoders get one more token after the context (the tokenizer's end-of-sequence
token), which has seen the question and the whole window; it is their no-answer position (and
an encoder's whose tokenizer puts no special token first).

Decoding (per example, over all its windows): the n_best highest start and end logits among
context tokens give candidate spans with end >= start and at most max_answer_length tokens,
scored start + end; the best over all windows wins. The no-answer score is the lowest
start + end at the no-answer position over the windows. With no-answer allowed (SQuAD 2.0),
the answer is "" when null score - best span score > null_threshold. The answer text is the
context's characters from the start token's first non-space character to the end token's end.

Features: input_ids, attention_mask, token_type_ids, soft_index, context_mask [length];
start_position, end_position, null_index, window_start (context token index of the window's
first token), context_start (its input position), example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ptjax.errors import InputError
from ptjax.eval.metrics import best_no_answer_threshold
from ptjax.formulations.base import EXAMPLE_FIELD, sequence_pad_values
from ptjax.formulations.token_inputs import TemplateLayout, content_starts, tokenize_with_offsets
from ptjax.heads.linear import SpanExtractor
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.templates import Template
from ptjax.tasks.base import Example

QA_FIELDS = ("question", "context")


def window_starts(num_tokens: int, window: int, doc_stride: int, where: str = "") -> list[int]:
    """First context token of each window: windows of `window` tokens overlapping by doc_stride
    tokens, the last one reaching the end of the context (one window for a short context)."""
    if num_tokens > window and doc_stride >= window:
        raise InputError(f"{where + ': ' if where else ''}doc_stride={doc_stride} must be smaller than the {window} "
                         "context tokens per window (raise task.max_length or lower doc_stride / max_question_length)")
    starts = [0]
    while starts[-1] + window < num_tokens:
        starts.append(starts[-1] + window - doc_stride)
    return starts


def answer_token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int] | None:
    """(first, last) context token covering the characters [char_start, char_end), or None."""
    ends_after = np.flatnonzero(offsets[:, 1] > char_start)
    starts_before = np.flatnonzero(offsets[:, 0] < char_end)
    if not len(ends_after) or not len(starts_before) or ends_after[0] > starts_before[-1]:
        return None
    return int(ends_after[0]), int(starts_before[-1])


class Span(NamedTuple):
    score: float
    window: int  # which of the example's windows
    start: int  # input positions within that window
    end: int


def best_span(start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
              candidates: Sequence[np.ndarray], *, max_answer_length: int, n_best: int = 20) -> Span | None:
    """The highest start + end logit span over an example's windows.

    start_logits / end_logits: per window, float [length]; candidates: per window, bool [length]
    True at context tokens (where a span may start or end). Spans have end >= start and at most
    max_answer_length tokens; only the n_best best starts and ends of each window are tried.
    """
    best = None
    for window, (starts, ends, allowed) in enumerate(zip(start_logits, end_logits, candidates)):
        positions = np.flatnonzero(allowed)
        if not len(positions):
            continue
        starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
        top_starts = positions[np.argsort(-starts[positions], kind="stable")[:n_best]]
        top_ends = positions[np.argsort(-ends[positions], kind="stable")[:n_best]]
        for s in top_starts:
            for e in top_ends:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(starts[s] + ends[e])
                if best is None or score > best.score:
                    best = Span(score, window, int(s), int(e))
    return best


def null_score(start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
               null_positions: Sequence[int]) -> float:
    """The lowest no-answer score (start + end logit at the no-answer position) over windows."""
    return min(float(s[p]) + float(e[p]) for s, e, p in zip(start_logits, end_logits, null_positions))


@dataclasses.dataclass
class ExtractiveQA:
    """renderer: tokenizer, backbone kind, max_length. allow_no_answer: SQuAD 2.0 (the empty
    answer may win); without it the best span is always the answer."""

    template: Template | str
    renderer: Renderer
    allow_no_answer: bool = False
    doc_stride: int = 128
    max_question_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_threshold: float = 0.0
    dropout: float = 0.1

    def __post_init__(self):
        tokenizer, kind = self.renderer.tokenizer, self.renderer.kind
        self.layout = TemplateLayout(self.template, tokenizer, kind, QA_FIELDS,
                                     placeholder_id=self.renderer.placeholder_id, origin="extractive QA")
        self.template = self.layout.template
        for name in ("doc_stride", "max_question_length", "max_answer_length", "n_best"):
            if int(getattr(self, name)) < (0 if name == "doc_stride" else 1):
                raise InputError(f"config.task.options.{name}={getattr(self, name)!r} is out of range")
        self.null_token = []
        if kind == "causal_lm" or not self.layout.specials[0]:
            end = next((i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
                        if i is not None), None)
            if end is None:
                raise InputError(f"{type(tokenizer).__name__}: no end-of-sequence token for the no-answer position")
            self.null_token = [end]
        self.head = SpanExtractor(label_counts=(2,), dropout=self.dropout)
        self.pad_values = {**sequence_pad_values(self.renderer.pad_id), "context_mask": 0}
        self.length_groups = {}
        self.stats = {"examples": 0, "windows": 0, "answer_windows": 0}
        self.span_texts: dict[str, str] = {}
        self.null_score_diffs: dict[str, float] = {}

    def _contexts(self, examples: Sequence[Example]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """context text -> (ids, offsets), tokenized once per distinct context."""
        texts = list(dict.fromkeys(e.fields["context"] for e in examples))
        return dict(zip(texts, tokenize_with_offsets(self.renderer.tokenizer, texts)))

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        tokenizer, max_length = self.renderer.tokenizer, self.renderer.max_length
        contexts = self._contexts(examples)
        questions = tokenize_with_offsets(tokenizer, [e.fields["question"].strip() for e in examples])
        features = []
        for index, example in enumerate(examples):
            where = example.meta.get("where", example.guid)
            question = questions[index][0][: self.max_question_length]
            ids, offsets = contexts[example.fields["context"]]
            window = max_length - self.layout.fixed_length({"question": len(question)}) - len(self.null_token)
            if window < 1:
                raise InputError(f"{where}: task.max_length={max_length} leaves no room for the context")
            span = None
            answers = example.meta.get("answers") or ()
            if answers:
                text, char_start = answers[0]
                span = answer_token_span(offsets, char_start, char_start + len(text))
                if span is None:
                    raise InputError(f"{where}: the answer {text!r} covers no context token")
            starts = window_starts(len(ids), window, self.doc_stride, where)
            self.stats["examples"] += 1
            self.stats["windows"] += len(starts)
            for first in starts:
                last = min(first + window, len(ids))
                assembled = self.layout.assemble({"question": question, "context": ids[first:last]},
                                                 append=self.null_token)
                length = len(assembled.input_ids)
                context_start = assembled.field_starts["context"]
                null_index = length - 1 if self.null_token else assembled.first_special
                context_mask = np.zeros(length, np.int32)
                context_mask[context_start:context_start + last - first] = 1
                if null_index:  # the span head scores the context mask's positions and position 0
                    context_mask[null_index] = 1
                start_position = end_position = null_index
                if span is not None and first <= span[0] and span[1] < last:
                    start_position = context_start + span[0] - first
                    end_position = context_start + span[1] - first
                    self.stats["answer_windows"] += 1
                features.append({
                    "input_ids": assembled.input_ids, "attention_mask": np.ones(length, np.int32),
                    "token_type_ids": assembled.token_type_ids, "soft_index": assembled.soft_index,
                    "context_mask": context_mask, "start_position": start_position, "end_position": end_position,
                    "null_index": null_index, "window_start": first, "context_start": context_start,
                    EXAMPLE_FIELD: index,
                })
        return features

    def decode(self, examples: Sequence[Example], features: Sequence[dict], predictions: Sequence[dict]) -> list[str]:
        """One answer string per example ("" for no answer). Also keeps, per guid, the best
        span's text (span_texts) and null score - best span score (null_score_diffs: +inf
        without any span), for a threshold search (`best_null_threshold`)."""
        contexts = self._contexts(examples)
        per_example: list[list[tuple[dict, dict]]] = [[] for _ in examples]
        for feature, prediction in zip(features, predictions):
            per_example[feature[EXAMPLE_FIELD]].append((feature, prediction))
        self.span_texts, self.null_score_diffs = {}, {}
        answers = []
        for example, windows in zip(examples, per_example):
            text, difference = "", float("inf")
            if windows:
                text, difference = self._best_answer(example, windows, contexts)
            self.span_texts[example.guid], self.null_score_diffs[example.guid] = text, difference
            answers.append("" if self.allow_no_answer and difference > self.null_threshold else text)
        return answers

    def _best_answer(self, example: Example, windows: list[tuple[dict, dict]], contexts) -> tuple[str, float]:
        """(best span text or "", its null score difference) over one example's windows."""
        starts = [np.asarray(p["start_logits"], np.float64) for _, p in windows]
        ends = [np.asarray(p["end_logits"], np.float64) for _, p in windows]
        candidates = []
        for (feature, _), logits in zip(windows, starts):
            allowed = np.zeros(len(logits), bool)
            mask = np.asarray(feature["context_mask"], bool)
            allowed[: len(mask)] = mask
            allowed[feature["null_index"]] = False
            candidates.append(allowed)
        span = best_span(starts, ends, candidates, max_answer_length=self.max_answer_length, n_best=self.n_best)
        if span is None:
            return "", float("inf")
        feature = windows[span.window][0]
        context = example.fields["context"]
        _, offsets = contexts[context]
        first = feature["window_start"] + span.start - feature["context_start"]
        last = feature["window_start"] + span.end - feature["context_start"]
        char_start = int(content_starts(context, offsets[first:first + 1])[0])
        null = null_score(starts, ends, [f["null_index"] for f, _ in windows])
        return context[char_start:int(offsets[last, 1])].strip(), null - span.score

    def best_null_threshold(self, examples: Sequence[Example]) -> tuple[float, float]:
        """(best SQuAD 2.0 F1, the null_threshold reaching it) over the last decoded examples,
        as the official 2.0 script searches it (labelled examples only)."""
        labeled = [e for e in examples if e.label is not None]
        references = {e.guid: list(e.label) for e in labeled}
        return best_no_answer_threshold({e.guid: self.span_texts[e.guid] for e in labeled}, references,
                                        {e.guid: self.null_score_diffs[e.guid] for e in labeled})

    def scores(self, examples: Sequence[Example], features: Sequence[dict], predictions: Sequence[dict]) -> list[dict]:
        """{"best_span": the best non-null span's text, "null_score_diff": null score minus its
        score (None without any span)} per example, from the last decode."""
        return [{"best_span": self.span_texts[e.guid], "null_score_diff": self.null_score_diffs[e.guid]}
                for e in examples]

    def describe(self) -> dict:
        return {"formulation": "extractive_qa", "template": self.template.source, "doc_stride": self.doc_stride,
                "max_question_length": self.max_question_length, "max_answer_length": self.max_answer_length,
                "allow_no_answer": self.allow_no_answer, "null_threshold": self.null_threshold}
