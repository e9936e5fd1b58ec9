"""Documents from Hugging Face `datasets`: a hub name (with internet), local files, or an object.

    HFDataset("openwebtext")                                # hub, streamed (needs the internet)
    HFDataset("json", data_files=["a.jsonl"], field="text")  # local files through a builder
    HFDataset("text", data_files="corpus.txt")              # one document per line
    HFDataset(my_dataset)                                   # a datasets.Dataset / IterableDataset

Names are loaded with streaming=True by default, so nothing is downloaded or cached up front.
Host sharding uses the library's own partitions: a map-style Dataset gives host i a contiguous
block of rows; an IterableDataset goes through datasets.distributed.split_dataset_by_node (whole
files per host when the file count divides by the host count, every n-th row otherwise).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

from ptjax.errors import InputError
from ptjax.tasks.pretraining.corpus import Document, Shard


class HFDataset:
    def __init__(self, dataset: Any, *, config: str | None = None, split: str = "train",
                 field: str = "text", streaming: bool = True, data_files: Any = None,
                 **load_options: Any):
        self.dataset = dataset
        self.config = config
        self.split = split
        self.field = field
        self.streaming = streaming
        self.data_files = data_files
        self.load_options = load_options

    @property
    def name(self) -> str:
        if isinstance(self.dataset, str):
            return self.dataset if self.config is None else f"{self.dataset}/{self.config}"
        return getattr(getattr(self.dataset, "info", None), "dataset_name", None) or "dataset"

    def _open(self):
        import datasets

        dataset = self.dataset
        if isinstance(dataset, str):
            try:
                dataset = datasets.load_dataset(dataset, self.config, split=self.split,
                                                streaming=self.streaming, data_files=self.data_files,
                                                **self.load_options)
            except (FileNotFoundError, ValueError, ConnectionError) as error:
                raise InputError(f"Hugging Face dataset {self.name!r} (split {self.split!r}): "
                                 f"{error}") from None
        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if self.split not in dataset:
                raise InputError(f"Hugging Face dataset {self.name!r} has no split {self.split!r} "
                                 f"(splits: {', '.join(dataset)})")
            dataset = dataset[self.split]
        if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
            raise InputError(f"not a Hugging Face dataset: {type(dataset).__name__}")
        return dataset

    def documents(self, shard: Shard = Shard()) -> Iterator[Document]:
        import datasets
        from datasets.distributed import split_dataset_by_node

        dataset = self._open()
        columns = dataset.column_names
        if columns is not None and self.field not in columns:
            raise InputError(f"Hugging Face dataset {self.name!r} has no column {self.field!r} "
                             f"(columns: {', '.join(columns)})")
        if isinstance(dataset, datasets.Dataset):
            size, count = len(dataset), shard.count
            start = shard.index * (size // count) + min(shard.index, size % count)
            stop = start + size // count + (1 if shard.index < size % count else 0)
            rows = dataset.select_columns([self.field]).select(range(start, stop))
            wheres = (f"{self.name}[{start + k}]" for k in range(stop - start))
        else:
            rows = split_dataset_by_node(dataset, rank=shard.index, world_size=shard.count)
            wheres = (f"{self.name}[host {shard.index}/{shard.count} row {k}]" for k in itertools.count())
        for where, row in zip(wheres, rows):
            text = row.get(self.field)
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            if not isinstance(text, str):
                raise InputError(f"{where}: column {self.field!r} should hold text, "
                                 f"found {type(text).__name__}")
            if text.strip():
                yield Document(where, text)
