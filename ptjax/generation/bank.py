"""Trained prompts as a bank for generation: every example picks its prompt by prompt_id.

    bank = PromptBank.from_prompts([(model_a, trainable_a), (model_b, trainable_b)])
    bank.soft             # [prompts, tokens, embed]: soft vectors (Lester, P-tuning; encoders run once)
    bank.prefix_keys      # [prompts, layers, prefix, kv_heads, head_dim]: P-tuning v2 prefixes

The same mechanism as ptjax.serve's scoring bank (DESIGN.md, "one mechanism for many prompts"),
for generation: prompt encoders and MLP reparameterizations are evaluated once, so decoding reads
plain vectors. Unlike the scoring bank, prefixes of different lengths or layer ranges may share
a bank: a prefix shorter than the longest is padded with slots the mask switches off, and the
mask is kept per layer (the causal LM cache holds it per layer and example).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ptjax.errors import InputError

Array = jax.Array


@struct.dataclass
class PromptBank:
    """soft: float32 [prompts, tokens, embed] or None (shorter prompts zero-padded; templates
      never read the padding).
    prefix_keys, prefix_values: float32 [prompts, layers, prefix, kv_heads, head_dim] or None, the
      (encoder) stack's deep prompt; prefix_mask: bool [prompts, layers, prefix], True where a
      layer carries a real prefix slot; prefix_lengths: int32 [prompts], real slots per prompt.
    decoder_prefix_*: the same for a T5 decoder's deep prompt.
    shift_positions: real tokens are numbered after the prefix (ptjax.methods.model).
    """

    soft: Array | None = None
    prefix_keys: Array | None = None
    prefix_values: Array | None = None
    prefix_mask: Array | None = None
    prefix_lengths: Array | None = None
    decoder_prefix_keys: Array | None = None
    decoder_prefix_values: Array | None = None
    decoder_prefix_mask: Array | None = None
    shift_positions: bool = struct.field(pytree_node=False, default=False)

    @property
    def num_prompts(self) -> int:
        for table in (self.soft, self.prefix_keys, self.decoder_prefix_keys):
            if table is not None:
                return int(table.shape[0])
        return 1

    @classmethod
    def from_prompts(cls, prompts: Sequence[tuple[object, dict]]) -> PromptBank:
        """prompts: (PromptModel, its trainable params {"prompt": ...}) per bank entry, all on one
        backbone and all of one kind (soft prompts, deep prompts, or neither)."""
        if not prompts:
            raise InputError("a prompt bank needs at least one prompt")
        parts = [_prompt_arrays(model, trainable) for model, trainable in prompts]
        kinds = {tuple(sorted(k for k, v in part.items() if v is not None)) for part in parts}
        if len(kinds) != 1:
            raise InputError(f"the prompts mix kinds {sorted(kinds)}; one bank holds prompts of one method")
        shifts = {model.shift_positions for model, _ in prompts}
        if len(shifts) != 1:
            raise InputError("the prompts disagree on config.prompt.deep.shift_positions; a bank needs one setting")
        fields = {}
        if parts[0]["soft"] is not None:
            tables = [part["soft"] for part in parts]
            widths = {t.shape[-1] for t in tables}
            if len(widths) != 1:
                raise InputError(f"soft prompts of widths {sorted(widths)}: not one backbone")
            longest = max(t.shape[0] for t in tables)
            fields["soft"] = jnp.asarray(np.stack([np.pad(t, ((0, longest - t.shape[0]), (0, 0))) for t in tables]))
        for name in ("prefix", "decoder_prefix"):
            if parts[0][name] is None:
                continue
            keys, values, masks = _pad_prefixes([part[name] for part in parts])
            fields[f"{name}_keys"], fields[f"{name}_values"] = jnp.asarray(keys), jnp.asarray(values)
            fields[f"{name}_mask"] = jnp.asarray(masks)
            if name == "prefix":
                fields["prefix_lengths"] = jnp.asarray(masks.any(axis=1).sum(axis=-1), jnp.int32)
        return cls(**fields, shift_positions=shifts.pop())

    @property
    def prefix_slots(self) -> int:
        return 0 if self.prefix_keys is None else int(self.prefix_keys.shape[2])

    @property
    def decoder_prefix_slots(self) -> int:
        return 0 if self.decoder_prefix_keys is None else int(self.decoder_prefix_keys.shape[2])

    def position_offset(self, prompt_id: Array) -> Array:
        """int32 [batch]: where each example's real tokens start numbering (its prefix length when
        positions shift after the prefix, else 0)."""
        if self.prefix_lengths is None or not self.shift_positions:
            return jnp.zeros(prompt_id.shape, jnp.int32)
        return self.prefix_lengths[prompt_id]


def _prompt_arrays(model, trainable: dict) -> dict:
    """{"soft": [tokens, embed] | None, "prefix": (keys, values, mask) | None, "decoder_prefix": ...}
    as numpy, the prompt modules applied once."""
    params = trainable.get("prompt", {})
    out = {"soft": None, "prefix": None, "decoder_prefix": None}
    if model.soft_prompt is not None:
        if getattr(model.soft_prompt, "num_prompts", 0):
            raise InputError("the export is already a bank of prompts; generate from exports of one prompt each")
        out["soft"] = np.asarray(jax.device_get(model.soft_prompt.apply({"params": params["soft"]})), np.float32)
    for name, module in (("prefix", model.deep_prompt), ("decoder_prefix", model.decoder_deep_prompt)):
        if module is None:
            continue
        if module.num_prompts:
            raise InputError("the export is already a bank of prompts; generate from exports of one prompt each")
        key = "deep" if name == "prefix" else "decoder_deep"
        prefix = jax.device_get(module.apply({"params": params[key]}))
        keys, values = np.asarray(prefix.keys[:, 0], np.float32), np.asarray(prefix.values[:, 0], np.float32)
        layers, length = keys.shape[:2]
        slot_mask = np.ones((length,), bool) if prefix.mask is None else np.asarray(prefix.mask[0], bool)
        layer_mask = np.ones((layers,), bool) if prefix.layer_mask is None else np.asarray(prefix.layer_mask, bool)
        out[name] = (keys, values, layer_mask[:, None] & slot_mask[None])
    return out


def _pad_prefixes(prefixes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Stack (keys [layers, P_i, h, d], values, mask [layers, P_i]) padded to the longest P."""
    shapes = {(k.shape[0],) + k.shape[2:] for k, _, _ in prefixes}
    if len(shapes) != 1:
        raise InputError(f"deep prompts of shapes {sorted(shapes)} (layers, heads, head_dim): not one backbone")
    longest = max(k.shape[1] for k, _, _ in prefixes)

    def pad(x, value=0):
        widths = [(0, 0), (0, longest - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
        return np.pad(x, widths, constant_values=value)

    return (np.stack([pad(k) for k, _, _ in prefixes]), np.stack([pad(v) for _, v, _ in prefixes]),
            np.stack([pad(m, False) for _, _, m in prefixes]))


def gather_prefix(keys: Array, values: Array, mask: Array, prompt_id: Array) -> tuple[Array, Array, Array]:
    """Bank tables [prompts, layers, P, ...] -> per example, layer axis first: keys/values
    [layers, batch, P, kv_heads, head_dim], mask [layers, batch, P]."""
    return (jnp.swapaxes(keys[prompt_id], 0, 1), jnp.swapaxes(values[prompt_id], 0, 1),
            jnp.swapaxes(mask[prompt_id], 0, 1))
