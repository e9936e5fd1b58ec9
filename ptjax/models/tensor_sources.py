"""Lazy, read-only access to the tensors of a checkpoint by transformers name.

A source never loads the whole checkpoint: `read(name)` returns one tensor as a numpy array in
its stored dtype (float32, float16 or bfloat16), memory-mapped where the format allows it.

    source = open_tensor_source(path)       # folder of safetensors / .bin, or a .gguf file
    source.names(); source.shape(name); source.read(name)
"""

from __future__ import annotations

import json
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
    """One or several `*.safetensors` files (a `model.safetensors.index.json` maps names to shards)."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self.description = ", ".join(str(f) for f in files)
        self._handles = {}
        self._where: dict[str, Path] = {}
        for file in files:
            handle = safe_open(str(file), framework="numpy")
            self._handles[file] = handle
            for name in handle.keys():
                self._where[name] = file

    def names(self) -> frozenset[str]:
        return frozenset(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def read(self, name: str) -> np.ndarray:
        return self._handles[self._where[name]].get_tensor(name)

    def close(self) -> None:
        self._handles.clear()


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
