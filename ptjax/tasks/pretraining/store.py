"""Built pre-training examples as JSON lines, so that a large build is done once.

    count = write_examples("nsp-train.jsonl", builder.build(documents), limit=100_000,
                           header={"task": "ppt_nsp", "options": {...}})
    header = read_header("nsp-train.jsonl")              # the dict given, or None
    for example in read_examples("nsp-train.jsonl"): ...

One example per line: {"guid", "fields", "label", "meta"}; an optional first line
{"header": {...}} records how the file was built. Field values that are lists (choices) come
back as tuples. The file is written beside its final name and renamed when complete, so an
interrupted build never leaves a truncated file under that name.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ptjax.data.readers import get_field, read_jsonl
from ptjax.errors import at
from ptjax.tasks.base import Example


def write_examples(path: str | Path, examples: Iterable[Example], *, limit: int | None = None,
                   header: dict[str, Any] | None = None) -> int:
    """Write (at most `limit`) examples; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            if header is not None:
                handle.write(json.dumps({"header": header}, ensure_ascii=False) + "\n")
            for example in itertools.islice(examples, limit):
                record = {"guid": example.guid, "fields": example.fields, "label": example.label,
                          "meta": example.meta}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return count


def read_header(path: str | Path) -> dict[str, Any] | None:
    for _, record in read_jsonl(path):
        return record["header"] if "header" in record else None
    return None


def read_examples(path: str | Path) -> Iterator[Example]:
    path = Path(path)
    for number, record in read_jsonl(path):
        if "header" in record:
            continue
        where = at(path, number)
        guid = get_field(record, "guid", str, where)
        fields = get_field(record, "fields", dict, where)
        meta = get_field(record, "meta", dict, where, required=False, default={})
        fields = {name: tuple(value) if isinstance(value, list) else value for name, value in fields.items()}
        yield Example(guid, fields, record.get("label"), meta)
