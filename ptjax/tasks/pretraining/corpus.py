"""Document collections for prompt pre-training: streamed, deterministic, sharded across hosts.

A source yields `Document`s one at a time (nothing holds the whole corpus), always in the same
order, and `documents(shard)` yields only the share of host `shard.index` of `shard.count`:

    source = TextFiles(["owt/part-0.txt", "owt/part-1.txt"])           # one document per line
    source = TextFiles(paths, separator="blank_line")                   # blank lines between them
    source = JsonlFiles(paths, field="text")
    source = HFDataset("json", data_files=paths)  /  HFDataset(dataset_object)   (hf_source.py)
    source = TFDSDataset("c4/en", data_dir="gs://...")                          (tfds_source.py)
    for document in sentence_documents(source, Shard(jax.process_index(), jax.process_count())):
        document.sentences                                               # tuple[str, ...]

Sharding. When a source has at least as many files (or TFDS shards) as there are hosts, host i
reads files i, i + n, i + 2n, ... (no host reads another's files); otherwise every host reads
every file and keeps documents i, i + n, ... of the whole stream. Both are disjoint and their
union over the hosts is the whole corpus; the assignment depends only on the file list and n.
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from ptjax.data.readers import get_field, json_type, read_jsonl, read_lines
from ptjax.errors import InputError, at
from ptjax.tasks.pretraining.sentences import split_sentences


@dataclasses.dataclass(frozen=True)
class Shard:
    """This host's share: host `index` of `count` (jax.process_index(), jax.process_count())."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not isinstance(self.count, int) or self.count < 1:
            raise InputError(f"shard count must be a positive integer, got {self.count!r}")
        if not isinstance(self.index, int) or not 0 <= self.index < self.count:
            raise InputError(f"shard index must be in 0..{self.count - 1}, got {self.index!r}")

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def split(self, parts: Sequence) -> tuple[list, bool]:
        """(the parts this host reads, whether it must still keep every count-th document):
        whole parts when there are enough of them, else all parts and a per-document stride."""
        if len(parts) >= self.count:
            return list(parts[self.index::self.count]), False
        return list(parts), self.count > 1


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: `where` names it ("file:line", "dataset[17]") for messages and meta."""

    where: str
    text: str


@dataclasses.dataclass(frozen=True)
class SentencedDocument:
    where: str
    sentences: tuple[str, ...]


class DocumentSource(Protocol):
    def documents(self, shard: Shard = Shard()) -> Iterator[Document]:
        ...


def _stride(documents: Iterable[Document], shard: Shard, stride: bool) -> Iterator[Document]:
    for position, document in enumerate(documents):
        if not stride or shard.owns(position):
            yield document


def corpus_paths(paths: str | Path | Sequence[str | Path], root: str | Path | None = None) -> list[Path]:
    """Files named by `paths` (relative to `root` when given); glob patterns ("owt/*.txt") expand
    in sorted order, so every host sees the same list."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for name in paths:
        path = Path(root) / name if root is not None else Path(name)
        if glob.has_magic(str(path)):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"{path}: no corpus file matches this pattern")
            out.extend(matches)
        elif not path.is_file():
            raise InputError(f"{path}: corpus file not found")
        else:
            out.append(path)
    if not out:
        raise InputError("a corpus needs at least one file")
    return out


class TextFiles:
    """Plain text: one document per line (separator="line"), or documents separated by one or
    more blank lines (separator="blank_line", lines of a document joined by newlines)."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, separator: str = "line",
                 root: str | Path | None = None):
        if separator not in ("line", "blank_line"):
            raise InputError(f"text corpus separator must be 'line' or 'blank_line', got {separator!r}")
        self.paths = corpus_paths(paths, root)
        self.separator = separator

    def documents(self, shard: Shard = Shard()) -> Iterator[Document]:
        paths, stride = shard.split(self.paths)
        return _stride((d for path in paths for d in self._read(path)), shard, stride)

    def _read(self, path: Path) -> Iterator[Document]:
        if self.separator == "line":
            for number, line in read_lines(path):
                if line.strip():
                    yield Document(at(path, number), line)
            return
        lines: list[str] = []
        first = 0
        for number, line in read_lines(path):
            if line.strip():
                if not lines:
                    first = number
                lines.append(line)
            elif lines:
                yield Document(at(path, first), "\n".join(lines))
                lines = []
        if lines:
            yield Document(at(path, first), "\n".join(lines))


class JsonlFiles:
    """JSON lines, the document text in `field`; records whose text is empty are skipped.
    A dotted field ("passage.text", as in MultiRC) reaches into nested objects."""

    def __init__(self, paths: str | Path | Sequence[str | Path], *, field: str = "text",
                 root: str | Path | None = None):
        self.paths = corpus_paths(paths, root)
        self.field = field

    def documents(self, shard: Shard = Shard()) -> Iterator[Document]:
        paths, stride = shard.split(self.paths)
        return _stride((d for path in paths for d in self._read(path)), shard, stride)

    def _read(self, path: Path) -> Iterator[Document]:
        for number, record in read_jsonl(path):
            where = at(path, number)
            text = _nested_field(record, self.field, where)
            if text.strip():
                yield Document(where, text)


def _nested_field(record: dict, field: str, where: str) -> str:
    if field in record or "." not in field:
        return get_field(record, field, str, where)
    value = record
    parts = field.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(value, dict) or value.get(part) is None:
            raise InputError(f"{where}: missing field '{'.'.join(parts[:depth + 1])}'")
        value = value[part]
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{field}' should be a string, found {json_type(value)}")
    return value


def sentence_documents(source: DocumentSource | Iterable[Document], shard: Shard = Shard(), *,
                       sentence_per_line: bool = False,
                       splitter: Callable[[str], list[str]] = split_sentences,
                       min_sentences: int = 1) -> Iterator[SentencedDocument]:
    """Documents of this host's shard as sentences.

    sentence_per_line: each non-empty line is one sentence (corpora already split, BERT's
      pre-training format with blank lines between documents); otherwise `splitter` splits.
    A plain iterable of Documents (already one host's share) is taken as it is.
    """
    documents = source.documents(shard) if hasattr(source, "documents") else iter(source)
    for document in documents:
        if sentence_per_line:
            sentences = [" ".join(line.split()) for line in document.text.splitlines() if line.strip()]
        else:
            sentences = splitter(document.text)
        if len(sentences) >= min_sentences:
            yield SentencedDocument(document.where, tuple(sentences))
