"""Where a task's rows come from: its own files, a Hugging Face dataset, or plain data files.

    spec = configured_task(config)             # get_task(config.task.name), bound to config.task.source
    examples = spec.load(config.data_dir, "validation")

config.task.source picks the reader (the task's record parser, TaskSpec.parse, reads every row):
    ""                      the task's own files under config.data_dir (the shared layout)
    "NAME" / "NAME:CONFIG"  a Hugging Face hub dataset, datasets.load_dataset(NAME, CONFIG)
                            (downloads once into the datasets cache; needs the internet then)
    an existing folder      written by datasets.save_to_disk: a DatasetDict, or a Dataset that
                            holds one split (a folder per split: FOLDER/train, FOLDER/validation)
    "PATH/{split}.EXT"      data files, EXT jsonl, json (a list of objects), csv, tsv or parquet;
                            a glob ("data/{split}-*.parquet") reads the matching files in order
config.task.splits: "run split=source split" pairs ("validation=test"); unlisted splits read the
    split of the same name, where validation, dev, val and valid stand for one another.
config.task.columns: "field=column" pairs: the task's field (or "label", "id", "tags", ...) is
    read from that column; other columns keep their names.

Hugging Face ClassLabel columns become their label names (-1, an unlabeled test row, becomes no
label). A bad row is an InputError naming the file and line (jsonl, csv), the file and row
(parquet) or the dataset, split and row.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ptjax.data.readers import read_json, read_jsonl, read_table
from ptjax.errors import InputError, at
from ptjax.tasks import custom, fewshot
from ptjax.tasks.base import TaskSpec, get_task

FILE_TYPES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# Split names that stand for one another when the source has no split of the asked name.
_SAME_SPLIT = ("validation", "dev", "val", "valid")

Rows = Iterator[tuple[str, dict]]  # ("where", row)


def pairs(entries, what: str) -> dict[str, str]:
    """("a=b", ...) config entries as {a: b}."""
    out = {}
    for entry in entries or ():
        key, found, value = str(entry).partition("=")
        if not found or not key.strip() or not value.strip():
            raise InputError(f"config.task.{what}: {entry!r} is not 'name=value'")
        out[key.strip()] = value.strip()
    return out


def _candidates(split: str) -> list[str]:
    return [split] + [s for s in _SAME_SPLIT if s != split] if split in _SAME_SPLIT else [split]


# --------------------------------------------------------------------------------------------
# Readers: (split) -> rows.


def _label_names(feature: Any) -> Callable[[Any], Any] | None:
    """ClassLabel ids -> names (also inside a list feature, e.g. conll2003's ner_tags); None for
    other features."""
    import datasets

    def name(names):
        return lambda value: None if value is None or value < 0 else names[value]

    if isinstance(feature, datasets.ClassLabel):
        return name(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        one = name(inner.names)
        return lambda values: None if values is None else [one(v) for v in values]
    return None


def _dataset_rows(dataset, origin: str) -> Rows:
    decoders = {column: d for column, feature in dataset.features.items() if (d := _label_names(feature))}
    for index, row in enumerate(dataset):
        for column, decode in decoders.items():
            row[column] = decode(row[column])
        yield f"{origin} row {index}", row


def _pick_split(splits: Mapping[str, Any], split: str, origin: str) -> str:
    for name in _candidates(split):
        if name in splits:
            return name
    raise InputError(f"{origin} has no split {split!r} (splits: {', '.join(splits)}); map one with "
                     f"config.task.splits=('{split}=NAME',)")


@dataclasses.dataclass(frozen=True)
class HubSource:
    """A hub dataset name, loaded whole once (datasets caches it)."""

    name: str
    config: str | None = None

    def rows(self, split: str) -> Rows:
        import datasets

        try:
            loaded = datasets.load_dataset(self.name, self.config)
        except Exception as error:  # noqa: BLE001  (offline, unknown name, bad config: one line)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(f"config.task.source={self.describe()!r}: the Hugging Face dataset could not "
                             f"be loaded ({reason})") from None
        name = _pick_split(loaded, split, f"dataset {self.describe()}")
        return _dataset_rows(loaded[name], f"{self.describe()}[{name}]")

    def describe(self) -> str:
        return self.name if self.config is None else f"{self.name}:{self.config}"


@dataclasses.dataclass(frozen=True)
class DiskSource:
    """A folder written by datasets.save_to_disk."""

    folder: Path

    def rows(self, split: str) -> Rows:
        import datasets

        def load(path: Path):
            try:
                return datasets.load_from_disk(str(path))
            except (FileNotFoundError, ValueError) as error:
                raise InputError(f"{path}: not a dataset saved with datasets.save_to_disk "
                                 f"({error})") from None

        loaded = load(self.folder)
        if isinstance(loaded, datasets.DatasetDict):
            name = _pick_split(loaded, split, str(self.folder))
            return _dataset_rows(loaded[name], f"{self.folder}[{name}]")
        raise InputError(f"{self.folder}: holds one split (a Dataset, not a DatasetDict); point "
                         f"config.task.source at a DatasetDict folder, or save each split as one")


@dataclasses.dataclass(frozen=True)
class FileSource:
    """Data files named by a pattern with {split}."""

    pattern: str

    def paths(self, split: str) -> list[Path]:
        tried = []
        for name in _candidates(split):
            path = self.pattern.replace("{split}", name)
            if glob.has_magic(path):
                found = sorted(glob.glob(path))
            else:
                found = [path] if Path(path).is_file() else []
            if found:
                return [Path(p) for p in found]
            tried.append(path)
        raise InputError(f"config.task.source={self.pattern!r}: no data file for split {split!r}; "
                         f"looked for {', '.join(tried)}")

    def rows(self, split: str) -> Rows:
        for path in self.paths(split):
            yield from _file_rows(path)


def _file_rows(path: Path) -> Rows:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line, record in read_jsonl(path):
            yield at(path, line), record
    elif suffix in (".csv", ".tsv"):
        for line, row in read_table(path, header=True):
            yield at(path, line), row
    elif suffix == ".json":
        document = read_json(path)
        if not isinstance(document, list):
            raise InputError(f"{path}: expected a JSON list of objects (one per example)")
        for index, record in enumerate(document):
            if not isinstance(record, dict):
                raise InputError(f"{path}: item {index}: expected an object")
            yield f"{path}: item {index}", record
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as error:  # noqa: BLE001  (pyarrow's errors for unreadable files vary)
            raise InputError(f"{path}: not a readable parquet file ({error})") from None
        decoders = _parquet_label_names(table.schema_arrow.metadata or {})
        index = itertools.count()
        for batch in table.iter_batches():
            for row in batch.to_pylist():
                for column, decode in decoders.items():
                    if column in row:
                        row[column] = decode(row[column])
                yield f"{path}: row {next(index)}", row
    else:
        raise InputError(f"{path}: unknown data file type {suffix!r} (known: {', '.join(FILE_TYPES)})")


def _parquet_label_names(metadata: Mapping[bytes, bytes]) -> dict[str, Callable]:
    """ClassLabel decoders from the features `datasets` records in a parquet file's metadata
    (Dataset.to_parquet, the hub's parquet exports); none for other files."""
    import json

    import datasets

    try:
        features = datasets.Features.from_dict(json.loads(metadata[b"huggingface"])["info"]["features"])
    except (KeyError, ValueError, TypeError):
        return {}
    return {column: d for column, feature in features.items() if (d := _label_names(feature))}


def open_source(source: str) -> HubSource | DiskSource | FileSource:
    """The reader config.task.source names (see the module docstring)."""
    expanded = str(Path(source).expanduser()) if source.startswith("~") else source
    if "{split}" in expanded:
        if not expanded.lower().endswith(FILE_TYPES):
            raise InputError(f"config.task.source={source!r}: data files end in {', '.join(FILE_TYPES)}")
        return FileSource(expanded)
    path = Path(expanded)
    if path.is_dir():
        return DiskSource(path)
    if path.is_file() or expanded.lower().endswith(FILE_TYPES):
        raise InputError(f"config.task.source={source!r}: name the files of every split with a {{split}} "
                         f"pattern, e.g. 'data/{{split}}.jsonl'")
    if expanded.startswith((".", "/")) or "\\" in expanded:
        raise InputError(f"config.task.source={source!r}: no such folder")
    name, _, config = expanded.partition(":")
    return HubSource(name, config or None)


# --------------------------------------------------------------------------------------------
# Binding a task to a source.


def _renamed(rows: Rows, columns: Mapping[str, str], list_fields: tuple[str, ...]) -> Rows:
    """Rows with each mapped column under its field name; list fields (tagging's tokens and
    tags) given as text in a csv cell are split on whitespace."""
    for where, row in rows:
        record = dict(row)
        for field, column in columns.items():
            if column not in row:
                raise InputError(f"{where}: no column {column!r} (for field {field!r}; columns: "
                                 f"{', '.join(map(str, row))})")
            record[field] = row[column]
        for field in list_fields:
            if isinstance(record.get(field), str):
                record[field] = record[field].split()
        yield where, record


@dataclasses.dataclass(frozen=True)
class SourceLoader:
    """A TaskSpec loader reading `spec`'s rows from a source instead of its files."""

    spec: TaskSpec
    source: Any
    columns: Mapping[str, str]
    splits: Mapping[str, str]

    def __call__(self, data_dir: Any, split: str) -> list:  # data_dir: unused, the source says where
        asked = self.splits.get(split, split)
        list_fields = ("tokens", "tags") if self.spec.kind == "tagging" else ()
        return self.spec.parse(_renamed(self.source.rows(asked), self.columns, list_fields), split)


def bind_source(spec: TaskSpec, source: str, columns: Mapping[str, str] = {},  # noqa: B006 (read only)
                splits: Mapping[str, str] = {}) -> TaskSpec:  # noqa: B006
    """`spec` reading its rows from `source` (a copy; the registered task is unchanged)."""
    if spec.parse is None:
        able = sorted(name for name in _parsing_tasks())
        raise InputError(f"task {spec.name} reads only its own files under config.data_dir; "
                         f"config.task.source works for {', '.join(able)}")
    loader = SourceLoader(spec, open_source(source), {**spec.source_columns, **columns}, dict(splits))
    # The run's split names reach the loader as they are: the source, not the task's files, names splits.
    return dataclasses.replace(spec, loader=loader, split_aliases={})


def _parsing_tasks() -> list[str]:
    from ptjax.tasks.base import task_names

    return [name for name in task_names() if get_task(name).parse is not None]


def configured_task(config) -> TaskSpec:
    """config.task.name's TaskSpec as config.task asks for it: a generic task made concrete
    (labels, fields), and bound to config.task.source when one is set (a `<task>_fewshot` view:
    its base task bound to the source, sampled from the source's train split)."""
    task = config.task
    spec = get_task(task.name)
    columns = pairs(task.get("columns", ()), "columns")
    splits = pairs(task.get("splits", ()), "splits")
    labels = tuple(task.get("labels", ()) or ())
    if custom.is_generic(spec):
        spec = custom.specialize(spec, labels, columns)
    elif labels:
        raise InputError(f"config.task.labels is for the generic tasks ({', '.join(custom.GENERIC)}); "
                         f"task {spec.name} has its own labels")
    source = task.get("source", "")
    sampled = fewshot.base_of(spec.name)
    if source and sampled:  # the sample is drawn from the source's train split
        return fewshot.fewshot_view(bind_source(get_task(sampled), source, columns, splits), from_source=True)
    if source:
        return bind_source(spec, source, columns, splits)
    if columns or splits:
        raise InputError("config.task.columns and config.task.splits need config.task.source")
    return spec
