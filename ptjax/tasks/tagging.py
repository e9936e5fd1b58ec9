"""Named-entity tagging: CoNLL-2003, CoNLL04 and OntoNotes-style column files, all as IOB2.

An example's fields are {"tokens": tuple[str, ...]}; its label is a tuple of IOB2 tags, one per
token. Tag conversions shared with SRL live here: IOB1 -> IOB2, BILOU -> IOB2 (U -> B, L -> I) and
bracketed span columns ("(PERSON*", "*", "*)") -> IOB2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ptjax.data.readers import ConllSentence, find_file, get_field, read_conll, read_json
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, register, task_dir


def _iob_labels(types: Sequence[str]) -> tuple[str, ...]:
    return ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))


CONLL03_LABELS = _iob_labels(["PER", "ORG", "LOC", "MISC"])
CONLL04_LABELS = _iob_labels(["Loc", "Org", "Other", "Peop"])
ONTONOTES_TYPES = ["PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "DATE", "TIME", "PERCENT",
                   "MONEY", "QUANTITY", "ORDINAL", "CARDINAL", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"]
ONTONOTES_LABELS = _iob_labels(ONTONOTES_TYPES)
_SPLIT_FILES = {"dev": ("valid", "dev", "development"), "valid": ("valid", "dev", "development")}


# --------------------------------------------------------------------------------------------
# Tag conversions.


def check_iob(tags: Sequence[str], where: str) -> None:
    for i, tag in enumerate(tags):
        if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
            raise InputError(f"{where}: token {i}: tag {tag!r} is not O, B-<type> or I-<type>")


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (I- opens a span unless it continues one of the same type) to IOB2; IOB2 is unchanged."""
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def bilou_to_iob2(tags: Sequence[str], where: str = "tags") -> list[str]:
    """BILOU (also BIOES: E = L, S = U) to IOB2: U -> B, L -> I; a broken sequence is an error."""
    out = []
    open_type = None  # the type of a span that B/I opened and L has not closed yet
    for i, tag in enumerate(tags):
        prefix, type_ = (tag, "") if tag == "O" else (tag[:1], tag[2:])
        if tag != "O" and (tag[1:2] != "-" or not type_ or prefix not in "BILUES"):
            raise InputError(f"{where}: token {i}: tag {tag!r} is not O or B/I/L/U-<type>")
        inside = prefix in ("I", "L", "E")
        if inside != (open_type is not None) or (inside and type_ != open_type):
            expected = f"I-{open_type} or L-{open_type}" if open_type else "O, B-<type> or U-<type>"
            raise InputError(f"{where}: token {i}: tag {tag!r} where {expected} must come")
        open_type = type_ if prefix in ("B", "I") else None
        out.append("O" if tag == "O" else ("B-" if prefix in ("B", "U", "S") else "I-") + type_)
    if open_type is not None:
        raise InputError(f"{where}: the span {open_type} opened with B- is never closed with L-")
    return out


_OPEN = re.compile(r"\(([^()*\s]+)")


def brackets_to_iob2(cells: Sequence[str], where: str = "column") -> list[str]:
    """A bracketed span column ("(ARG0*", "*", "*)", "(V*)") to IOB2 tags; spans may not nest."""
    tags = []
    current = None
    for i, cell in enumerate(cells):
        left, star, right = cell.partition("*")
        opens = _OPEN.findall(left)
        closes = right.count(")")
        well_formed = "".join(f"({o}" for o in opens) == left and re.fullmatch(r"(?:[^()*\s]*\))*", right)
        if not star or not well_formed:
            raise InputError(f"{where}: token {i}: {cell!r} is not a span cell like '(A0*', '*' or '*)'")
        if len(opens) > 1 or closes > 1 or (opens and current is not None):
            raise InputError(f"{where}: token {i}: {cell!r} nests spans, which this column may not")
        if opens:
            current = opens[0]
            tags.append("B-" + current)
        else:
            tags.append("O" if current is None else "I-" + current)
        if closes:
            if current is None:
                raise InputError(f"{where}: token {i}: {cell!r} closes a span that was never opened")
            current = None
    if current is not None:
        raise InputError(f"{where}: the span {current} is never closed")
    return tags


# --------------------------------------------------------------------------------------------
# Files.


def split_file(data_dir: Any, folders: Sequence[str], split: str, suffixes: Sequence[str], what: str) -> Path:
    folder = task_dir(data_dir, folders)
    stems = _SPLIT_FILES.get(split, (split,))
    names = [f"{stem}{suffix}" for stem in stems for suffix in suffixes]
    return find_file(folder, names, f"{what} split {split!r}")


def _tagging_example(name: str, split: str, n: int, tokens: Sequence[str], tags: Sequence[str],
                     where: str, **meta: Any) -> Example:
    return Example(f"{name}-{split}-{n}", {"tokens": tuple(tokens)}, tuple(tags), {"where": where, **meta})


def _column_examples(name: str, split: str, sentences: Sequence[ConllSentence], path: Path,
                     word_column: int, tag_column: int) -> list[Example]:
    out = []
    for n, sentence in enumerate(sentences):
        where = at(path, sentence.line)
        tags = sentence.column(tag_column)
        check_iob(tags, where)
        out.append(_tagging_example(name, split, n, sentence.column(word_column), iob1_to_iob2(tags), where))
    return out


def load_conll03(data_dir: Any, split: str) -> list[Example]:
    """CoNLL-2003: `token POS chunk NER` lines; IOB1 files are converted to IOB2 on the way."""
    path = split_file(data_dir, ["conll03", "conll2003"], split, [".txt", ".conll"], "conll03")
    return _column_examples("conll03", split, list(read_conll(path, num_columns=4)), path, 0, 3)


