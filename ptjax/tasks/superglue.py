"""SuperGLUE tasks from jsonl files: FewGLUE (32-shot), full SuperGLUE and the unlabeled sets.

Splits are file names: "train", "dev32", "val" ("dev" means "val"), "test", "unlabeled". data_dir
is either a folder that holds the task folders (superglue/, superglue_full/, superglue_unlabeled/
of the shared layout: data_dir=".../superglue_full" gives the full training sets) or the shared
data root, where "unlabeled" is read from superglue_unlabeled/ and every other split from
superglue/ (FewGLUE).

Label strings follow PET, on which the P-tuning code is built: RTE entailment/not_entailment, CB
entailment/contradiction/neutral, BoolQ/WiC/WSC False/True, COPA and MultiRC "0"/"1".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ptjax.data.readers import get_field, read_jsonl
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, check_label, register

FOLDERS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "rte": "RTE", "wic": "WiC", "wsc": "WSC",
           "multirc": "MultiRC", "record": "ReCoRD"}
SPLITS = ("train", "dev32", "val", "test", "unlabeled")
BOOL_LABELS = ("False", "True")


def superglue_file(data_dir: Any, task: str, split: str) -> Path:
    """Where `split` of `task` lives (see the module docstring); an error lists the paths tried."""
    folder = FOLDERS[task]
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{task}: data directory {root} does not exist")
    collection = "superglue_unlabeled" if split == "unlabeled" else "superglue"
    candidates = [root / folder / f"{split}.jsonl", root / collection / folder / f"{split}.jsonl"]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(f"{task} split {split!r}: no data file found; looked for "
                     f"{', '.join(str(p) for p in candidates)}")


Records = Iterable[tuple[str, dict]]  # ("file:line", one jsonl record), or rows of another source


def _records(task: str, data_dir: Any, split: str) -> Iterator[tuple[str, dict]]:
    path = superglue_file(data_dir, task, split)
    for line, record in read_jsonl(path):
        yield at(path, line), record


def _label(record: dict, labels: tuple[str, ...], where: str) -> str | None:
    if record.get("label") is None:
        return None
    return check_label(record["label"], labels, where)


def _idx(record: dict, where: str, fallback: int) -> int:
    return get_field(record, "idx", int, where, required=False, default=fallback)


def _guid(task: str, split: str, idx: Any) -> str:
    return f"{task}-{split}-{idx}"


def _from_files(task: str, parse: Callable[[Records, str], list[Example]]) -> Callable:
    """The task's file loader: its jsonl file of `split` through its record parser."""

    def load(data_dir: Any, split: str) -> list[Example]:
        return parse(_records(task, data_dir, split), split)

    return load


def _pair_parser(task: str, labels: tuple[str, ...], first: str, second: str) -> Callable:
    """RTE, CB (premise/hypothesis) and BoolQ (passage/question)."""

    def parse(records: Records, split: str) -> list[Example]:
        out = []
        for n, (where, record) in enumerate(records):
            fields = {name: get_field(record, name, str, where) for name in (first, second)}
            idx = _idx(record, where, n)
            out.append(Example(_guid(task, split, idx), fields, _label(record, labels, where),
                               {"idx": idx, "where": where}))
        return out

    return parse


def parse_copa(records: Records, split: str) -> list[Example]:
    out = []
    for n, (where, record) in enumerate(records):
        fields = {name: get_field(record, name, str, where) for name in ("premise", "choice1", "choice2")}
        fields["question"] = get_field(record, "question", str, where)
        if fields["question"] not in ("cause", "effect"):
            raise InputError(f"{where}: field 'question' should be 'cause' or 'effect', "
                             f"found {fields['question']!r}")
        idx = _idx(record, where, n)
        out.append(Example(_guid("copa", split, idx), fields, _label(record, ("0", "1"), where),
                           {"idx": idx, "where": where}))
    return out


def parse_wic(records: Records, split: str) -> list[Example]:
    out = []
    for n, (where, record) in enumerate(records):
        fields = {name: get_field(record, name, str, where) for name in ("word", "sentence1", "sentence2")}
        meta = {name: get_field(record, name, int, where, required=False)
                for name in ("start1", "end1", "start2", "end2")}
        idx = _idx(record, where, n)
        meta.update(idx=idx, where=where)
        out.append(Example(_guid("wic", split, idx), fields, _label(record, BOOL_LABELS, where), meta))
    return out


