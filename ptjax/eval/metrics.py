"""Official metrics, each as its benchmark defines it. Every score is a fraction in [0, 1]
(tables multiply by 100).

    accuracy, macro_f1, binary_f1                        classification (CB: accuracy and macro-F1)
    multirc_scores(preds, golds, question_ids)           MultiRC EM (all options of a question right)
                                                         and F1a (binary F1 over all options)
    normalize_answer, squad_exact, squad_f1              SQuAD v1.1 answer normalization and scores
    record_scores, squad_v1_scores, squad_v2_scores      max over gold answers; 2.0 with no-answer
    best_no_answer_threshold                             SQuAD 2.0 threshold search on no-answer scores
    precision_at_1                                       LAMA P@1 per relation, macro and micro
    task_score, average_score                            SuperGLUE: mean of a task's metrics, mean of tasks
    entity_scores (from entities.py)                     conlleval/seqeval entity-level P/R/F1

Mismatched lengths or missing predictions are programming errors (ValueError), not bad input.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Hashable, Mapping, Sequence

from ptjax.eval.entities import EntityScores, entity_scores, get_entities  # noqa: F401  (re-export)


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


def _divide(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _divide(2 * precision * recall, precision + recall)


# --------------------------------------------------------------------------------------------
# Classification.


def accuracy(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> float:
    _check_lengths(predictions, references)
    if not references:
        raise ValueError("accuracy of an empty set")
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def binary_f1(predictions: Sequence[Hashable], references: Sequence[Hashable], positive: Hashable) -> float:
    """F1 of the `positive` class (0 when it is never predicted or never true)."""
    _check_lengths(predictions, references)
    true_positive = sum(p == positive and r == positive for p, r in zip(predictions, references))
    precision = _divide(true_positive, sum(p == positive for p in predictions))
    recall = _divide(true_positive, sum(r == positive for r in references))
    return _f1(precision, recall)


def macro_f1(predictions: Sequence[Hashable], references: Sequence[Hashable],
             labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: classes seen in either sequence),
    as scikit-learn's f1_score(average="macro") that SuperGLUE uses for CB."""
    _check_lengths(predictions, references)
    classes = list(labels) if labels is not None else sorted(set(predictions) | set(references), key=str)
    if not classes:
        raise ValueError("macro-F1 of an empty set")
    return sum(binary_f1(predictions, references, c) for c in classes) / len(classes)


def multirc_scores(predictions: Sequence[Hashable], references: Sequence[Hashable],
                   question_ids: Sequence[Hashable], positive: Hashable = "1") -> dict[str, float]:
    """MultiRC over answer options: "em" = fraction of questions whose options are all right;
    "f1a" = F1 of the positive (correct-answer) class over all options pooled."""
    _check_lengths(predictions, references)
    _check_lengths(question_ids, references)
    all_right: dict[Hashable, bool] = {}
    for p, r, q in zip(predictions, references, question_ids):
        all_right[q] = all_right.get(q, True) and p == r
    if not all_right:
        raise ValueError("MultiRC scores of an empty set")
    return {"em": sum(all_right.values()) / len(all_right),
            "f1a": binary_f1(predictions, references, positive)}


