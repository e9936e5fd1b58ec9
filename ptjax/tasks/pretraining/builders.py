"""PPT's self-supervised pre-training tasks, built from sentence-split documents.

Each builder turns a stream of `SentencedDocument`s into a stream of `Example`s and carries the
pattern (a ptjax template, see ptjax/prompts/templates.py) and the verbalizer (label -> word) its
format is trained with, as data:

    builder = NextSentencePairs(seed=0)
    builder.pattern, builder.verbalizer     # "{s1} [MASK]. {s2}", {"0": "no", "1": "maybe", "2": "yes"}
    for example in builder.build(sentence_documents(source, shard)): ...

Streaming with bounded memory: documents pass through a short look-ahead queue (`lookahead`
documents) and every sentence that enters is offered to a reservoir sample of `reservoir_size`
sentences; "a sentence from another document" is drawn from that reservoir, so a document early
in the stream still gets partners from the documents right after it. Output depends only on the
documents, their order and the seed.

Sentences shorter than `min_words` or longer than `max_words` (lists, tables, splitter
failures) are never used as a query, pair member or option; adjacency always refers to the
positions in the original document, so skipping a sentence never makes two sentences "adjacent".
"""

from __future__ import annotations

import collections
import random
import string
from typing import Iterable, Iterator, Mapping

from ptjax.errors import InputError
from ptjax.tasks.base import Example
from ptjax.tasks.pretraining.corpus import SentencedDocument

LETTERS = tuple(string.ascii_uppercase[:16])  # option letters A .. P (up to 16 options)


class PretrainingBuilder:
    """What every builder exposes. `task` is the registered task name; `labels` the label list
    in class order; `fields` the names in Example.fields the pattern uses."""

    task: str
    labels: tuple[str, ...]
    fields: tuple[str, ...]
    pattern: str
    verbalizer: Mapping[str, str]

    def __init__(self, *, seed: int = 0, min_words: int = 3, max_words: int = 64,
                 guid_prefix: str | None = None):
        if min_words < 1 or max_words < min_words:
            raise InputError(f"{self.task}: need 1 <= min_words <= max_words, got {min_words}, {max_words}")
        self.seed = seed
        self.min_words = min_words
        self.max_words = max_words
        self.guid_prefix = guid_prefix or self.task

    def usable(self, sentence: str) -> bool:
        return self.min_words <= len(sentence.split()) <= self.max_words

    def build(self, documents: Iterable[SentencedDocument]) -> Iterator[Example]:
        raise NotImplementedError


class _DocumentWindow:
    """Documents with a look-ahead queue, and a reservoir sample of usable sentences of every
    document that entered it: entries (document serial, document where, sentence index, text)."""

    def __init__(self, rng: random.Random, usable, reservoir_size: int, lookahead: int):
        if reservoir_size < 1 or lookahead < 0:
            raise InputError(f"need reservoir_size >= 1 and lookahead >= 0, got {reservoir_size}, {lookahead}")
        self.rng = rng
        self.usable = usable
        self.size = reservoir_size
        self.lookahead = lookahead
        self.reservoir: list[tuple[int, str, int, str]] = []
        self.seen = 0

    def __call__(self, documents: Iterable[SentencedDocument]) -> Iterator[tuple[int, SentencedDocument]]:
        pending: collections.deque = collections.deque()
        for serial, document in enumerate(documents):
            self._offer(serial, document)
            pending.append((serial, document))
            if len(pending) > self.lookahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()

    def _offer(self, serial: int, document: SentencedDocument) -> None:
        for index, sentence in enumerate(document.sentences):
            if not self.usable(sentence):
                continue
            entry = (serial, document.where, index, sentence)
            if len(self.reservoir) < self.size:
                self.reservoir.append(entry)
            else:
                slot = self.rng.randrange(self.seen + 1)
                if slot < self.size:
                    self.reservoir[slot] = entry
            self.seen += 1

    def others(self, serial: int, count: int) -> list[tuple[int, str, int, str]] | None:
        """`count` distinct reservoir sentences from documents other than `serial`, or None."""
        chosen: dict[int, tuple] = {}
        for _ in range(8 * count + 16):  # rejection sampling; the current document is rarely most of it
            if len(chosen) == count or not self.reservoir:
                break
            slot = self.rng.randrange(len(self.reservoir))
            if self.reservoir[slot][0] != serial:
                chosen[slot] = self.reservoir[slot]
        if len(chosen) < count:
            slots = [s for s, e in enumerate(self.reservoir) if e[0] != serial and s not in chosen]
            if len(slots) < count - len(chosen):
                return None
            for slot in self.rng.sample(slots, count - len(chosen)):
                chosen[slot] = self.reservoir[slot]
        return list(chosen.values())


