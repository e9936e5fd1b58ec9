"""GGUF checkpoints (llama.cpp's format) as a TensorSource with transformers tensor names.

    source = GGUFSource("SmolLM2-135M-Instruct.Q4_1.gguf")
    source.read("model.layers.0.self_attn.q_proj.weight")   # float32 [out, in], like PyTorch

Opening parses the header only (the tensor bytes stay memory-mapped; metadata arrays such as the
tokenizer's vocabulary are stepped over, not decoded: the tokenizer comes from transformers);
`read` dequantizes one tensor with the `gguf` package. Two things differ from a transformers checkpoint and are undone
here, so model code never knows a tensor came from GGUF:
  - GGUF lists a tensor's dimensions fastest-first (ggml's ne order); numpy and PyTorch list them
    slowest-first, so shapes are reversed.
  - llama.cpp's converter reorders the rows of the q and k projections of Llama-style models
    (within each head, it interleaves the two rotary halves so that ggml can rotate adjacent
    pairs); transformers' models rotate halves, so the rows go back to their original order.
"""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType

from ptjax.errors import InputError
from ptjax.models.tensor_sources import TensorSource

# GGUF architectures whose tensors follow llama.cpp's Llama naming, mapped to the transformers
# model they came from. Whether the q/k rows were reordered depends on the converter.
_LLAMA_LIKE = {"llama": True, "mistral": True, "qwen2": False}

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_PARTS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# llama.cpp-only tensors with no transformers parameter (precomputed rope frequencies).
_IGNORED = {"rope_freqs.weight"}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")


def transformers_name(gguf_name: str) -> str | None:
    """transformers name of a GGUF tensor of a Llama-like model (None for ignored tensors)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    if gguf_name in _IGNORED:
        return None
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_PARTS:
        raise InputError(f"unknown GGUF tensor {gguf_name!r}")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_LAYER_PARTS[part]}.{kind}"


def unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row order of a q/k projection ([heads * head_dim, ...] or bias).

    llama.cpp stores, per head, the rows as pairs (i, i + head_dim/2) side by side; transformers
    keeps the first rotary half, then the second.
    """
    half = weight.shape[0] // heads // 2
    rows = weight.reshape(heads, half, 2, *weight.shape[1:])
    return np.ascontiguousarray(rows.swapaxes(1, 2)).reshape(weight.shape)


class _TensorIndexReader(GGUFReader):
    """GGUFReader that steps over metadata arrays instead of making a numpy view per element.

    The stock reader builds one view per string of the vocabulary and merges (~300k for a 49k
    vocabulary, seconds per open); this source needs only scalars and the tensor table. Array
    fields keep their type and length; numeric arrays keep their values as one array; string
    arrays keep no items.
    """

    def _get_field_parts(self, orig_offs, raw_type):
        if GGUFValueType(raw_type) != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        length = self._get(orig_offs + 4, np.uint64)
        offs = orig_offs + 12
        item_type = GGUFValueType(raw_itype[0])
        types = [GGUFValueType.ARRAY, item_type]
        if item_type == GGUFValueType.STRING:
            little_endian = (sys.byteorder == "little") == (self.byte_order == "I")
            length_format = "<Q" if little_endian else ">Q"
            buffer = memoryview(self.data)
            for _ in range(int(length[0])):
                offs += 8 + struct.unpack_from(length_format, buffer, offs)[0]
            return offs - orig_offs, [raw_itype, length], [], types
        item_dtype = self.gguf_scalar_to_np.get(item_type)
        if item_dtype is None:  # nested arrays: rare, small
            return super()._get_field_parts(orig_offs, raw_type)
        values = self._get(offs, item_dtype, length[0])
        return offs + int(values.nbytes) - orig_offs, [raw_itype, length, values], [2], types


class GGUFSource(TensorSource):
    """The tensors of one .gguf file under transformers names, dequantized to float32 on read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.description = str(self.path)
        try:
            self._reader = _TensorIndexReader(str(self.path))
        except Exception as err:  # truncated file, wrong magic, unsupported version
            raise InputError(f"{self.path}: not a readable GGUF file ({type(err).__name__}: {err})") from err
        self.architecture = self._field("general.architecture")
        if self.architecture not in _LLAMA_LIKE:
            raise InputError(
                f"{self.path}: GGUF architecture {self.architecture!r} is not supported; "
                f"ptjax reads {sorted(_LLAMA_LIKE)}"
            )
        self.num_heads = int(self._field(f"{self.architecture}.attention.head_count"))
        kv_heads = self._field(f"{self.architecture}.attention.head_count_kv", default=self.num_heads)
        self.num_kv_heads = int(kv_heads)
        self._tensors = {}
        for tensor in self._reader.tensors:
            try:
                name = transformers_name(tensor.name)
            except ValueError as err:
                raise InputError(f"{self.path}: {err}") from None
            if name is not None:
                self._tensors[name] = tensor

    def _field(self, key: str, default=None):
        field = self._reader.get_field(key)
        if field is None:
            if default is None:
                raise InputError(f"{self.path}: GGUF metadata {key!r} is missing")
            return default
        return field.contents()

    def names(self) -> frozenset[str]:
        return frozenset(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(self._tensors[name].shape))

    def read(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        tensor = self._tensors[name]
        # A plain view of the mapped bytes: numpy's memmap subclass makes per-block slicing slow.
        array = dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(self.shape(name))
        if _LLAMA_LIKE[self.architecture]:
            if ".self_attn.q_proj." in name:
                array = unpermute_rows(array, self.num_heads)
            elif ".self_attn.k_proj." in name:
                array = unpermute_rows(array, self.num_kv_heads)
        return array

    def close(self) -> None:
        self._tensors.clear()
        self._reader = None
