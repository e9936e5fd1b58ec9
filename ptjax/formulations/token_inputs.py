"""Token-level inputs for tagging and extractive QA: text and words tokenized with their
character offsets, and the special-token / soft-token layout of a template around them.

Words are aligned to sub-tokens through the tokenizer's character offsets on the words joined
by single spaces: the same tokenization the sentence gets as plain text, for WordPiece (BERT,
MiniLM), byte-level BPE (RoBERTa, GPT-2, Llama, SmolLM2: every word after the first has its
leading space) and sentencepiece alike. A token belongs to the word holding its first
non-space character; a token that is only whitespace (byte-level BPE's lone "Ġ" before
punctuation) belongs to the word that follows it.

Templates for these formulations hold fields, soft tokens [P] and at most one [SEP], nothing
else: "{tokens}", "[P*20] {tokens}", "{tokens} [SEP] {predicate}", "{question} [SEP] {context}".
Each segment gets the tokenizer's own special tokens (`special_layout`); decoders whose
tokenizer puts nothing between two segments get a newline token there instead, so that the
two texts do not run together.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ptjax.errors import InputError
from ptjax.prompts.special_tokens import special_layout
from ptjax.prompts.templates import Field, Mask, Sep, Soft, Template, Text, parse_template

KINDS = ("encoder", "masked_lm", "causal_lm")


def tokenize_with_offsets(tokenizer, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(ids int32 [n], offsets int32 [n, 2])] per text, without special tokens."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [(np.asarray(ids, np.int32), np.asarray(offsets, np.int32).reshape(-1, 2))
            for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"])]


def content_starts(text: str, offsets: np.ndarray) -> np.ndarray:
    """int [n]: each token's first non-space character (its end when it holds only spaces)."""
    starts = np.empty(len(offsets), np.int64)
    for i, (start, end) in enumerate(offsets):
        while start < end and text[start].isspace():
            start += 1
        starts[i] = start
    return starts


def word_spans(words: Sequence[str]) -> tuple[str, list[int], list[int]]:
    """(words joined by single spaces, start and end character of every word)."""
    starts, ends, position = [], [], 0
    for word in words:
        starts.append(position)
        position += len(word)
        ends.append(position)
        position += 1
    return " ".join(words), starts, ends


def token_words(text: str, starts: Sequence[int], ends: Sequence[int], offsets: np.ndarray) -> np.ndarray:
    """int32 [n]: the word each token belongs to (-1: none, e.g. a trailing space token)."""
    owners = np.full(len(offsets), -1, np.int32)
    for i, position in enumerate(content_starts(text, offsets)):
        k = bisect.bisect_right(starts, position) - 1
        if k >= 0 and position < ends[k]:
            owners[i] = k
        elif k + 1 < len(starts):  # whitespace between words: the next word owns it
            owners[i] = k + 1
    return owners