class _SentenceBuilder(PretrainingBuilder):
    """Builders that walk documents sentence by sentence and need other documents' sentences."""

    def __init__(self, *, seed: int = 0, min_words: int = 3, max_words: int = 64,
                 reservoir_size: int = 10_000, lookahead: int = 2, max_per_document: int | None = None,
                 guid_prefix: str | None = None):
        super().__init__(seed=seed, min_words=min_words, max_words=max_words, guid_prefix=guid_prefix)
        self.reservoir_size = reservoir_size
        self.lookahead = lookahead
        self.max_per_document = max_per_document

    def build(self, documents: Iterable[SentencedDocument]) -> Iterator[Example]:
        rng = random.Random(self.seed)
        window = _DocumentWindow(rng, self.usable, self.reservoir_size, self.lookahead)
        state = self._start()
        number = 0
        for serial, document in window(documents):
            usable = [i for i, s in enumerate(document.sentences) if self.usable(s)]
            usable_set = set(usable)
            anchors = [i for i in usable if i + 1 in usable_set]
            if self.max_per_document is not None and len(anchors) > self.max_per_document:
                anchors = sorted(rng.sample(anchors, self.max_per_document))
            for anchor in anchors:
                far = _FarSentences(rng, usable, usable_set, anchor)
                example = self._example(rng, window, state, serial, document, anchor, far,
                                        f"{self.guid_prefix}-{number}")
                if example is not None:
                    number += 1
                    yield example

    def _start(self) -> dict:
        """Fresh per-build state (class counts)."""
        return {}

    def _example(self, rng, window, state, serial, document, anchor, far, guid) -> Example | None:
        raise NotImplementedError


class _FarSentences:
    """Usable sentences of the anchor's document that are not adjacent to it (either side)."""

    def __init__(self, rng: random.Random, usable: list[int], usable_set: set[int], anchor: int):
        self.rng, self.usable, self.anchor = rng, usable, anchor
        self.count = len(usable) - sum(i in usable_set for i in (anchor - 1, anchor, anchor + 1))

    def sample(self, count: int) -> list[int]:
        """min(count, available) distinct indices; rejection sampling keeps long documents cheap."""
        if self.count <= count:
            return [i for i in self.usable if abs(i - self.anchor) > 1]
        chosen: list[int] = []
        while len(chosen) < count:
            index = self.rng.choice(self.usable)
            if abs(index - self.anchor) > 1 and index not in chosen:
                chosen.append(index)
        return chosen


class NextSentencePairs(_SentenceBuilder):
    """Sentence-pair format (PPT section 3.2.1): label "2" when s2 directly follows s1, "1" when
    s2 is another sentence of the same document not adjacent to s1 (neither side), "0" when s2
    comes from a different document. Each pair gets, among the labels possible for it, the label
    produced least so far (ties broken at random), so the three classes stay balanced.
    Pattern: the paper's "s1 <X> .s2" with s1 keeping its own final punctuation ("It rained.
    yes. The river rose."); on T5 [MASK] renders as the sentinel, as in the paper."""

    task = "ppt_nsp"
    labels = ("0", "1", "2")
    fields = ("s1", "s2")
    pattern = "{s1} [MASK]. {s2}"
    verbalizer = {"0": "no", "1": "maybe", "2": "yes"}

    def _start(self):
        return {"counts": [0, 0, 0]}

    def _example(self, rng, window, state, serial, document, anchor, far, guid):
        counts = state["counts"]
        other = window.others(serial, 1)
        possible = [label for label, ok in ((0, other is not None), (1, far.count > 0), (2, True)) if ok]
        fewest = min(counts[label] for label in possible)
        label = rng.choice([label for label in possible if counts[label] == fewest])
        counts[label] += 1
        meta = {"where": document.where, "s1_index": anchor}
        if label == 2:
            second = document.sentences[anchor + 1]
            meta.update(s2_where=document.where, s2_index=anchor + 1)
        elif label == 1:
            (index,) = far.sample(1)
            second = document.sentences[index]
            meta.update(s2_where=document.where, s2_index=index)
        else:
            _, where, index, second = other[0]
            meta.update(s2_where=where, s2_index=index)
        return Example(guid, {"s1": document.sentences[anchor], "s2": second}, str(label), meta)


