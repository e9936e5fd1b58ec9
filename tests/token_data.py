"""Small tagging and SQuAD-format data sets written by the tests, and configs for them."""

from __future__ import annotations

import json
import random
from pathlib import Path

PEOPLE = [["John"], ["Mary"], ["John", "Smith"], ["Anna", "Berg"]]
PLACES = [["Paris"], ["London"], ["Berlin"], ["New", "York"]]
GROUPS = [["United", "Nations"], ["Reuters"], ["Siemens"]]
KINDS = [["German"], ["French"]]
PATTERNS = [
    [("PER", PEOPLE), "lives", "in", ("LOC", PLACES), "."],
    [("PER", PEOPLE), "works", "for", "the", ("ORG", GROUPS), "in", ("LOC", PLACES), "."],
    ["The", ("MISC", KINDS), "team", "met", ("PER", PEOPLE), "in", ("LOC", PLACES), "."],
    [("ORG", GROUPS), "said", "on", "Tuesday", "that", ("PER", PEOPLE), "would", "come", "."],
]


def sentences(count: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """(words, IOB2 tags) of `count` random sentences."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words, tags = [], []
        for part in rng.choice(PATTERNS):
            if isinstance(part, str):
                words.append(part)
                tags.append("O")
            else:
                type_, choices = part
                entity = rng.choice(choices)
                words += entity
                tags += [f"B-{type_}"] + [f"I-{type_}"] * (len(entity) - 1)
        out.append((words, tags))
    return out


def write_conll03(root: Path, train: int = 32, dev: int = 16) -> Path:
    folder = Path(root) / "conll03"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train.txt", train, 0), ("valid.txt", dev, 1)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for words, tags in sentences(count, seed):
            lines += [f"{w} NN O {t}" for w, t in zip(words, tags)] + [""]
        (folder / name).write_text("\n".join(lines))
    return Path(root)


def _bilou(tags: list[str]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        following = tags[i + 1] if i + 1 < len(tags) else "O"
        if tag == "O":
            out.append(tag)
        elif tag.startswith("B-"):
            out.append(("B-" if following == "I-" + tag[2:] else "U-") + tag[2:])
        else:
            out.append(("I-" if following == tag else "L-") + tag[2:])
    return out


def write_conll04(root: Path, train: int = 24, dev: int = 12) -> Path:
    folder = Path(root) / "conll04"
    folder.mkdir(parents=True, exist_ok=True)
    rename = {"PER": "Peop", "LOC": "Loc", "ORG": "Org", "MISC": "Other"}
    for name, count, seed in (("train.json", train, 2), ("dev.json", dev, 3)):
        items = []
        for n, (words, tags) in enumerate(sentences(count, seed)):
            tags = [t if t == "O" else t[:2] + rename[t[2:]] for t in tags]
            items.append({"tokens": words, "tags": _bilou(tags), "relations": [], "orig_id": n})
        (folder / name).write_text(json.dumps(items))
    return Path(root)


CONTEXTS = [
    "The capital of France is Paris. Paris is a city in France. The river flows through the valley.",
    "John Smith works for the United Nations in New York. Mary lives in London with her cat.",
    "Jupiter is the largest planet in the solar system. The quick brown fox jumps over the lazy dog.",
    "The company reported strong earnings; its shares rose by five percent on Tuesday.",
]
QUESTIONS = [
    (0, "What is the capital of France?", "Paris"),
    (0, "What flows through the valley?", "The river"),
    (1, "Who works for the United Nations?", "John Smith"),
    (1, "Where does Mary live?", "London"),
    (2, "What is the largest planet?", "Jupiter"),
    (2, "What jumps over the lazy dog?", "The quick brown fox"),
    (3, "When did the shares rise?", "Tuesday"),
    (3, "By how much did the shares rise?", "five percent"),
]
UNANSWERABLE = [(0, "What is the capital of Spain?"), (2, "Who owns the cat?"), (3, "Where is Berlin?")]


def squad_document(version: str, repeat: int = 1) -> dict:
    paragraphs = []
    for c, context in enumerate(CONTEXTS):
        qas = []
        for r in range(repeat):
            for k, (cc, question, answer) in enumerate(QUESTIONS):
                if cc == c:
                    qas.append({"id": f"q{c}-{k}-{r}", "question": question,
                                "answers": [{"text": answer, "answer_start": context.index(answer)}]})
            if version == "v2.0":
                for k, (cc, question) in enumerate(UNANSWERABLE):
                    if cc == c:
                        qas.append({"id": f"u{c}-{k}-{r}", "question": question, "answers": [],
                                    "is_impossible": True})
        paragraphs.append({"context": context, "qas": qas})
    return {"version": version, "data": [{"title": "tiny", "paragraphs": paragraphs}]}


def write_squad(root: Path, version: str = "v1.1", repeat: int = 2) -> Path:
    folder = Path(root) / ("squad_v2" if version == "v2.0" else "squad")
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", repeat), ("dev", 1)):
        (folder / f"{split}-{version}.json").write_text(json.dumps(squad_document(version, count)))
    return Path(root)


def config(model_dir, data_dir, task: str, method: str, **options):
    """A base config for a tiny run of `task` with `method` (prompt lengths 4, max_length 64)."""
    from configs import base

    c = base.get_config()
    c.model.name = str(model_dir)
    c.data_dir = str(data_dir)
    c.task.name = task
    c.task.max_length = 64
    c.method.name = method
    c.prompt.length = 4
    c.prompt.deep.length = 4 if method == "ptuning_v2" else 0
    c.head.type = "span" if task.startswith("squad") else "token"
    for key, value in options.items():
        c.task.options[key] = value
    return c
