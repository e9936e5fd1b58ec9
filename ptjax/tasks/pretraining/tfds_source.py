"""Documents from a prepared TensorFlow Datasets data set (C4 on a pod), without TensorFlow.

    TFDSDataset("c4/en:3.0.1", data_dir="gs://my-bucket/tfds", split="train", field="text")
    TFDSDataset("/data/tfds/my_corpus/1.0.0")       # a prepared version folder

Needs `tensorflow-datasets` and `array-record` (pip), not `tensorflow`: nothing here downloads or
prepares data (prepare it once with `tfds build NAME --data_dir DIR`, on any machine).
- Data prepared as array_record (or parquet): read through `tfds.data_source`; host i of n reads
  records i, i + n, ... by random access.
- Data prepared as tfrecord (the TFDS default, and how the public C4 copies are stored): the
  record files are read here and each record decoded with TFDS's NumPy example parser. Host i
  reads shard files i, i + n, ... when there are at least n of them, else every n-th record.
  Record checksums are not verified (that needs CRC32C); a truncated file is an error.
Paths go through etils.epath, so gs:// works where gcsfs is installed.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

from ptjax.errors import InputError
from ptjax.tasks.pretraining.corpus import Document, Shard

_INSTALL = "pip install tensorflow-datasets array-record"
_READ_CHUNK = 256


def import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise InputError(f"reading TensorFlow Datasets needs the tensorflow-datasets package ({_INSTALL}); "
                         f"tensorflow itself is not needed") from None
    return tfds


class TFDSDataset:
    def __init__(self, name: str, *, data_dir: str | None = None, split: str = "train",
                 field: str = "text"):
        self.name = name
        self.data_dir = data_dir
        self.split = split
        self.field = field

    def _builder(self, tfds) -> Any:
        from etils import epath

        path = epath.Path(self.name)
        try:
            if path.joinpath("dataset_info.json").exists():
                return tfds.builder_from_directory(path)
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            raise InputError(f"TFDS data set {self.name!r} not found: {str(error).splitlines()[0]}") from None
        if not builder.is_prepared():
            raise InputError(f"TFDS data set {self.name!r} is not prepared under {builder.data_dir}: "
                             f"run `tfds build {self.name} --data_dir DIR` first")
        return builder

    def documents(self, shard: Shard = Shard()) -> Iterator[Document]:
        tfds = import_tfds()
        builder = self._builder(tfds)
        info = builder.info
        if self.field not in info.features:
            raise InputError(f"TFDS data set {self.name!r} has no feature {self.field!r} "
                             f"(features: {', '.join(info.features)})")
        try:
            split_info = info.splits[self.split]
        except (KeyError, ValueError) as error:
            raise InputError(f"TFDS data set {self.name!r}: bad split {self.split!r} ({error}); "
                             f"splits: {', '.join(info.splits)}") from None
        random_access = tfds.core.file_adapters.FileFormat.with_random_access()
        if info.file_format in random_access:
            records = self._random_access(builder, shard)
        else:
            records = self._tfrecords(split_info.file_instructions, info.features, shard)
        for where, record in records:
            text = record[self.field]
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            if not isinstance(text, str):
                raise InputError(f"{where}: feature {self.field!r} should be text, found {type(text).__name__}")
            if text.strip():
                yield Document(where, text)

    def _random_access(self, builder, shard: Shard) -> Iterator[tuple[str, Any]]:
        source = builder.as_data_source(split=self.split)
        indices = range(shard.index, len(source), shard.count)
        for start in range(0, len(indices), _READ_CHUNK):
            chunk = list(indices[start:start + _READ_CHUNK])
            for index, record in zip(chunk, source.__getitems__(chunk)):
                yield f"{self.name}/{self.split}[{index}]", record

    def _tfrecords(self, instructions, features, shard: Shard) -> Iterator[tuple[str, Any]]:
        files, stride = shard.split(instructions)
        position = 0
        for instruction in files:
            for number, data in _read_tfrecord(instruction.filename, instruction.skip, instruction.take):
                if not stride or shard.owns(position):
                    yield f"{instruction.filename}#{number}", features.deserialize_example_np(data)
                position += 1


def _read_tfrecord(filename: str, skip: int, take: int) -> Iterator[tuple[int, bytes]]:
    """(record number from 0, payload) of records skip .. skip + take - 1 of a TFRecord file:
    each record is uint64 length, uint32 length checksum, payload, uint32 payload checksum."""
    from etils import epath

    with epath.Path(filename).open("rb") as handle:
        number = 0
        while take < 0 or number < skip + take:
            header = handle.read(12)
            if not header:
                break
            if len(header) < 12:
                raise InputError(f"{filename}: truncated TFRecord file (record {number} header)")
            (length,) = struct.unpack("<Q", header[:8])
            if number < skip:
                handle.seek(length + 4, 1)
            else:
                data = handle.read(length)
                if len(data) < length or len(handle.read(4)) < 4:
                    raise InputError(f"{filename}: truncated TFRecord file (record {number})")
                yield number, data
            number += 1