class SentenceSelection(_SentenceBuilder):
    """Multiple-choice format (PPT section 3.2.2): a query sentence and six shuffled candidates,
    the sentence that directly follows it, one sentence of the same document not adjacent to
    it, and four sentences of other documents; the label is the letter of the true next one.
    Pattern: the paper's "s_q? A.s1 ... F.s6. Answer is <X>." (the query's final punctuation
    becomes "?", the last option's becomes the "." before "Answer is")."""

    task = "ppt_nss"
    num_options = 6
    labels = LETTERS[:6]
    fields = ("query",) + tuple(letter.lower() for letter in LETTERS[:6])
    pattern = ("{query|rstrip_punct}? A. {a} B. {b} C. {c} D. {d} E. {e} F. {f|rstrip_punct}. "
               "Answer is [MASK].")
    verbalizer = {letter: letter for letter in LETTERS[:6]}

    fill_from_other_documents = False  # the paper's six options always include a same-document one

    def _shape(self, rng: random.Random) -> tuple[int, int, int | None]:
        """(number of options, how many from the same document, option length cap in words)."""
        return self.num_options, 1, None

    def _example(self, rng, window, state, serial, document, anchor, far, guid):
        count, same, cap = self._shape(rng)
        same_indices = far.sample(same)
        if len(same_indices) < same and not self.fill_from_other_documents:
            return None
        others = window.others(serial, count - 1 - len(same_indices))
        if others is None:
            return None
        candidates = [(document.where, anchor + 1, document.sentences[anchor + 1])]
        candidates += [(document.where, i, document.sentences[i]) for i in same_indices]
        candidates += [(where, index, text) for _, where, index, text in others]
        order = list(range(count))
        rng.shuffle(order)
        options = [candidates[k] for k in order]
        answer = order.index(0)
        texts = tuple(_cut(text, cap) for _, _, text in options)
        if len(set(texts)) < count:
            return None  # a sentence repeated across documents (boilerplate) would be ambiguous
        fields = {"query": document.sentences[anchor], "choices": texts}
        fields.update({letter.lower(): text for letter, text in zip(LETTERS, texts)})
        fields["options"] = " ".join(f"{letter}. {text}" for letter, text in zip(LETTERS, texts))
        meta = {"where": document.where, "query_index": anchor, "num_options": count,
                "answer_index": answer, "option_sources": [[where, index] for where, index, _ in options]}
        return Example(guid, fields, LETTERS[answer], meta)


class UnifiedChoice(SentenceSelection):
    """Unified multiple choice (PPT section 3.3): next-sentence selection with a number of
    options drawn uniformly from `min_options`..`max_options` (paper: 2 to 16) and option
    length caps falling linearly from 50 words at 2 options to 20 words at 16 (paper: "option
    lengths from 50 to 20"). About one distractor in five comes from the query's own document
    (one of the six in next-sentence selection), the rest from other documents; when the
    document has too few sentences, other documents fill in."""

    task = "ppt_unified_mc"
    fill_from_other_documents = True
    labels = LETTERS
    fields = ("query", "options")
    pattern = "{query|rstrip_punct}? {options|rstrip_punct}. Answer is [MASK]."
    verbalizer = {letter: letter for letter in LETTERS}

    def __init__(self, *, min_options: int = 2, max_options: int = 16, longest_option: int = 50,
                 shortest_option: int = 20, **options):
        super().__init__(**options)
        if not 2 <= min_options <= max_options <= len(LETTERS):
            raise InputError(f"{self.task}: need 2 <= min_options <= max_options <= {len(LETTERS)}, "
                             f"got {min_options}, {max_options}")
        self.min_options, self.max_options = min_options, max_options
        self.longest_option, self.shortest_option = longest_option, shortest_option

    def option_words(self, count: int) -> int:
        """The word cap of each option when there are `count` options."""
        fraction = (count - 2) / (len(LETTERS) - 2)
        return round(self.longest_option + (self.shortest_option - self.longest_option) * fraction)

    def _shape(self, rng):
        count = rng.randint(self.min_options, self.max_options)
        return count, max(1, round((count - 1) / 5)), self.option_words(count)


def _cut(text: str, cap: int | None) -> str:
    words = text.split()
    return text if cap is None or len(words) <= cap else " ".join(words[:cap])
