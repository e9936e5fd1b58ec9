"""Extractive QA: SQuAD 1.1 and 2.0 json files.

    {"version": "v2.0", "data": [{"title", "paragraphs": [{"context", "qas": [
        {"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}

One example per question: fields {"question", "context"}; label: the tuple of gold answer texts
(empty for an unanswerable 2.0 question, None for a file without answers); meta["answers"]:
((text, char_start), ...), meta["is_impossible"], meta["title"].

An answer whose text is not at its stated offset is moved to the nearest place where the text
occurs in the context (the official files have a few such offsets); text that does not occur at
all is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptjax.data.readers import find_file, get_field, read_json
from ptjax.errors import InputError
from ptjax.tasks.base import Example, TaskSpec, register, task_dir

_FILES = {"squad": {"train": "train-v1.1.json", "dev": "dev-v1.1.json"},
          "squad_v2": {"train": "train-v2.0.json", "dev": "dev-v2.0.json"}}


def squad_file(data_dir: Any, split: str, version: str) -> Path:
    folder = task_dir(data_dir, [version, "squad", "SQuAD"])
    names = [_FILES[version].get(split, f"{split}.json"), f"{split}.json"]
    return find_file(folder, list(dict.fromkeys(names)), f"{version} split {split!r}")


def _locate(context: str, text: str, start: int) -> int | None:
    if context[start:start + len(text)] == text:
        return start
    found = []
    position = context.find(text)
    while position >= 0:
        found.append(position)
        position = context.find(text, position + 1)
    return min(found, key=lambda i: abs(i - start)) if found else None


def load_squad_file(path: Any, split: str = "dev", name: str = "squad") -> list[Example]:
    path = Path(path)
    document = read_json(path)
    if not isinstance(document, dict):
        raise InputError(f"{path}: expected a JSON object with a 'data' list")
    out, seen = [], {}
    for a, article in enumerate(get_field(document, "data", list, str(path))):
        a_where = f"{path}: data[{a}]"
        if not isinstance(article, dict):
            raise InputError(f"{a_where}: expected an object")
        title = get_field(article, "title", str, a_where, required=False, default="")
        for p, paragraph in enumerate(get_field(article, "paragraphs", list, a_where)):
            p_where = f"{a_where}.paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise InputError(f"{p_where}: expected an object")
            context = get_field(paragraph, "context", str, p_where)
            for q, qa in enumerate(get_field(paragraph, "qas", list, p_where)):
                where = f"{p_where}.qas[{q}]"
                if not isinstance(qa, dict):
                    raise InputError(f"{where}: expected an object")
                out.append(_example(qa, context, title, where, split, name))
                qid = out[-1].guid
                if qid in seen:
                    raise InputError(f"{where}: question id {qid!r} repeats {seen[qid]}")
                seen[qid] = where
    return out


def _example(qa: dict, context: str, title: str, where: str, split: str, name: str) -> Example:
    qid = str(get_field(qa, "id", (str, int), where))
    question = get_field(qa, "question", str, where)
    impossible = get_field(qa, "is_impossible", bool, where, required=False, default=False)
    raw_answers = get_field(qa, "answers", list, where, required=False)
    answers: list[tuple[str, int]] = []
    for k, answer in enumerate(raw_answers or []):
        k_where = f"{where}.answers[{k}]"
        if not isinstance(answer, dict):
            raise InputError(f"{k_where}: expected an object")
        text = get_field(answer, "text", str, k_where)
        start = get_field(answer, "answer_start", int, k_where)
        if not text.strip():
            raise InputError(f"{k_where}: empty answer text")
        located = _locate(context, text, start)
        if located is None:
            raise InputError(f"{k_where}: answer {text!r} does not occur in the context")
        answers.append((text, located))
    if impossible and answers:
        raise InputError(f"{where}: is_impossible is true but the question has answers")
    if raw_answers is None and not impossible:
        label = None
    else:
        label = tuple(text for text, _ in answers)
    meta = {"answers": tuple(answers), "is_impossible": impossible, "title": title, "where": where,
            "version": name}
    return Example(qid, {"question": question, "context": context}, label, meta)


def squad_parser(version: str):
    """A record parser (TaskSpec.parse) for one question per row: {id, question, context, title,
    answers} with answers as the files' [{text, answer_start}] or the hub's columns
    {"text": [...], "answer_start": [...]} (an empty one: unanswerable, SQuAD 2.0)."""

    def parse(records, split: str) -> list[Example]:
        out, seen = [], {}
        for where, record in records:
            qa = dict(record)
            answers = record.get("answers")
            if isinstance(answers, dict):
                texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
                if len(texts) != len(starts):
                    raise InputError(f"{where}: answers has {len(texts)} texts and {len(starts)} starts")
                qa["answers"] = [{"text": t, "answer_start": a} for t, a in zip(texts, starts)]
                if version == "squad_v2" and "is_impossible" not in record:
                    qa["is_impossible"] = not texts
            context = get_field(record, "context", str, where)
            title = get_field(record, "title", str, where, required=False, default="")
            out.append(_example(qa, context, title, where, split, version))
            if out[-1].guid in seen:
                raise InputError(f"{where}: question id {out[-1].guid!r} repeats {seen[out[-1].guid]}")
            seen[out[-1].guid] = where
        return out

    return parse


def _loader(version: str):
    def load(data_dir: Any, split: str) -> list[Example]:
        return load_squad_file(squad_file(data_dir, split, version), split, version)

    return load


register(TaskSpec("squad", "extractive_qa", None, ("squad_em", "squad_f1"), _loader("squad"),
                  ("train", "dev"), ("question", "context"), description="SQuAD 1.1", parse=squad_parser("squad")))
register(TaskSpec("squad_v2", "extractive_qa", None, ("squad_v2_exact", "squad_v2_f1"), _loader("squad_v2"),
                  ("train", "dev"), ("question", "context"),
                  description="SQuAD 2.0 (with unanswerable questions)", parse=squad_parser("squad_v2")))
