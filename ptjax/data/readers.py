"""Readers for the file formats data sets come in; every malformed line is an InputError.

Each reader is a generator that reads its file once, front to back, and yields records tagged with
the line they came from, so that a task loader can name the line when a record is well-formed for
the format but wrong for the task (a missing field, an unknown label):

    for line, record in read_jsonl(path):            # (int, dict)
    for line, row in read_table(path, header=True):  # (int, dict[str, str]); header=False: list[str]
    for sentence in read_conll(path, num_columns=4):  # ConllSentence(line, rows)
    for line, tree in read_trees(path):               # (int, Tree), PTB bracketed trees
    for line, label, text in read_labeled_lines(path):  # "label ||| sentence"
    document = read_json(path)                        # one JSON document

Messages look like "data/train.jsonl:17: invalid JSON (Expecting ',' delimiter at column 40)".
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from ptjax.errors import InputError, at

PathLike = str | Path


# --------------------------------------------------------------------------------------------
# Files and fields.


def find_file(data_dir: PathLike, candidates: Sequence[PathLike], what: str) -> Path:
    """The first of `candidates` (relative to data_dir) that is a file; else an error listing all."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{what}: data directory {data_dir} does not exist")
    paths = [data_dir / c for c in candidates]
    for path in paths:
        if path.is_file():
            return path
    raise InputError(f"{what}: no data file found; looked for {', '.join(str(p) for p in paths)}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")


