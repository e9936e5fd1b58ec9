"""RACE (reading comprehension from English exams, Lai et al. 2017): a passage, a question and
four options A-D, one right. PPT's multiple-choice tasks RACE-m (middle school) and RACE-h (high).

Two layouts are read, under data_dir/RACE (or data_dir/race, or data_dir itself):
  original   <split>/{middle,high}/*.txt, each file one JSON article:
             {"id": "high1.txt", "article": "...", "questions": [...], "options": [[4 texts], ...],
              "answers": ["B", ...]}
  flat       <split>.jsonl, one question per line (the Hugging Face `race` layout):
             {"example_id": "high1.txt", "article": "...", "question": "...", "options": [4],
              "answer": "B"}; the level is read from the example id ("middle..." / "high...").
Splits: train, dev, test. Tasks: race (option level="all" | "middle" | "high"), race_m, race_h.
Fields: article, question, option_a .. option_d; label "A" .. "D".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ptjax.data.readers import get_field, read_json, read_jsonl
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, check_label, register, task_dir

LABELS = ("A", "B", "C", "D")
LEVELS = ("middle", "high")
SPLITS = ("train", "dev", "test")
OPTION_FIELDS = tuple(f"option_{label.lower()}" for label in LABELS)


def _level_of(identifier: str, where: str) -> str:
    for level in LEVELS:
        if identifier.lower().startswith(level):
            return level
    raise InputError(f"{where}: cannot tell the level of {identifier!r} (ids start with 'middle' or 'high')")


def _example(split: str, identifier: str, number: int, article: str, question: Any, options: Any, answer: Any,
             level: str, where: str) -> Example:
    if not isinstance(question, str):
        raise InputError(f"{where}: question {number} should be a string, found {question!r}")
    if not isinstance(options, list) or len(options) != len(LABELS) or not all(isinstance(o, str) for o in options):
        raise InputError(f"{where}: question {number} needs {len(LABELS)} options (strings), found {options!r}")
    label = None if answer in (None, "") else check_label(answer, LABELS, where)
    fields = {"article": article, "question": question, **dict(zip(OPTION_FIELDS, options))}
    return Example(f"race-{split}-{identifier}-{number}", fields, label,
                   {"where": where, "level": level, "article_id": identifier})


def _original(folder: Path, split: str, levels: tuple[str, ...]) -> Iterator[Example]:
    for level in levels:
        for path in sorted((folder / split / level).glob("*")):
            if not path.is_file():
                continue
            where = at(path)
            record = read_json(path)
            if not isinstance(record, dict):
                raise InputError(f"{where}: expected one JSON object (an article)")
            article = get_field(record, "article", str, where)
            questions = get_field(record, "questions", list, where)
            options = get_field(record, "options", list, where)
            answers = get_field(record, "answers", list, where, required=False, default=[None] * len(questions))
            if not len(questions) == len(options) == len(answers):
                raise InputError(f"{where}: {len(questions)} questions, {len(options)} option lists and "
                                 f"{len(answers)} answers; they must match")
            identifier = str(record.get("id", path.name))
            for number, (question, choices, answer) in enumerate(zip(questions, options, answers)):
                yield _example(split, identifier, number, article, question, choices, answer, level, where)


def _flat(path: Path, split: str, levels: tuple[str, ...]) -> Iterator[Example]:
    return _flat_rows(((at(path, line), line, record) for line, record in read_jsonl(path)), split, levels)


def _flat_rows(rows: Iterable[tuple[str, int, dict]], split: str, levels: tuple[str, ...]) -> Iterator[Example]:
    """Examples of (where, number, one-question record) rows, the hub's `race` layout."""
    for where, number, record in rows:
        identifier = str(get_field(record, "example_id", str, where))
        level = _level_of(identifier, where)
        if level not in levels:
            continue
        yield _example(split, identifier, number, get_field(record, "article", str, where),
                       record.get("question"), record.get("options"), record.get("answer"), level, where)


def _parser(levels: tuple[str, ...]):
    """TaskSpec.parse: rows of any source in the flat layout (ptjax.tasks.sources)."""

    def parse(records, split: str) -> list[Example]:
        return list(_flat_rows(((where, n, record) for n, (where, record) in enumerate(records)), split, levels))

    return parse


def load_race(data_dir: Any, split: str, level: str = "all") -> list[Example]:
    if level not in ("all",) + LEVELS:
        raise InputError(f"race: level={level!r}: choose 'all', 'middle' or 'high'")
    levels = LEVELS if level == "all" else (level,)
    folder = task_dir(data_dir, ["RACE", "race"], marker=split)
    if (folder / split).is_dir():
        examples = list(_original(folder, split, levels))
    elif (folder / f"{split}.jsonl").is_file():
        examples = list(_flat(folder / f"{split}.jsonl", split, levels))
    else:
        raise InputError(f"race split {split!r}: found neither {folder / split}/{{middle,high}}/*.txt nor "
                         f"{folder / (split + '.jsonl')}")
    if not examples:
        raise InputError(f"race split {split!r} ({level}): no questions under {folder}")
    return examples


def _level_loader(level: str):
    def load(data_dir: Any, split: str) -> list[Example]:
        return load_race(data_dir, split, level)

    return load


_FIELDS = ("article", "question") + OPTION_FIELDS
register(TaskSpec("race", "multiple_choice", LABELS, ("accuracy",), load_race, SPLITS, _FIELDS,
                  choices=OPTION_FIELDS, description="RACE reading comprehension, 4 options (level: all)",
                  parse=_parser(LEVELS)))
register(TaskSpec("race_m", "multiple_choice", LABELS, ("accuracy",), _level_loader("middle"), SPLITS, _FIELDS,
                  choices=OPTION_FIELDS, description="RACE-m: middle-school exams", parse=_parser(("middle",))))
register(TaskSpec("race_h", "multiple_choice", LABELS, ("accuracy",), _level_loader("high"), SPLITS, _FIELDS,
                  choices=OPTION_FIELDS, description="RACE-h: high-school exams", parse=_parser(("high",))))
