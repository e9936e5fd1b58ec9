"""Score a task's predictions with its official metrics: one call for every task.

    metrics = score_predictions("cb", examples, predictions)
    # {"accuracy": 0.89, "macro_f1": 0.85, "score": 0.87}

Predictions, one per example and in the same order, are what the task's kind asks for:
    classification / multiple_choice   a label string of spec.labels, or its index
    entity_choice (ReCoRD)             the chosen entity string
    tagging                            a sequence of tags, one per token
    extractive_qa                      the answer text, "" for no answer
    fact_probe (LAMA)                  the top-1 predicted word
"score" is the mean of the task's official metrics (SuperGLUE's task score).
"""

from __future__ import annotations

from typing import Any, Sequence

from ptjax.eval import metrics as M
from ptjax.tasks.base import Example, TaskSpec, get_task


def _labels(spec: TaskSpec, predictions: Sequence[Any]) -> list[Any]:
    out = []
    for p in predictions:
        if isinstance(p, (int,)) and not isinstance(p, bool) and spec.labels is not None:
            if not 0 <= p < len(spec.labels):
                raise ValueError(f"{spec.name}: predicted index {p} outside {len(spec.labels)} labels")
            p = spec.labels[p]
        out.append(p)
    return out


def score_predictions(task: str | TaskSpec, examples: Sequence[Example],
                      predictions: Sequence[Any]) -> dict[str, float]:
    spec = get_task(task) if isinstance(task, str) else task
    if len(examples) != len(predictions):
        raise ValueError(f"{spec.name}: {len(predictions)} predictions for {len(examples)} examples")
    unlabeled = [e.guid for e in examples if e.label is None]
    if unlabeled:
        raise ValueError(f"{spec.name}: {len(unlabeled)} examples without gold labels, e.g. {unlabeled[0]}")
    golds = [e.label for e in examples]
    out: dict[str, float] = {}
    names = set(spec.metrics)
    if "accuracy" in names:
        out["accuracy"] = M.accuracy(_labels(spec, predictions), golds)
    if "macro_f1" in names:
        out["macro_f1"] = M.macro_f1(_labels(spec, predictions), golds)
    if names & {"multirc_em", "multirc_f1a"}:
        question_ids = [e.meta["question_id"] for e in examples]
        scores = M.multirc_scores(_labels(spec, predictions), golds, question_ids)
        out.update(multirc_em=scores["em"], multirc_f1a=scores["f1a"])
    if names & {"record_em", "record_f1"}:
        scores = M.record_scores(_by_guid(examples, predictions), {e.guid: e.label for e in examples})
        out.update(record_em=scores["exact_match"], record_f1=scores["f1"])
    if names & {"entity_f1", "srl_f1"}:
        ignore = ("V",) if "srl_f1" in names else ()
        entity = M.entity_scores(golds, predictions, mode="conlleval", ignore_types=ignore)
        prefix = "srl" if "srl_f1" in names else "entity"
        out.update({f"{prefix}_{k}": v for k, v in entity.as_dict().items()})
    if names & {"squad_em", "squad_f1"}:
        scores = M.squad_v1_scores(_by_guid(examples, predictions), {e.guid: e.label for e in examples})
        out.update(squad_em=scores["exact_match"], squad_f1=scores["f1"])
    if names & {"squad_v2_exact", "squad_v2_f1"}:
        scores = M.squad_v2_scores(_by_guid(examples, predictions), {e.guid: e.label for e in examples})
        out.update({f"squad_v2_{k}": v for k, v in scores.items()})
    if "p_at_1" in names:
        out.update(p_at_1_metrics(M.precision_at_1(predictions, golds, [e.meta["relation"] for e in examples])))
    missing = [n for n in spec.metrics if n not in out]
    if missing:
        raise ValueError(f"{spec.name}: no scorer for metric(s) {', '.join(missing)}")
    out["score"] = M.task_score(out, spec.metrics)
    return out


def p_at_1_metrics(scores: dict) -> dict[str, float]:
    """ptjax's LAMA metric names of a precision_at_1(_of_hits) result: p_at_1 (macro over
    relations), p_at_1_micro, p_at_1/<relation>."""
    return {"p_at_1": scores["macro"], "p_at_1_micro": scores["micro"],
            **{f"p_at_1/{r}": v for r, v in scores["per_relation"].items()}}


def _by_guid(examples: Sequence[Example], predictions: Sequence[Any]) -> dict[str, str]:
    out = {}
    for example, prediction in zip(examples, predictions):
        if not isinstance(prediction, str):
            raise ValueError(f"{example.guid}: the prediction should be a string, found {prediction!r}")
        out[example.guid] = prediction
    return out
