"""Lazy, read-only access to the tensors of a checkpoint by transformers name.

A source never loads the whole checkpoint: `read(name)` returns one tensor as a numpy array in
its stored dtype (float32, float16 or bfloat16), memory-mapped where the format allows it.

    source = open_tensor_source(path)       # folder of safetensors / .bin, or a .gguf file
    source.names(); source.shape(name); source.read(name)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ptjax.errors import InputError


class TensorSource:
    """Interface: names(), shape(name), read(name), and a description for error messages."""

    description: str = "checkpoint"

    def names(self) -> frozenset[str]:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SafetensorsSource(TensorSource):
    """One or several `*.safetensors` files (a `model.safetensors.index.json` maps names to shards).

    `read(name)` returns a read-only view of the tensor's bytes mapped from its file: nothing is
    copied until the caller slices, transforms or casts it, and the mapping ends when the view
    is dropped, so pages of tensors already placed do not stay in the process's memory (as
    they would with one mapping of the whole file held open).
    """

    def __init__(self, files: list[Path]):
        self.description = ", ".join(str(f) for f in files)
        self._entries: dict[str, tuple[Path, np.dtype, tuple[int, ...], int]] = {}
        for file in files:
            for name, entry in _safetensors_header(file).items():
                self._entries[name] = (file, *entry)

    def names(self) -> frozenset[str]:
        return frozenset(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][2]

    def read(self, name: str) -> np.ndarray:
        file, dtype, shape, offset = self._entries[name]
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)

    def close(self) -> None:
        self._entries.clear()


def _safetensors_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes

    return {"F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
            "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
            "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
            "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
            "BOOL": np.dtype(np.bool_)}


def _safetensors_header(file: Path) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
    """name -> (dtype, shape, byte offset in the file) from a safetensors header: an 8-byte
    little-endian length, then that many bytes of JSON, then the tensors' bytes."""
    dtypes = _safetensors_dtypes()
    with open(file, "rb") as f:
        prefix = f.read(8)
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        raw = f.read(size) if 0 < size < 2 ** 31 else b""
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if len(raw) != size or not isinstance(header, dict):
        raise InputError(f"{file}: not a safetensors file (unreadable header)")
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in dtypes:
            raise InputError(f"{file}: tensor {name!r} has dtype {info.get('dtype')!r}, which ptjax cannot read")
        start, stop = info["data_offsets"]
        dtype, shape = dtypes[info["dtype"]], tuple(int(d) for d in info["shape"])
        if stop - start != math.prod(shape) * dtype.itemsize:
            raise InputError(f"{file}: tensor {name!r} has {stop - start} bytes for shape {shape} {info['dtype']}")
        entries[name] = (dtype, shape, 8 + size + int(start))
    return entries


class TorchBinSource(TensorSource):
    """`pytorch_model.bin` (or its sharded index), read with torch when torch is installed."""

    def __init__(self, files: list[Path]):
        try:
            import torch
        except ImportError as err:  # torch is never a runtime dependency
            raise InputError(
                f"{files[0]}: reading PyTorch .bin checkpoints needs torch (pip install torch==2.13.0), "
                "or convert the checkpoint to safetensors"
            ) from err
        self.description = ", ".join(str(f) for f in files)
        self._tensors = {}
        for file in files:
            self._tensors.update(torch.load(str(file), map_location="cpu", weights_only=True, mmap=True))

    def names(self) -> frozenset[str]:
        return frozenset(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def read(self, name: str) -> np.ndarray:
        import ml_dtypes
        import torch

        tensor = self._tensors[name]
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()


def _index_files(index_path: Path) -> list[Path]:
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    return [index_path.parent / name for name in sorted(set(weight_map.values()))]


def open_tensor_source(path: str | os.PathLike) -> TensorSource:
    """The tensors of a transformers folder (safetensors preferred over .bin) or a GGUF file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        from ptjax.models.gguf import GGUFSource

        return GGUFSource(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such checkpoint folder or .gguf file")
    for index_name, source_cls in (
        ("model.safetensors.index.json", SafetensorsSource),
        ("pytorch_model.bin.index.json", TorchBinSource),
    ):
        if (path / index_name).exists():
            return source_cls(_index_files(path / index_name))
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        return SafetensorsSource(safetensors)
    if (path / "pytorch_model.bin").exists():
        return TorchBinSource([path / "pytorch_model.bin"])
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        from ptjax.models.gguf import GGUFSource

        return GGUFSource(ggufs[0])
    raise InputError(
        f"{path}: no weights found (looked for *.safetensors, model.safetensors.index.json, "
        "pytorch_model.bin, one *.gguf)"
    )
