"""Verbalizers: class labels -> answer words -> token ids, for scoring with a language-model head.

    verbalizer = build_verbalizer({"entailment": "yes", "not_entailment": "no"}, tokenizer,
                                  "masked_lm", follows_space=template.target_follows_space)
    verbalizer.label_token_ids()      # [num_labels] when every label is one single-token word
    verbalizer.token_ids, .lengths    # [num_labels, max_words, max_tokens], [num_labels, max_words]

Words are tokenized as they appear after the slot: with a leading space (byte-level BPE 'Ġ',
sentencepiece '▁') when the template has whitespace before [MASK], without otherwise. Uncased
tokenizers (BERT uncased) lowercase the words themselves. For seq2seq backbones a word is a
decoder target that follows the sentinel: rows are <extra_id_0> w1 ... wn (prefix_length 1),
optionally followed by EOS. A label may have several words (PET's several verbalizations);
heads aggregate over the words with `word_mask`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ptjax.errors import InputError
from ptjax.prompts.rendering import KINDS, SEQ2SEQ_SENTINEL


def tokenize_word(tokenizer, word: str, *, follows_space: bool = True) -> list[int]:
    """Token ids of `word` as it appears in running text, after a space when follows_space.

    The word is tokenized behind an anchor ("a <word>") and the anchor's tokens dropped, so
    tokenizers that mark word starts ('Ġ', '▁') give the in-context form.
    """
    if not follows_space:
        return list(tokenizer(word, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    anchor = "a "
    enc = tokenizer(anchor + word, add_special_tokens=False, return_offsets_mapping=True,
                    split_special_tokens=True)
    return [i for i, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]) if start >= 1]


@dataclasses.dataclass(frozen=True)
class Verbalizer:
    """Label words of a task as token ids for one tokenizer.

    labels: the label values, in class-index order.
    words: per label, its word(s) (lowercased for uncased tokenizers).
    token_ids: int32 [num_labels, max_words, max_tokens], padded with pad_id.
    lengths: int32 [num_labels, max_words]: tokens per word, 0 where a label has fewer words.
    prefix_length: leading tokens every row shares (the seq2seq sentinel), 0 otherwise.
    suffix_length: trailing tokens every row ends with (seq2seq EOS), 0 otherwise.
    """

    labels: tuple[Any, ...]
    words: tuple[tuple[str, ...], ...]
    token_ids: np.ndarray
    lengths: np.ndarray
    prefix_length: int = 0
    suffix_length: int = 0
    pad_id: int = 0

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def max_tokens(self) -> int:
        return int(self.token_ids.shape[-1])

    @property
    def word_mask(self) -> np.ndarray:
        """bool [num_labels, max_words]: True where the label has that word."""
        return self.lengths > 0

    @property
    def is_single_token(self) -> bool:
        extra = self.prefix_length + self.suffix_length
        return bool(np.all(self.lengths[self.word_mask] == extra + 1))

    def label_index(self, label: Any) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise InputError(f"unknown label {label!r} (the verbalizer knows {list(self.labels)})") from None

    def single_token_ids(self) -> np.ndarray:
        """int32 [num_labels, max_words]: each word's one token (pad_id where no word).

        Raises InputError naming the words that are not one token (prefix excluded)."""
        self._require_single_token()
        return self.token_ids[:, :, self.prefix_length]

    def label_token_ids(self) -> np.ndarray:
        """int32 [num_labels]: the token of each label's single word."""
        if self.token_ids.shape[1] != 1:
            raise InputError(
                "label_token_ids needs one word per label; this verbalizer has several: use single_token_ids"
            )
        return self.single_token_ids()[:, 0]

    def _require_single_token(self) -> None:
        extra = self.prefix_length + self.suffix_length
        bad = [
            f"{word!r} ({length - extra} tokens)"
            for label_words, label_lengths in zip(self.words, self.lengths)
            for word, length in zip(label_words, label_lengths)
            if length != extra + 1
        ]
        if bad:
            raise InputError(
                f"verbalizer words are not single tokens for this tokenizer: {', '.join(bad)}; "
                "choose single-token words or score them as multi-token labels"
            )