def tokenize_words(tokenizer, sentences: Sequence[Sequence[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(ids int32 [n], word of each token int32 [n])] per sentence of words. A word holding a
    space keeps all its pieces; an empty word gets no token."""
    joined = [word_spans(words) for words in sentences]
    encoded = tokenize_with_offsets(tokenizer, [text for text, _, _ in joined])
    return [(ids, token_words(text, starts, ends, offsets))
            for (ids, offsets), (text, starts, ends) in zip(encoded, joined)]


def first_subtokens(owners: np.ndarray, num_words: int) -> np.ndarray:
    """int [num_words]: index of each word's first token (-1 for a word without tokens)."""
    first = np.full(num_words, -1, np.int64)
    for i in range(len(owners) - 1, -1, -1):
        if owners[i] >= 0:
            first[owners[i]] = i
    return first


@dataclasses.dataclass(frozen=True)
class Assembled:
    """One input sequence. input_ids / token_type_ids / soft_index: int32 [length];
    field_starts: field name -> position of its first token."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    soft_index: np.ndarray
    field_starts: dict[str, int]
    first_special: int  # position of the tokenizer's leading special token ([CLS]), -1 if none


class TemplateLayout:
    """A template of fields, soft tokens and [SEP], laid out for one tokenizer and backbone kind.

    fields: the field names the formulation fills (each must occur exactly once).
    """

    def __init__(self, template: Template | str, tokenizer, kind: str, fields: Sequence[str], *,
                 placeholder_id: int, origin: str = ""):
        self.template = parse_template(template, origin or None)
        if kind not in KINDS:
            raise InputError(f"{self.template.describe()}: token-level heads need an encoder or a decoder "
                             f"backbone, not {kind!r}")
        self.kind, self.tokenizer = kind, tokenizer
        segments: list[list[tuple]] = [[]]
        for piece in self.template.pieces:
            if isinstance(piece, Text):
                if piece.text.strip():
                    raise InputError(f"{self.template.describe()}: text {piece.text.strip()!r} is not allowed here; "
                                     "this template holds only fields, soft tokens [P] and [SEP]")
            elif isinstance(piece, Field):
                if piece.modifiers:
                    raise InputError(f"{self.template.describe()}: field modifiers are not supported here")
                segments[-1].append(("field", piece.name))
            elif isinstance(piece, Soft):
                segments[-1].append(("soft", piece.first_index, piece.count))
            elif isinstance(piece, Sep):
                segments.append([])
            elif isinstance(piece, Mask):
                raise InputError(f"{self.template.describe()}: [MASK] has no use with a token or span head")
        names = [item[1] for segment in segments for item in segment if item[0] == "field"]
        if sorted(names) != sorted(fields):
            raise InputError(f"{self.template.describe()}: needs the fields {list(fields)} exactly once each")
        self.segments = segments
        layout = special_layout(tokenizer, len(segments))
        self.specials = [list(s) for s in layout.specials]
        self.special_types = [list(t) for t in layout.special_types]
        self.segment_types = list(layout.segment_types)
        if len(segments) == 2 and not self.specials[1]:
            newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
            separator = newline or [i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None][:1]
            if not separator:
                raise InputError(f"{type(tokenizer).__name__}: no token to separate two segments")
            self.specials[1] = list(separator)
            self.special_types[1] = [self.segment_types[0]] * len(separator)
        self.placeholder_id = placeholder_id
        self.num_soft_tokens = self.template.num_soft_tokens

    def fixed_length(self, lengths: Mapping[str, int]) -> int:
        """Tokens besides the fields left out of `lengths`: specials, soft tokens, given fields."""
        return sum(map(len, self.specials)) + self.num_soft_tokens + sum(lengths.values())

    def assemble(self, field_ids: Mapping[str, np.ndarray], *, append: Sequence[int] = ()) -> Assembled:
        """The sequence with every field's ids in place; `append`: ids after everything (the
        no-answer position of decoders). A template made `soft_prefix_first` puts its opening
        soft tokens before the leading special tokens."""
        ids, types, soft = [], [], []
        segments = [list(segment) for segment in self.segments]
        if getattr(self.template, "soft_prefix_first", False):
            while segments[0] and segments[0][0][0] == "soft":
                _, first, count = segments[0].pop(0)
                ids += [self.placeholder_id] * count
                soft += range(first, first + count)
                types += [self.segment_types[0]] * count
        first_special = len(ids) if self.specials[0] else -1
        ids += self.specials[0]
        types += self.special_types[0]
        soft += [-1] * len(self.specials[0])
        starts = {}
        for number, segment in enumerate(segments):
            segment_type = self.segment_types[number]
            for item in segment:
                if item[0] == "soft":
                    _, first, count = item
                    ids += [self.placeholder_id] * count
                    soft += range(first, first + count)
                    types += [segment_type] * count
                else:
                    values = [int(i) for i in field_ids[item[1]]]
                    starts[item[1]] = len(ids)
                    ids += values
                    soft += [-1] * len(values)
                    types += [segment_type] * len(values)
            ids += self.specials[number + 1]
            soft += [-1] * len(self.specials[number + 1])
            types += self.special_types[number + 1]
        ids += list(append)
        soft += [-1] * len(append)
        types += [types[-1] if types else 0] * len(append)
        return Assembled(np.asarray(ids, np.int32), np.asarray(types, np.int32), np.asarray(soft, np.int32), starts,
                         first_special)
