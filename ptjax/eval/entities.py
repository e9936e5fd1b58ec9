"""Entity-level precision, recall and F1 over tag sequences, as conlleval and seqeval count them.

Two ways to read entities out of tags:
    "conlleval"  conlleval's chunk rules (seqeval's default mode): B/I/E/S prefixes, an I- after O
                 or after another type opens a chunk (IOB1 tolerance), a type change closes one.
                 L- and U- (BILOU) are read as E- and S-.
    "strict"     IOB2 only (seqeval mode="strict", scheme=IOB2): a chunk is B-X followed by I-X;
                 a stray I-X is not an entity; a tag other than O, B-X, I-X is an error.

Entities are (type, start, end) with `end` exclusive. Scores count an entity as right when its
type and both boundaries match; micro sums counts over types, macro averages per-type scores, and
weighted averages them by gold support (seqeval's classification_report rows).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

_PREFIX_ALIASES = {"L": "E", "U": "S"}


def _split(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, _, type_ = tag.partition("-")
    return _PREFIX_ALIASES.get(prefix, prefix), type_


def _chunks_conlleval(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    chunks = []
    start = None
    previous, previous_type = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, type_ = _split(tag)
        ends = previous != "O" and (previous in ("E", "S") or previous_type != type_
                                    or (previous in ("B", "I") and prefix in ("B", "S", "O")))
        starts = prefix != "O" and (prefix in ("B", "S") or previous_type != type_
                                    or (previous in ("E", "S", "O") and prefix in ("E", "I")))
        if ends and start is not None:
            chunks.append((previous_type, start, i))
            start = None
        if starts:
            start = i
        previous, previous_type = prefix, type_
    return chunks


def _chunks_strict_iob2(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    for tag in tags:
        if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
            raise ValueError(f"tag {tag!r} is not valid IOB2 (O, B-<type>, I-<type>)")
    chunks = []
    i = 0
    while i < len(tags):
        if tags[i].startswith("B-"):
            type_ = tags[i][2:]
            end = i + 1
            while end < len(tags) and tags[end] == "I-" + type_:
                end += 1
            chunks.append((type_, i, end))
            i = end
        else:
            i += 1
    return chunks


def get_entities(tags: Sequence[str], mode: str = "conlleval") -> list[tuple[str, int, int]]:
    """(type, start, end exclusive) of every entity in one sentence's tags."""
    if mode == "conlleval":
        return _chunks_conlleval(tags)
    if mode == "strict":
        return _chunks_strict_iob2(tags)
    raise ValueError(f"unknown entity mode {mode!r} (conlleval or strict)")


@dataclasses.dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    support: int  # gold entities (0 for averages other than micro)


@dataclasses.dataclass(frozen=True)
class EntityScores:
    per_type: dict[str, PRF]
    micro: PRF
    macro: PRF
    weighted: PRF

    def as_dict(self) -> dict[str, float]:
        """Flat floats for logs: precision, recall, f1 (micro), macro_f1 and f1/<type>."""
        out = {"precision": self.micro.precision, "recall": self.micro.recall, "f1": self.micro.f1,
               "macro_f1": self.macro.f1}
        out.update({f"f1/{t}": s.f1 for t, s in self.per_type.items()})
        return out

    def report(self, digits: int = 4) -> str:
        """A per-type table in the layout of seqeval's classification_report."""
        names = list(self.per_type) + ["micro avg", "macro avg", "weighted avg"]
        width = max(len(n) for n in names + ["weighted avg"])
        header = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
        rows = [header, ""]
        total = self.micro.support
        for name, score in list(self.per_type.items()) + [("", None), ("micro avg", self.micro),
                                                          ("macro avg", self.macro),
                                                          ("weighted avg", self.weighted)]:
            if score is None:
                rows.append("")
                continue
            support = score.support if name in self.per_type else total
            rows.append(f"{name:>{width}}  {score.precision:>9.{digits}f}  {score.recall:>9.{digits}f}  "
                        f"{score.f1:>9.{digits}f}  {support:>9d}")
        return "\n".join(rows) + "\n"


def _prf(correct: int, predicted: int, gold: int) -> PRF:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF(precision, recall, f1, gold)


def entity_scores(gold_sequences: Iterable[Sequence[str]], predicted_sequences: Iterable[Sequence[str]],
                  mode: str = "conlleval", ignore_types: Sequence[str] = ()) -> EntityScores:
    """Scores over sentences (lists of tags, gold and predicted of equal length per sentence).

    ignore_types drops entities of those types from both sides (CoNLL SRL scoring leaves out V).
    """
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    golds, predicted = list(gold_sequences), list(predicted_sequences)
    if len(golds) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(golds)} gold sentences")
    skip = set(ignore_types)
    for k, (gold_tags, predicted_tags) in enumerate(zip(golds, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {k}: {len(predicted_tags)} predicted tags "
                             f"for {len(gold_tags)} tokens")
        gold_entities = {e for e in get_entities(gold_tags, mode) if e[0] not in skip}
        predicted_entities = {e for e in get_entities(predicted_tags, mode) if e[0] not in skip}
        for entity in gold_entities | predicted_entities:
            row = counts.setdefault(entity[0], [0, 0, 0])
            row[0] += entity in gold_entities and entity in predicted_entities
            row[1] += entity in predicted_entities
            row[2] += entity in gold_entities
    per_type = {t: _prf(*counts[t]) for t in sorted(counts)}
    totals = [sum(row[i] for row in counts.values()) for i in range(3)]
    micro = _prf(*totals)
    n = len(per_type)
    macro = PRF(*(sum(getattr(s, f) for s in per_type.values()) / n if n else 0.0
                  for f in ("precision", "recall", "f1")), 0)
    weight = totals[2]
    weighted = PRF(*(sum(getattr(s, f) * s.support for s in per_type.values()) / weight if weight else 0.0
                     for f in ("precision", "recall", "f1")), 0)
    return EntityScores(per_type, micro, macro, weighted)