def load_conll04(data_dir: Any, split: str) -> list[Example]:
    """CoNLL04: a JSON list of {tokens, tags (BILOU), relations, orig_id}. meta["relations"] keeps
    the relations as (head entity index, tail entity index, type), entities counted in order."""
    path = split_file(data_dir, ["conll04"], split, [".json"], "conll04")
    document = read_json(path)
    if not isinstance(document, list):
        raise InputError(f"{path}: expected a JSON list of sentences")
    out = []
    for n, item in enumerate(document):
        where = f"{path}: item {n}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object")
        tokens = get_field(item, "tokens", list, where)
        tags = get_field(item, "tags", list, where)
        if len(tokens) != len(tags):
            raise InputError(f"{where}: {len(tags)} tags for {len(tokens)} tokens")
        if not all(isinstance(t, str) for t in tokens + tags):
            raise InputError(f"{where}: tokens and tags should be strings")
        relations = tuple((get_field(r, "head", int, where), get_field(r, "tail", int, where),
                           get_field(r, "type", str, where))
                          for r in get_field(item, "relations", list, where, required=False, default=[]))
        out.append(_tagging_example("conll04", split, n, tokens, bilou_to_iob2(tags, where), where,
                                    relations=relations, orig_id=item.get("orig_id")))
    return out


def tagging_parser(name: str, labels: Sequence[str] | None = None, *, scheme: str = "iob") -> Callable:
    """A record parser (TaskSpec.parse) for rows {"tokens": [...], "tags": [...]}: tags in IOB1/IOB2
    (scheme "iob") or BILOU ("bilou"), converted to IOB2 and, with `labels`, checked against them."""

    def parse(records: Iterable[tuple[str, dict]], split: str) -> list[Example]:
        out = []
        for n, (where, record) in enumerate(records):
            tokens = get_field(record, "tokens", list, where)
            tags = get_field(record, "tags", list, where)
            if len(tokens) != len(tags):
                raise InputError(f"{where}: {len(tags)} tags for {len(tokens)} tokens")
            if not all(isinstance(t, str) for t in tokens + tags):
                raise InputError(f"{where}: tokens and tags should be strings")
            if scheme == "bilou":
                tags = bilou_to_iob2(tags, where)
            else:
                check_iob(tags, where)
                tags = iob1_to_iob2(tags)
            unknown = [t for t in tags if labels is not None and t not in labels]
            if unknown:
                raise InputError(f"{where}: tag {unknown[0]!r} is not one of {', '.join(labels)}")
            key = record.get("id", n)
            out.append(_tagging_example(name, split, key if isinstance(key, (str, int)) else n, tokens, tags, where))
        return out

    return parse


def _is_bracket_column(cells: Sequence[str]) -> bool:
    return all(re.fullmatch(r"(?:\([^()*\s]+)?\*\)?", c) for c in cells)


def load_ontonotes(data_dir: Any, split: str) -> list[Example]:
    """OntoNotes NER from column files: CoNLL-2012 `*_conll` files (word in column 3, bracketed
    named entities in column 10; a split may be a folder of them) or simple `token ... TAG` files
    with BIO tags in the last column."""
    folder = task_dir(data_dir, ["ontonotes", "conll2012"])
    stems = _SPLIT_FILES.get(split, (split,))
    directory = next((folder / s for s in stems if (folder / s).is_dir()), None)
    if directory is not None:
        paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith("_conll"))
        if not paths:
            raise InputError(f"ontonotes split {split!r}: no *_conll files under {directory}")
    else:
        paths = [split_file(data_dir, ["ontonotes", "conll2012"], split,
                            [".txt", ".conll", ".gold_conll", ".tsv"], "ontonotes")]
    out: list[Example] = []
    for path in paths:
        sentences = list(read_conll(path, comment_prefixes=("#begin document", "#end document")))
        if sentences and sentences[0].num_columns >= 11 and _is_bracket_column(sentences[0].column(10)):
            for sentence in sentences:
                where = at(path, sentence.line)
                tags = brackets_to_iob2(sentence.column(10), f"{where}: named-entity column")
                out.append(_tagging_example("ontonotes", split, len(out), sentence.column(3), tags, where))
        else:
            for example in _column_examples("ontonotes", split, sentences, path, 0, -1):
                out.append(_tagging_example("ontonotes", split, len(out), example.fields["tokens"],
                                            example.label, example.meta["where"]))
    return out


_SPLITS = ("train", "dev", "test")
register(TaskSpec("conll03", "tagging", CONLL03_LABELS, ("entity_f1",), load_conll03, _SPLITS,
                  ("tokens",), description="CoNLL-2003 English NER",
                  parse=tagging_parser("conll03", CONLL03_LABELS), source_columns={"tags": "ner_tags"}))
register(TaskSpec("conll04", "tagging", CONLL04_LABELS, ("entity_f1",), load_conll04, _SPLITS,
                  ("tokens",), description="CoNLL04 entities (BILOU converted to IOB2)",
                  parse=tagging_parser("conll04", CONLL04_LABELS, scheme="bilou")))
register(TaskSpec("ontonotes", "tagging", ONTONOTES_LABELS, ("entity_f1",), load_ontonotes,
                  ("train", "dev", "test"), ("tokens",), description="OntoNotes 5.0 NER (18 types)",
                  parse=tagging_parser("ontonotes", ONTONOTES_LABELS), source_columns={"tags": "ner_tags"}))