def build_verbalizer(
    label_words: Mapping[Any, str | Sequence[str]] | Sequence[str | Sequence[str]],
    tokenizer,
    kind: str,
    *,
    follows_space: bool = True,
    single_token: bool = False,
    sentinel: bool | None = None,
    eos: bool = False,
) -> Verbalizer:
    """Tokenize label words.

    label_words: {label: word or [words]} in class order, or a list (the label is the index).
    kind: the backbone kind ("masked_lm" | "encoder" | "causal_lm" | "seq2seq").
    follows_space: the slot follows whitespace (Template.target_follows_space).
    single_token: raise InputError unless every word is one token and no two labels share one.
    sentinel (seq2seq): start each row with <extra_id_0>, as the decoder does after a sentinel
      mask in the input; default: when the tokenizer has it. eos (seq2seq): end rows with EOS.
    """
    if kind not in KINDS:
        raise InputError(f"unknown backbone kind {kind!r} (known: {', '.join(KINDS)})")
    if isinstance(label_words, Mapping):
        labels, raw = tuple(label_words), list(label_words.values())
    else:
        raw = list(label_words)
        labels = tuple(range(len(raw)))
    if not labels:
        raise InputError("a verbalizer needs at least one label")
    lowercase = bool(getattr(tokenizer, "do_lower_case", False))
    words = []
    for label, entry in zip(labels, raw):
        entry = (entry,) if isinstance(entry, str) else tuple(entry)
        if not entry or any(not isinstance(w, str) or not w.strip() for w in entry):
            raise InputError(f"label {label!r}: verbalizer words must be non-empty strings, got {entry!r}")
        words.append(tuple(w.strip().lower() if lowercase else w.strip() for w in entry))

    prefix, suffix = [], []
    if kind == "seq2seq":
        sentinel_id = tokenizer.convert_tokens_to_ids(SEQ2SEQ_SENTINEL)
        has_sentinel = sentinel_id is not None and sentinel_id != tokenizer.unk_token_id
        if sentinel is None:
            sentinel = has_sentinel
        if sentinel and not has_sentinel:
            raise InputError(f"the tokenizer has no {SEQ2SEQ_SENTINEL} sentinel")
        prefix = [sentinel_id] if sentinel else []
        suffix = [tokenizer.eos_token_id] if eos else []

    rows = [[prefix + tokenize_word(tokenizer, w, follows_space=follows_space) + suffix for w in label_words]
            for label_words in words]
    for label, ws, label_rows in zip(labels, words, rows):
        for word, row in zip(ws, label_rows):
            if len(row) == len(prefix) + len(suffix):
                raise InputError(f"label {label!r}: word {word!r} tokenizes to nothing")
    max_words = max(len(ws) for ws in words)
    max_tokens = max(len(row) for label_rows in rows for row in label_rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    token_ids = np.full((len(labels), max_words, max_tokens), pad_id, np.int32)
    lengths = np.zeros((len(labels), max_words), np.int32)
    for i, label_rows in enumerate(rows):
        for j, row in enumerate(label_rows):
            token_ids[i, j, : len(row)] = row
            lengths[i, j] = len(row)
    verbalizer = Verbalizer(labels, tuple(words), token_ids, lengths, len(prefix), len(suffix), pad_id)

    if single_token:
        verbalizer._require_single_token()
        owner: dict[int, Any] = {}
        for label, ids, mask in zip(labels, verbalizer.single_token_ids(), verbalizer.word_mask):
            for token in ids[mask]:
                other = owner.setdefault(int(token), label)
                if other != label:
                    raise InputError(f"labels {other!r} and {label!r} share the token {int(token)}")
    return verbalizer