# --------------------------------------------------------------------------------------------
# Answers as text: SQuAD v1.1 and ReCoRD (same normalization), SQuAD 2.0.

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str, version: str = "2.0") -> float:
    """Token F1 after normalization. One empty side scores 0; two empty sides score 1 in SQuAD 2.0
    (a correct "no answer") and 0 in the v1.1 script (which also scores ReCoRD)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected and version == "2.0")
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    return _f1(common / len(predicted), common / len(expected))


def _best(prediction: str, golds: Sequence[str], version: str) -> tuple[float, float]:
    if not golds:
        raise ValueError("a question without gold answers")
    return (max(squad_exact(prediction, g) for g in golds),
            max(squad_f1(prediction, g, version) for g in golds))


def _mean_over(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} question(s), e.g. {missing[0]!r}")
    if not references:
        raise ValueError("scores of an empty set")
    pairs = [_best(predictions[qid], golds, "1.1") for qid, golds in references.items()]
    return {"exact_match": sum(e for e, _ in pairs) / len(pairs), "f1": sum(f for _, f in pairs) / len(pairs)}


def squad_v1_scores(predictions: Mapping[str, str],
                    references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """SQuAD v1.1: per question the best EM and F1 over its gold answers, averaged over questions.
    predictions and references are keyed by question id."""
    return _mean_over(predictions, references)


def record_scores(predictions: Mapping[str, str],
                  references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """ReCoRD: the SQuAD v1.1 scoring over the gold entity strings of each query."""
    return _mean_over(predictions, references)


def _v2_golds(golds: Sequence[str]) -> list[str]:
    """The gold strings a 2.0 prediction is scored against: those that survive normalization, or
    the empty answer. Whether the question has an answer is `bool(golds)`, decided before this
    filter, as in the official script (gold "the" keeps the question answerable)."""
    kept = [g for g in golds if normalize_answer(g)]
    return kept or [""]


def squad_v2_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                    no_answer_probs: Mapping[str, float] | None = None,
                    threshold: float = 1.0) -> dict[str, float]:
    """SQuAD 2.0. references[qid] is empty for an unanswerable question, whose only right answer is
    the empty prediction. With no_answer_probs, a question whose probability exceeds `threshold`
    counts as answered "no answer". Keys: exact, f1, total and the same for HasAns_ / NoAns_."""
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} question(s), e.g. {missing[0]!r}")
    scores: dict[str, tuple[float, float]] = {}
    for qid, golds in references.items():
        has_answer = bool(golds)
        if no_answer_probs is not None and no_answer_probs[qid] > threshold:
            scores[qid] = (float(not has_answer),) * 2
        else:
            scores[qid] = _best(predictions[qid], _v2_golds(golds), "2.0")
    result: dict[str, float] = {}
    groups = {"": list(references),
              "HasAns_": [q for q, g in references.items() if g],
              "NoAns_": [q for q, g in references.items() if not g]}
    for prefix, qids in groups.items():
        if not qids:
            continue
        result[prefix + "exact"] = sum(scores[q][0] for q in qids) / len(qids)
        result[prefix + "f1"] = sum(scores[q][1] for q in qids) / len(qids)
        result[prefix + "total"] = float(len(qids))
    return result


def best_no_answer_threshold(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                             no_answer_probs: Mapping[str, float], metric: str = "f1") -> tuple[float, float]:
    """(best score, threshold) when questions with no-answer probability above the threshold are
    answered "no answer", as the official 2.0 script searches it over the observed probabilities."""
    column = {"exact": 0, "f1": 1}[metric]
    has_answer = {q: bool(g) for q, g in references.items()}
    score = float(sum(not h for h in has_answer.values()))  # everything abstains
    best, best_threshold = score, 0.0
    for qid in sorted(references, key=lambda q: no_answer_probs[q]):
        if has_answer[qid]:
            score += _best(predictions[qid], _v2_golds(references[qid]), "2.0")[column]
        elif predictions[qid]:
            score -= 1.0
        if score > best:
            best, best_threshold = score, no_answer_probs[qid]
    return best / len(references), best_threshold


# --------------------------------------------------------------------------------------------
# LAMA and aggregation.


def precision_at_1(predictions: Sequence[str], references: Sequence[str],
                   relations: Sequence[Hashable]) -> dict:
    """LAMA P@1 of predicted words: per relation the fraction of facts whose top-1 word is the
    object (compared after stripping surrounding whitespace); "macro" averages relations, "micro"
    pools facts. ptjax's own runs compare token ids instead (precision_at_1_of_hits), as the
    reference does: " Paris" and "Paris" are different tokens that decode alike."""
    _check_lengths(predictions, references)
    _check_lengths(relations, references)
    return precision_at_1_of_hits([p.strip() == r.strip() for p, r in zip(predictions, references)], relations)


def precision_at_1_of_hits(hits: Sequence[bool], relations: Sequence[Hashable]) -> dict:
    """LAMA P@1 from one hit (top-1 is the object) per fact: "macro", "micro", "per_relation"."""
    _check_lengths(relations, hits)
    by_relation: dict[Hashable, list[bool]] = collections.defaultdict(list)
    for hit, relation in zip(hits, relations):
        by_relation[relation].append(bool(hit))
    if not by_relation:
        raise ValueError("P@1 of an empty set")
    per_relation = {relation: sum(h) / len(h) for relation, h in by_relation.items()}
    return {"macro": sum(per_relation.values()) / len(per_relation),
            "micro": sum(sum(h) for h in by_relation.values()) / len(hits),
            "per_relation": per_relation}


def task_score(metrics: Mapping[str, float], names: Sequence[str]) -> float:
    """A task's score: the unweighted mean of its official metrics (SuperGLUE: CB = mean of
    accuracy and macro-F1, MultiRC = mean of EM and F1a, ReCoRD = mean of EM and F1)."""
    if not names:
        raise ValueError("a task score needs at least one metric")
    return sum(metrics[n] for n in names) / len(names)


def average_score(task_scores: Mapping[str, float]) -> float:
    """The benchmark average: the unweighted mean of task scores."""
    if not task_scores:
        raise ValueError("an average over no tasks")
    return sum(task_scores.values()) / len(task_scores)
