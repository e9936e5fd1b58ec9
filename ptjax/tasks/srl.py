"""Semantic role labelling from CoNLL-2005/2012-style column files, one example per predicate.

A sentence block has a word column, optionally a predicate column ("-" for non-predicates, the
lemma otherwise) and one bracketed argument column per predicate, in sentence order:

    The     -     (A0*     *
    cat     -     *)       *
    sat     sit   (V*)     *
    ...

Styles (column indices, `end` exclusive and negative from the right):
    conll05: words + props pasted (`word target args...`): word 0, predicate 1, args 2..end
    conll12: the *_conll files: word 3, args 11..-1 (the last column is coreference)

Each predicate gives Example(fields={"tokens", "predicate"}, label=IOB2 tags with B-V on the
predicate, meta={"predicate_index", ...}); the pipeline appends the predicate to the sentence as
P-tuning v2 does. The label set is read from the data (`collect_labels`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ptjax.data.readers import read_conll
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, register
from ptjax.tasks.tagging import brackets_to_iob2, split_file


@dataclasses.dataclass(frozen=True)
class SrlColumns:
    word: int
    first_arg: int
    end_arg: int | None = None  # exclusive; None = to the last column, -1 = all but the last
    predicate: int | None = None


STYLES = {"conll05": SrlColumns(word=0, first_arg=2, predicate=1),
          "conll12": SrlColumns(word=3, first_arg=11, end_arg=-1)}
_FOLDERS = {"conll05": ["conll05", "conll2005"], "conll12": ["conll12", "conll2012"]}


def load_srl(data_dir: Any, split: str, style: str | SrlColumns = "conll05") -> list[Example]:
    columns = STYLES[style] if isinstance(style, str) else style
    name = f"srl_{style}" if isinstance(style, str) else "srl"
    folders = _FOLDERS.get(style, ["srl"]) if isinstance(style, str) else ["srl"]
    path = split_file(data_dir, folders, split, ["", ".txt", ".conll", ".gold_conll"], name)
    comments = ("#begin document", "#end document")
    out = []
    for n, sentence in enumerate(read_conll(path, min_columns=columns.first_arg, comment_prefixes=comments)):
        where = at(path, sentence.line)
        end = sentence.num_columns if columns.end_arg is None else (
            columns.end_arg if columns.end_arg >= 0 else sentence.num_columns + columns.end_arg)
        arg_columns = range(columns.first_arg, end)
        tokens = tuple(sentence.column(columns.word))
        marked = None
        if columns.predicate is not None:
            marked = [i for i, v in enumerate(sentence.column(columns.predicate)) if v != "-"]
            if len(marked) != len(arg_columns):
                raise InputError(f"{where}: {len(marked)} predicates marked in column {columns.predicate} "
                                 f"but {len(arg_columns)} argument columns")
        for k, column in enumerate(arg_columns):
            column_where = f"{where}: column {column}"
            tags = brackets_to_iob2(sentence.column(column), column_where)
            verbs = [i for i, t in enumerate(tags) if t == "B-V"]
            if len(verbs) != 1:
                raise InputError(f"{column_where}: expected one (V*) predicate span, found {len(verbs)}")
            predicate = verbs[0]
            if marked is not None and marked[k] != predicate:
                raise InputError(f"{column_where}: the (V*) span is at token {predicate} but predicate "
                                 f"{k + 1} is marked at token {marked[k]}")
            meta = {"predicate_index": predicate, "sentence": n, "where": column_where}
            out.append(Example(f"{name}-{split}-{n}-{k}", {"tokens": tokens, "predicate": tokens[predicate]},
                               tuple(tags), meta))
    return out


def _style_loader(style: str):
    def load(data_dir: Any, split: str) -> list[Example]:
        return load_srl(data_dir, split, style)

    return load


for _style in STYLES:
    register(TaskSpec(f"srl_{_style}", "tagging", None, ("srl_f1",), _style_loader(_style),
                      ("train", "dev", "test"), ("tokens", "predicate"),
                      description=f"semantic role labelling, CoNLL-20{_style[5:]} columns"))
