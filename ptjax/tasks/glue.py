"""GLUE-format files: SST-2 tsv and MNLI-style sentence pairs (also the format for user data).

SST-2: `sentence<TAB>label` with a header (train.tsv, dev.tsv; test.tsv has `index<TAB>sentence`
and no labels), labels "0" (negative) and "1" (positive).

Sentence pairs: a .tsv/.csv with a header or a .jsonl, one pair per row. The columns may be called
premise/sentence1/text_a, hypothesis/sentence2/text_b and label/gold_label (MNLI's own tsv works
as is). `sentence_pair_task` registers a user data set with its own label list:

    sentence_pair_task("my_nli", labels=("yes", "no"), folder="my_nli")
    get_task("my_nli").load("/data", "train")   # /data/my_nli/train.tsv or .jsonl, or /data/train.*
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ptjax.data.readers import find_file, read_jsonl, read_table
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, check_label, register, task_dir

SST2_LABELS = ("0", "1")
MNLI_LABELS = ("entailment", "neutral", "contradiction")
PAIR_COLUMNS = {"premise": ("premise", "sentence1", "text_a"),
                "hypothesis": ("hypothesis", "sentence2", "text_b"),
                "label": ("label", "gold_label")}


def load_sst2(data_dir: Any, split: str) -> list[Example]:
    folder = task_dir(data_dir, ["sst2", "SST-2"], marker="dev.tsv")
    path = find_file(folder, [f"{split}.tsv"], f"sst2 split {split!r}")
    rows = ((at(path, line), row) for line, row in read_table(path, header=True))
    return parse_sst2(rows, split, header=at(path, 1))


# The hub's glue/sst2 names its ClassLabel ids; GLUE's files write 0 and 1.
_SST2_NAMES = {"negative": "0", "positive": "1"}


def parse_sst2(records: Iterable[tuple[str, dict]], split: str, header: str | None = None) -> list[Example]:
    """SST-2 rows {"sentence", "label" (0/1, or the hub's negative/positive), "idx"/"index"}."""
    out = []
    for n, (where, row) in enumerate(records):
        if "sentence" not in row:
            raise InputError(f"{header or where}: no 'sentence' column (columns: {', '.join(map(str, row))})")
        raw = row.get("label")
        label = None if raw in (None, "") else check_label(_SST2_NAMES.get(raw, raw), SST2_LABELS, where)
        idx = row.get("index", row.get("idx", n))
        out.append(Example(f"sst2-{split}-{idx}", {"sentence": row["sentence"].strip()}, label,
                           {"where": where}))
    return out


def _pick(record: dict, role: str, where: str, required: bool) -> Any:
    for name in PAIR_COLUMNS[role]:
        if name in record:
            return record[name]
    if required:
        raise InputError(f"{where}: no {role} (a field named {' or '.join(PAIR_COLUMNS[role])})")
    return None


def _pair_records(path: Path) -> Iterator[tuple[str, dict]]:
    if path.suffix == ".jsonl":
        for line, record in read_jsonl(path):
            yield at(path, line), record
    else:
        for line, row in read_table(path, header=True):
            yield at(path, line), row


def load_pair_file(path: Any, split: str, labels: Sequence[str], name: str = "pairs") -> list[Example]:
    """Sentence pairs from one file. Either every row has a label or none has (unlabeled data);
    rows labelled "-" (MNLI's mark for pairs without annotator agreement) are left out."""
    return parse_pairs(_pair_records(Path(path)), split, labels, name)


def parse_pairs(records: Iterable[tuple[str, dict]], split: str, labels: Sequence[str],
                name: str = "pairs") -> list[Example]:
    """Sentence pairs from (where, record) rows of any source (see load_pair_file)."""
    examples = []
    for n, (where, record) in enumerate(records):
        premise = _pick(record, "premise", where, True)
        hypothesis = _pick(record, "hypothesis", where, True)
        for role, value in (("premise", premise), ("hypothesis", hypothesis)):
            if not isinstance(value, str):
                raise InputError(f"{where}: the {role} should be a string, found {value!r}")
        raw = _pick(record, "label", where, False)
        if raw == "-":
            continue
        label = None if raw in (None, "") else check_label(raw, labels, where)
        idx = record.get("idx", record.get("pairID", n))
        examples.append(Example(f"{name}-{split}-{idx}", {"premise": premise.strip(),
                                                           "hypothesis": hypothesis.strip()},
                                label, {"where": where}))
    labeled = sum(e.label is not None for e in examples)
    if 0 < labeled < len(examples):
        first = next(e for e in examples if e.label is None)
        raise InputError(f"{first.meta['where']}: missing label (other rows of this file have one)")
    return examples


def sentence_pair_task(name: str, labels: Sequence[str], folder: str | None = None,
                       splits: Sequence[str] = ("train", "dev", "test")) -> TaskSpec:
    """Register an MNLI-style task reading <data_dir>[/<folder>]/<split>.{tsv,jsonl,csv}."""
    folders = [folder or name]

    def load(data_dir: Any, split: str) -> list[Example]:
        root = task_dir(data_dir, folders)
        names = [f"{split}.tsv", f"{split}.jsonl", f"{split}.csv"]
        if split == "dev":
            names += ["dev_matched.tsv", "dev_matched.jsonl"]
        path = find_file(root, names, f"{name} split {split!r}")
        return load_pair_file(path, split, tuple(labels), name)

    def parse(records, split: str) -> list[Example]:
        return parse_pairs(records, split, tuple(labels), name)

    return register(TaskSpec(name, "classification", tuple(labels), ("accuracy",), load, tuple(splits),
                             ("premise", "hypothesis"), description=f"sentence pairs ({name})", parse=parse),
                    replace=True)


register(TaskSpec("sst2", "classification", SST2_LABELS, ("accuracy",), load_sst2, ("train", "dev", "test"),
                  ("sentence",), description="GLUE SST-2 binary sentiment (tsv)", parse=parse_sst2))
sentence_pair_task("mnli", MNLI_LABELS, folder="MNLI")