def parse_wsc(records: Records, split: str) -> list[Example]:
    """span1 is the candidate noun phrase, span2 the pronoun; indices count words of `text`. The
    spans sit in a "target" object (the jsonl files) or beside the text (the hub's flat rows)."""
    out = []
    for n, (where, record) in enumerate(records):
        text = get_field(record, "text", str, where)
        target = get_field(record, "target", dict, where) if "target" in record else record
        fields = {"text": text,
                  "span1_text": get_field(target, "span1_text", str, where + ": target"),
                  "span2_text": get_field(target, "span2_text", str, where + ": target")}
        idx = _idx(record, where, n)
        meta = {"span1_index": get_field(target, "span1_index", int, where + ": target"),
                "span2_index": get_field(target, "span2_index", int, where + ": target"),
                "idx": idx, "where": where}
        out.append(Example(_guid("wsc", split, idx), fields, _label(record, BOOL_LABELS, where), meta))
    return out


def parse_multirc(records: Records, split: str) -> list[Example]:
    """One example per (passage, question, answer option); meta["question_id"] groups a question's
    options for exact match. A record is a passage with its questions (the jsonl files) or one
    answer option with idx {paragraph, question, answer} (the hub's rows)."""
    out = []
    for n, (where, record) in enumerate(records):
        if "paragraph" in record and "passage" not in record:
            out.append(_multirc_row(record, where, split))
            continue
        passage = get_field(record, "passage", dict, where)
        text = get_field(passage, "text", str, where + ": passage")
        passage_idx = _idx(record, where, n)
        for q, question in enumerate(get_field(passage, "questions", list, where + ": passage")):
            q_where = f"{where}: question {q}"
            if not isinstance(question, dict):
                raise InputError(f"{q_where}: expected an object")
            question_idx = _idx(question, q_where, q)
            question_text = get_field(question, "question", str, q_where)
            for a, answer in enumerate(get_field(question, "answers", list, q_where)):
                a_where = f"{q_where}: answer {a}"
                if not isinstance(answer, dict):
                    raise InputError(f"{a_where}: expected an object")
                answer_idx = _idx(answer, a_where, a)
                fields = {"passage": text, "question": question_text,
                          "answer": get_field(answer, "text", str, a_where)}
                meta = {"passage_id": passage_idx, "question_id": f"{passage_idx}-{question_idx}",
                        "question_idx": question_idx, "answer_idx": answer_idx, "where": a_where}
                guid = f"multirc-{split}-p{passage_idx}-q{question_idx}-a{answer_idx}"
                out.append(Example(guid, fields, _label(answer, ("0", "1"), a_where), meta))
    return out


def _multirc_row(record: dict, where: str, split: str) -> Example:
    idx = get_field(record, "idx", dict, where)
    passage_idx, question_idx, answer_idx = (get_field(idx, key, int, where + ": idx")
                                             for key in ("paragraph", "question", "answer"))
    fields = {"passage": get_field(record, "paragraph", str, where),
              "question": get_field(record, "question", str, where),
              "answer": get_field(record, "answer", str, where)}
    meta = {"passage_id": passage_idx, "question_id": f"{passage_idx}-{question_idx}",
            "question_idx": question_idx, "answer_idx": answer_idx, "where": where}
    return Example(f"multirc-{split}-p{passage_idx}-q{question_idx}-a{answer_idx}", fields,
                   _label(record, ("0", "1"), where), meta)


def parse_record(records: Records, split: str) -> list[Example]:
    """One example per query. meta["entities"]: the candidate entity strings (unique, in passage
    order) with their character spans in meta["entity_spans"] (end exclusive); the label: the
    unique answer strings (None when the file has no answers). A record is a passage with its
    queries (the jsonl files) or one query with the passage text (the hub's rows)."""
    out = []
    for n, (where, record) in enumerate(records):
        if isinstance(record.get("passage"), str):
            out.append(_record_row(record, where, split))
            continue
        passage = get_field(record, "passage", dict, where)
        text = get_field(passage, "text", str, where + ": passage")
        spans: list[tuple[int, int]] = []
        entities: list[str] = []
        for e, entity in enumerate(get_field(passage, "entities", list, where + ": passage")):
            start, end = _span(entity, text, f"{where}: entity {e}")
            spans.append((start, end))
            if text[start:end] not in entities:
                entities.append(text[start:end])
        passage_idx = _idx(record, where, n)
        for q, qa in enumerate(get_field(record, "qas", list, where)):
            q_where = f"{where}: query {q}"
            if not isinstance(qa, dict):
                raise InputError(f"{q_where}: expected an object")
            query = get_field(qa, "query", str, q_where)
            answers = None
            if qa.get("answers") is not None:
                answers = []
                for a, answer in enumerate(get_field(qa, "answers", list, q_where)):
                    start, end = _span(answer, text, f"{q_where}: answer {a}")
                    if text[start:end] not in answers:
                        answers.append(text[start:end])
                answers = tuple(answers)
            query_idx = _idx(qa, q_where, q)
            meta = {"entities": tuple(entities), "entity_spans": tuple(spans),
                    "passage_id": passage_idx, "idx": query_idx, "where": q_where}
            out.append(Example(f"record-{split}-{passage_idx}-{query_idx}", {"passage": text, "query": query},
                               answers, meta))
    return out