def read_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without the line break), decoding UTF-8 (a leading BOM dropped).

    Lines are decoded one by one, so a bad byte is reported on its own line.
    """
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{at(path, number)}: not valid UTF-8 text "
                                 f"(byte {error.start + 1}: {error.reason})") from None
            yield number, line.rstrip("\r\n")


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
               dict: "an object", float: "a number"}


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # JSON true/false are not numbers
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def get_field(record: dict, name: str, kind: type | tuple[type, ...], where: str,
              *, required: bool = True, default: Any = None) -> Any:
    """record[name], checked to be of `kind` (bool is not an int here); `where` starts the message."""
    if name not in record or record[name] is None:
        if required:
            raise InputError(f"{where}: missing field '{name}'")
        return default
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not any(_is_kind(value, k) for k in kinds):
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise InputError(f"{where}: field '{name}' should be {expected}, found {json_type(value)}")
    return value


# --------------------------------------------------------------------------------------------
# JSON.


def _json_error(path: Path, line: int, error: json.JSONDecodeError) -> InputError:
    return InputError(f"{at(path, line)}: invalid JSON ({error.msg} at column {error.colno})")


def read_jsonl(path: PathLike) -> Iterator[tuple[int, dict]]:
    """One JSON object per line; blank lines are skipped."""
    path = Path(path)
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _json_error(path, number, error) from None
        if not isinstance(record, dict):
            raise InputError(f"{at(path, number)}: expected a JSON object, found {json_type(record)}")
        yield number, record


def read_json(path: PathLike) -> Any:
    """A whole JSON document (SQuAD, CoNLL04 lists, vocabulary files)."""
    path = Path(path)
    _check_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not valid UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _json_error(path, error.lineno, error) from None


# --------------------------------------------------------------------------------------------
# Delimited tables.


def read_table(path: PathLike, *, header: bool, delimiter: str | None = None,
               num_columns: int | None = None) -> Iterator[tuple[int, Any]]:
    """Rows of a tsv/csv file; blank lines are skipped.

    header=True: the first line names the columns and rows are dict[str, str].
    header=False: rows are list[str], all as long as `num_columns` (default: the first row's).
    The delimiter defaults to "," for .csv (quoted fields as in RFC 4180) and tab otherwise; tab
    files are split literally, quotes included, as GLUE writes them.
    """
    path = Path(path)
    if delimiter is None:
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    names: list[str] | None = None
    expected = num_columns
    for number, cells in _table_rows(path, delimiter):
        if header and names is None:
            names = [c.strip() for c in cells]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise InputError(f"{at(path, number)}: repeated column name {duplicates[0]!r} in the header")
            expected = len(names)
            continue
        if expected is None:
            expected = len(cells)
        if len(cells) != expected:
            raise InputError(f"{at(path, number)}: expected {expected} columns, found {len(cells)}")
        yield number, dict(zip(names, cells)) if header else cells
    if header and names is None:
        raise InputError(f"{path}: empty file (a header line was expected)")


def _table_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    if delimiter != ",":
        for number, line in read_lines(path):
            if line.strip():
                yield number, line.split(delimiter)
        return
    reader = csv.reader((line + "\n" for _, line in read_lines(path)), delimiter=delimiter, strict=True)
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, cells
    except csv.Error as error:
        raise InputError(f"{at(path, reader.line_num)}: malformed CSV ({error})") from None


# --------------------------------------------------------------------------------------------
# CoNLL column files.


@dataclasses.dataclass(frozen=True)
class ConllSentence:
    """One blank-line-separated block: `line` is the line of its first token."""

    line: int
    rows: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_columns(self) -> int:
        return len(self.rows[0])

    def column(self, index: int) -> list[str]:
        return [row[index] for row in self.rows]


def read_conll(path: PathLike, *, num_columns: int | None = None, min_columns: int = 1,
               separator: str | None = None, skip_docstart: bool = True,
               comment_prefixes: Sequence[str] = ()) -> Iterator[ConllSentence]:
    """Sentences of a column file: one token per line, a blank line between sentences.

    num_columns fixes the column count of every token line; without it each line must match the
    first line of its sentence (SRL files have one column per predicate), with at least
    `min_columns`. Columns are split on any whitespace unless `separator` is given. "-DOCSTART-"
    lines (CoNLL-2003 document breaks) and lines starting with a comment prefix are skipped.
    """
    path = Path(path)
    rows: list[tuple[str, ...]] = []
    first = 0
    for number, line in read_lines(path):
        if not line.strip():
            if rows:
                yield ConllSentence(first, tuple(rows))
                rows = []
            continue
        if comment_prefixes and line.lstrip().startswith(tuple(comment_prefixes)):
            continue
        cells = tuple(line.split(separator)) if separator else tuple(line.split())
        if skip_docstart and cells[0] == "-DOCSTART-":
            continue
        if num_columns is not None and len(cells) != num_columns:
            raise InputError(f"{at(path, number)}: a token line needs {num_columns} columns, "
                             f"found {len(cells)}")
        if len(cells) < min_columns:
            raise InputError(f"{at(path, number)}: a token line needs at least {min_columns} columns, "
                             f"found {len(cells)}")
        if rows and len(cells) != len(rows[0]):
            raise InputError(f"{at(path, number)}: a token line needs {len(rows[0])} columns "
                             f"like the line {first} that starts its sentence, found {len(cells)}")
        if not rows:
            first = number
        rows.append(cells)
    if rows:
        yield ConllSentence(first, tuple(rows))


# --------------------------------------------------------------------------------------------
# Penn Treebank bracketed trees.


@dataclasses.dataclass(frozen=True)
class Tree:
    """A constituency tree: a leaf has a `word` and no children."""

    label: str
    children: tuple["Tree", ...] = ()
    word: str | None = None

    def leaves(self) -> list[str]:
        if self.word is not None:
            return [self.word]
        return [w for child in self.children for w in child.leaves()]

    def subtrees(self) -> Iterator["Tree"]:
        """This tree and every subtree, pre-order."""
        yield self
        for child in self.children:
            yield from child.subtrees()


_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def parse_tree(text: str) -> Tree:
    """Parse one bracketed tree "(3 (2 The) (4 (2 is) (3 good)))"; ValueError says what is wrong.

    A leaf's word may contain spaces (SST writes "(2 2 1\\/2)"); a node either has children or a
    word. An empty root label "( (S ...) )" is allowed.
    """
    tokens = _TREE_TOKEN.findall(text)
    if not tokens or tokens[0] != "(":
        raise ValueError("a tree must start with '('")
    position = 0

    def node() -> Tree:
        nonlocal position
        position += 1  # the "("
        label = ""
        if position < len(tokens) and tokens[position] not in "()":
            label = tokens[position]
            position += 1
        children: list[Tree] = []
        words: list[str] = []
        while True:
            if position >= len(tokens):
                raise ValueError("unbalanced parentheses: a ')' is missing")
            token = tokens[position]
            if token == ")":
                position += 1
                break
            if token == "(":
                children.append(node())
            else:
                words.append(token)
                position += 1
        if children and words:
            raise ValueError(f"node {label!r} mixes words {' '.join(words)!r} with subtrees")
        if not children and not words:
            raise ValueError(f"node {label!r} has neither a word nor subtrees")
        return Tree(label, tuple(children), " ".join(words) if words else None)

    tree = node()
    if position != len(tokens):
        raise ValueError(f"unexpected {tokens[position]!r} after the end of the tree")
    return tree


def read_trees(path: PathLike) -> Iterator[tuple[int, Tree]]:
    """Trees of a PTB-style file: one per line (SST) or spread over lines (.mrg); (start line, tree)."""
    path = Path(path)
    pending: list[str] = []
    depth = 0
    start = 0
    for number, line in read_lines(path):
        if not line.strip():
            continue
        if not pending:
            start = number
        pending.append(line)
        depth += line.count("(") - line.count(")")
        if depth > 0:
            continue
        text = " ".join(pending)
        pending, depth = [], 0
        try:
            yield start, parse_tree(text)
        except ValueError as error:
            raise InputError(f"{at(path, start)}: bad tree ({error})") from None
    if pending:
        raise InputError(f"{at(path, start)}: bad tree (unbalanced parentheses: the file ends "
                         f"before the tree is closed)")


# --------------------------------------------------------------------------------------------
# "label ||| sentence" lines.


def read_labeled_lines(path: PathLike, separator: str = "|||") -> Iterator[tuple[int, str, str]]:
    """(line, label, text) from lines "label ||| text"; blank lines are skipped."""
    path = Path(path)
    for number, line in read_lines(path):
        if not line.strip():
            continue
        label, found, text = line.partition(separator)
        if not found:
            raise InputError(f"{at(path, number)}: expected 'label {separator} text', "
                             f"found no '{separator}'")
        label, text = label.strip(), text.strip()
        if not label:
            raise InputError(f"{at(path, number)}: empty label before '{separator}'")
        yield number, label, text
