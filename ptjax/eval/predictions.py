"""Per-example predictions of an evaluation, and leaderboard submission files.

    write_predictions(config, workdir, data, {"validation": raw_predictions})

writes DIR/predictions/<split>.jsonl, one JSON object per example in split order:

    {"id": "rte-val-17", "prediction": "entailment", "label": "not_entailment",
     "scores": {"entailment": 1.9, "not_entailment": -0.4}}

"label" is absent where the example has no gold label (a test split). "scores" is what the
formulation reports (`scores` on each formulation): the head's score per label (verbalizer and
linear classification: logits; LM-scored choices: the option's log-likelihood), LAMA's top
candidates with the gold object's rank, each word's tag probability (tagging), the best span and
its null-score difference (QA), the referent the model wrote (WSC). Multi-task runs add "task".

config.predictions.submission = "superglue" also writes the SuperGLUE leaderboard's file for a
SuperGLUE task: DIR/predictions/RTE.jsonl for the test split (RTE_<split>.jsonl for others), one
{"idx", "label"} object per line in the label spelling the site expects (BoolQ and WiC
"true"/"false", WSC "True"/"False", COPA 0/1, CB and RTE the label names, ReCoRD the entity
text; MultiRC one line per passage with its questions' answers nested), the format jiant (the
SuperGLUE authors' toolkit) writes for the site.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptjax.errors import InputError

SUBMISSIONS = ("superglue",)
SUPERGLUE_FILES = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "record": "ReCoRD",
                   "rte": "RTE", "wic": "WiC", "wsc": "WSC"}
# How each task's label strings are spelled in the submission (identity where absent).
_SUPERGLUE_LABELS = {"boolq": {"True": "true", "False": "false"}, "wic": {"True": "true", "False": "false"}}


def jsonable(value: Any) -> Any:
    """Tuples, numpy scalars and arrays as JSON values; a non-finite float as null."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def record(example, answer: Any, scores: Mapping[str, Any] | None) -> dict:
    """The predictions-file line of one example."""
    out = {"id": example.guid, "prediction": jsonable(answer)}
    if example.label is not None:
        out["label"] = jsonable(example.label)
    if scores:
        out["scores"] = jsonable(scores)
    return out


def write_jsonl_atomic(path: Path, rows: Sequence[Mapping]) -> None:
    """Write `rows` as JSON lines; the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(partial, path)


# --------------------------------------------------------------------------------------------
# SuperGLUE.


def superglue_submission(task: str, examples: Sequence, records: Sequence[Mapping]) -> list[dict]:
    """The leaderboard lines of one SuperGLUE task's predictions (see the module docstring)."""
    if task == "multirc":
        passages: dict[int, dict[int, list[dict]]] = {}
        for example, row in zip(examples, records):
            questions = passages.setdefault(int(example.meta["passage_id"]), {})
            questions.setdefault(int(example.meta["question_idx"]), []).append(
                {"idx": int(example.meta["answer_idx"]), "label": int(row["prediction"])})
        return [{"idx": passage, "passage": {"questions": [{"idx": q, "answers": answers}
                                                           for q, answers in questions.items()]}}
                for passage, questions in passages.items()]
    spelling = _SUPERGLUE_LABELS.get(task, {})
    out = []
    for example, row in zip(examples, records):
        label = row["prediction"]
        label = int(label) if task == "copa" else spelling.get(label, label)
        out.append({"idx": int(example.meta["idx"]), "label": label})
    return out


def check_submission(config, task_name: str | None) -> None:
    """Refuse a submission format that does not fit the task before anything runs."""
    kind = _submission(config)
    if not kind:
        return
    if kind not in SUBMISSIONS:
        raise InputError(f"config.predictions.submission={kind!r}: known formats are "
                         f"{', '.join(SUBMISSIONS)}")
    if task_name not in SUPERGLUE_FILES:
        raise InputError(f"config.predictions.submission='superglue': task {task_name} is not a SuperGLUE "
                         f"task ({', '.join(SUPERGLUE_FILES)})")


def _submission(config) -> str:
    section = config.get("predictions", None)
    return (section.get("submission", "") if section is not None else "") or ""


def enabled(config) -> bool:
    section = config.get("predictions", None)
    return bool(section.get("write", True)) if section is not None else True


# --------------------------------------------------------------------------------------------
# One evaluation's files.


def write_predictions(config, workdir: str | Path, data, predictions: Mapping[str, list]) -> list[Path]:
    """DIR/predictions/<split>.jsonl for each split of `predictions` (the engine's per-feature
    outputs), and the submission file config.predictions.submission asks for. Returns the paths
    written; nothing when config.predictions.write is off or the task data cannot describe its
    examples (`prediction_records`)."""
    if not enabled(config) or not hasattr(data, "prediction_records"):
        return []
    folder = Path(workdir) / "predictions"
    written = []
    for split, outputs in predictions.items():
        rows = data.prediction_records(split, outputs)
        written.append(folder / f"{split}.jsonl")
        write_jsonl_atomic(written[-1], rows)
        if _submission(config) == "superglue":
            task = data.spec.name
            name = SUPERGLUE_FILES[task] if split == "test" else f"{SUPERGLUE_FILES[task]}_{split}"
            written.append(folder / f"{name}.jsonl")
            write_jsonl_atomic(written[-1], superglue_submission(task, data.examples(split), rows))
    return written