def _record_row(record: dict, where: str, split: str) -> Example:
    """A hub ReCoRD row: {passage, query, entities: [str], answers: [str], idx: {passage, query}}.
    Each entity's span is its first occurrence in the passage (the hub's offsets are not read)."""
    text, query = get_field(record, "passage", str, where), get_field(record, "query", str, where)
    entities = list(dict.fromkeys(get_field(record, "entities", list, where)))
    spans = []
    for entity in entities:
        start = text.find(entity) if isinstance(entity, str) and entity else -1
        if start < 0:
            raise InputError(f"{where}: entity {entity!r} does not occur in the passage")
        spans.append((start, start + len(entity)))
    raw = record.get("answers")
    answers = tuple(dict.fromkeys(get_field(record, "answers", list, where))) if raw else None
    idx = get_field(record, "idx", dict, where)
    passage_idx, query_idx = (get_field(idx, key, int, where + ": idx") for key in ("passage", "query"))
    meta = {"entities": tuple(entities), "entity_spans": tuple(spans), "passage_id": passage_idx,
            "idx": query_idx, "where": where}
    fields = {"passage": text, "query": query}
    return Example(f"record-{split}-{passage_idx}-{query_idx}", fields, answers, meta)


def _span(item: Any, text: str, where: str) -> tuple[int, int]:
    """ReCoRD spans store an inclusive end; returned end is exclusive."""
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object with 'start' and 'end'")
    start, end = get_field(item, "start", int, where), get_field(item, "end", int, where)
    if not 0 <= start <= end < len(text):
        raise InputError(f"{where}: span {start}..{end} lies outside the passage ({len(text)} characters)")
    if "text" in item and isinstance(item["text"], str) and item["text"] != text[start:end + 1]:
        raise InputError(f"{where}: span {start}..{end} reads {text[start:end + 1]!r}, "
                         f"not {item['text']!r}")
    return start, end + 1


_ALIASES = {"validation": "val", "dev": "val"}
_PAIR_LABELS = {"boolq": BOOL_LABELS, "cb": ("entailment", "contradiction", "neutral"),
                "rte": ("entailment", "not_entailment")}


def _register(name: str, kind: str, labels, metrics: tuple[str, ...], parse: Callable,
              fields: tuple[str, ...], description: str, **extra: Any) -> None:
    register(TaskSpec(name, kind, labels, metrics, _from_files(name, parse), SPLITS, fields,
                      description=description, split_aliases=_ALIASES, parse=parse, **extra))


_register("boolq", "classification", BOOL_LABELS, ("accuracy",),
          _pair_parser("boolq", BOOL_LABELS, "passage", "question"), ("passage", "question"),
          "BoolQ: yes/no question about a passage")
_register("cb", "classification", _PAIR_LABELS["cb"], ("accuracy", "macro_f1"),
          _pair_parser("cb", _PAIR_LABELS["cb"], "premise", "hypothesis"), ("premise", "hypothesis"),
          "CommitmentBank, 3-way entailment")
_register("rte", "classification", _PAIR_LABELS["rte"], ("accuracy",),
          _pair_parser("rte", _PAIR_LABELS["rte"], "premise", "hypothesis"), ("premise", "hypothesis"),
          "Recognizing Textual Entailment")
_register("copa", "multiple_choice", ("0", "1"), ("accuracy",), parse_copa,
          ("premise", "question", "choice1", "choice2"),
          "Choice of Plausible Alternatives (question: cause or effect)", choices=("choice1", "choice2"))
_register("wic", "classification", BOOL_LABELS, ("accuracy",), parse_wic, ("word", "sentence1", "sentence2"),
          "Words in Context")
_register("wsc", "classification", BOOL_LABELS, ("accuracy",), parse_wsc,
          ("text", "span1_text", "span2_text"), "Winograd Schema Challenge")
_register("multirc", "classification", ("0", "1"), ("multirc_em", "multirc_f1a"), parse_multirc,
          ("passage", "question", "answer"),
          "Multi-Sentence Reading Comprehension, one example per answer option")
_register("record", "entity_choice", None, ("record_em", "record_f1"), parse_record, ("passage", "query"),
          "ReCoRD: fill @placeholder with a passage entity")
