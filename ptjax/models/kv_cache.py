"""A preallocated key/value cache for decoding: fixed shapes, so one compiled step serves every token.

    cache = KVCache.empty(layers, batch, slots, kv_heads, head_dim, dtype)
    out = backbone.apply(params, inputs_embeds=x, position_ids=pos, cache=cache.at(index, slot_mask))
    cache = out.cache        # keys/values of this call written at slots index .. index + q - 1

A model given a cache attends each query at slot index + i to the slots j <= index + i that
`mask` marks real; it knows nothing else about what the slots hold. The generation code decides
that (a deep prompt's keys/values in the first slots, then the prompt, then generated tokens), so
prompts stay out of the model files.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array


@struct.dataclass
class KVCache:
    """keys, values: [layers, batch, slots, kv_heads, head_dim].
    mask: bool [layers, batch, slots], True where a slot holds a key the queries may see (causality
      aside), as it will be once this call's keys are written (per layer: a deep prompt may sit in
      some layers only).
    index: int32 [], the slot of this call's first query.
    cross_keys, cross_values: [layers, batch, source, heads, head_dim], an encoder-decoder's
      cross-attention keys/values (computed by the first decoder call when None)."""

    keys: Array
    values: Array
    mask: Array
    index: Array
    cross_keys: Array | None = None
    cross_values: Array | None = None

    @classmethod
    def empty(cls, layers: int, batch: int, slots: int, kv_heads: int, head_dim: int, dtype) -> KVCache:
        shape = (layers, batch, slots, kv_heads, head_dim)
        return cls(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                   mask=jnp.zeros((layers, batch, slots), bool), index=jnp.zeros((), jnp.int32))

    @property
    def slots(self) -> int:
        return self.keys.shape[2]

    def per_layer(self) -> tuple[Array, Array, Array]:
        """(keys, values, mask) with the leading layer axis, for a scanned layer stack."""
        return self.keys, self.values, self.mask

    def written(self, new_keys: Array, new_values: Array) -> KVCache:
        """new_keys/new_values [layers, batch, q, kv_heads, head_dim] stored at slots index.. ."""
        keys = jax.lax.dynamic_update_slice_in_dim(self.keys, new_keys.astype(self.keys.dtype), self.index, axis=2)
        values = jax.lax.dynamic_update_slice_in_dim(self.values, new_values.astype(self.values.dtype),
                                                     self.index, axis=2)
        return self.replace(keys=keys, values=values)


def extend_layer_cache(layer_cache: tuple[Array, Array, Array], index: Array, key: Array, value: Array
                       ) -> tuple[Array, Array, Array]:
    """One layer's cache with this call's key/value [batch, q, kv_heads, head_dim] written at `index`.

    Returns (keys, values [batch, slots, kv_heads, head_dim], attention mask [batch, 1, q, slots]):
    query i sees the real slots up to its own, index + i.
    """
    keys, values, slot_mask = layer_cache
    keys = jax.lax.dynamic_update_slice_in_dim(keys, key.astype(keys.dtype), index, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(values, value.astype(values.dtype), index, axis=1)
    query_length, slots = key.shape[1], keys.shape[1]
    causal = jnp.arange(slots)[None, :] <= index + jnp.arange(query_length)[:, None]
    return keys, values, slot_mask.astype(bool)[:, None, None, :] & causal[None, None]
