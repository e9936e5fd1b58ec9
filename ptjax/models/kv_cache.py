"""A preallocated key/value cache for decoding: fixed shapes, so one compiled step serves every token.

    cache = KVCache.empty(layers, batch, slots, kv_heads, head_dim, dtype)
    out = backbone.apply(params, inputs_embeds=x, position_ids=pos, cache=cache.replace(index=i, mask=m))
    cache = out.cache        # keys/values of this call written at slots index .. index + q - 1

A model given a cache attends each query at slot index + i to the slots j <= index + i that
`mask` marks real; it knows nothing else about what the slots hold. The generation code decides
that (a deep prompt's keys/values in the first slots, then the prompt, then generated tokens), so
prompts stay out of the model files.

Two layouts of the same cache:
  - stacked (default): keys and values [layers, batch, slots, kv_heads, head_dim], what a scanned
    layer stack slices;
  - per layer (`per_layer=True`, for layer_stack(per_layer_params=True)): one array per layer,
    heads first, [batch, kv_heads, slots, head_dim]. A decoding step writes its key into that
    layer's own array in place and attention reads it as it lies; from the stacked arrays XLA:CPU
    copied each layer's slice out and transposed it to heads first, at every step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ptjax.models.layer_stacks import PerLayer

Array = jax.Array


@struct.dataclass
class LayerCache:
    """What one layer attends to (stacked: every layer's, with the leading layer axis).
    keys, values: [batch, slots, kv_heads, head_dim], or with heads_first [batch, kv_heads, slots,
    head_dim]; mask: bool [batch, slots] (None for cross-attention keys)."""

    keys: Array
    values: Array
    mask: Array | None
    heads_first: bool = struct.field(pytree_node=False, default=False)


@struct.dataclass
class KVCache:
    """keys, values: [layers, batch, slots, kv_heads, head_dim], or per layer a tuple of
      [batch, kv_heads, slots, head_dim] arrays (see the module docstring).
    mask: bool [layers, batch, slots], True where a slot holds a key the queries may see (causality
      aside), as it will be once this call's keys are written (per layer: a deep prompt may sit in
      some layers only).
    index: int32 [], the slot of this call's first query.
    cross_keys, cross_values: [layers, batch, source, heads, head_dim] (per layer: a tuple of
      [batch, heads, source, head_dim]), an encoder-decoder's cross-attention keys/values
      (computed by the first decoder call when None)."""

    keys: Array | tuple[Array, ...]
    values: Array | tuple[Array, ...]
    mask: Array
    index: Array
    cross_keys: Array | tuple[Array, ...] | None = None
    cross_values: Array | tuple[Array, ...] | None = None

    @classmethod
    def empty(cls, layers: int, batch: int, slots: int, kv_heads: int, head_dim: int, dtype,
              per_layer: bool = False) -> KVCache:
        def zeros():
            if per_layer:
                return tuple(jnp.zeros((batch, kv_heads, slots, head_dim), dtype) for _ in range(layers))
            return jnp.zeros((layers, batch, slots, kv_heads, head_dim), dtype)
        return cls(keys=zeros(), values=zeros(), mask=jnp.zeros((layers, batch, slots), bool),
                   index=jnp.zeros((), jnp.int32))

    @property
    def is_per_layer(self) -> bool:
        return isinstance(self.keys, tuple)

    @property
    def slots(self) -> int:
        return self.mask.shape[2]

    def per_layer(self, per_layer_params: bool) -> LayerCache | PerLayer:
        """What the layer stack takes: a LayerCache with the leading layer axis (stacked), or one
        heads-first LayerCache per layer (only for an unrolled stack, per_layer_params: a scanned
        one would slice the arrays' batch axis)."""
        if self.is_per_layer and not per_layer_params:
            raise ValueError("a per-layer KV cache needs the model's per-layer weights (per_layer_params=True)")
        if self.is_per_layer:
            return PerLayer(tuple(LayerCache(k, v, self.mask[i], heads_first=True)
                                  for i, (k, v) in enumerate(zip(self.keys, self.values))))
        return LayerCache(self.keys, self.values, self.mask)

    def updated(self, written: tuple[Array, Array] | PerLayer) -> KVCache:
        """The cache after a call, from what its layers' extend_layer_cache returned (gathered by
        the layer stack): stacked, this call's (keys, values) [layers, batch, q, kv_heads,
        head_dim], stored at slots index..; per layer, each layer's written arrays."""
        if isinstance(written, PerLayer):
            keys, values = zip(*written.layers)
            return self.replace(keys=tuple(keys), values=tuple(values))
        return self.written_at(self.index, *written)

    def written_at(self, slot, new_keys: Array, new_values: Array) -> KVCache:
        """new_keys/new_values [layers, batch, n, kv_heads, head_dim] stored at slots slot..slot + n - 1."""
        if self.is_per_layer:
            def write(arrays, new):
                return tuple(jax.lax.dynamic_update_slice_in_dim(
                    array, jnp.swapaxes(new[i], 1, 2).astype(array.dtype), slot, axis=2)
                    for i, array in enumerate(arrays))
        else:
            def write(array, new):
                return jax.lax.dynamic_update_slice_in_dim(array, new.astype(array.dtype), slot, axis=2)
        return self.replace(keys=write(self.keys, new_keys), values=write(self.values, new_values))

    def cross_per_layer(self) -> tuple[Array, Array] | PerLayer | None:
        """The cross-attention keys/values for the layer stack (None before the first call):
        stacked (keys, values), or one heads-first LayerCache (mask None) per layer."""
        if self.cross_keys is None:
            return None
        if isinstance(self.cross_keys, tuple):
            return PerLayer(tuple(LayerCache(k, v, None, heads_first=True)
                                  for k, v in zip(self.cross_keys, self.cross_values)))
        return self.cross_keys, self.cross_values

    def with_cross(self, cross: tuple[Array, Array] | PerLayer) -> KVCache:
        """The cache holding a call's cross-attention keys/values: the first call's stacked (keys,
        values) [layers, batch, source, heads, head_dim] (stored per layer, heads first, in the
        per-layer layout), or the per-layer LayerCaches it was given."""
        if isinstance(cross, PerLayer):
            keys, values = zip(*((c.keys, c.values) for c in cross.layers))
        elif self.is_per_layer:
            keys, values = (tuple(jnp.swapaxes(x[i], 1, 2) for i in range(x.shape[0])) for x in cross)
        else:
            keys, values = cross
        return self.replace(cross_keys=keys, cross_values=values)

    def stacked(self) -> tuple[Array, Array]:
        """(keys, values) [layers, batch, slots, kv_heads, head_dim], whatever the layout."""
        if self.is_per_layer:
            return tuple(jnp.stack([jnp.swapaxes(x, 1, 2) for x in arrays]) for arrays in (self.keys, self.values))
        return self.keys, self.values

    def take_rows(self, rows: Array) -> KVCache:
        """The cache of batch rows `rows` (int [batch]; beam search reorders its beams)."""
        take = (lambda arrays: tuple(x[rows] for x in arrays)) if self.is_per_layer else (lambda x: x[:, rows])
        return self.replace(keys=take(self.keys), values=take(self.values), mask=self.mask[:, rows])


def extend_layer_cache(layer_cache: LayerCache, index: Array, key: Array, value: Array
                       ) -> tuple[Array, Array, Array, tuple[Array, Array] | PerLayer]:
    """One layer's cache with this call's key/value [batch, q, kv_heads, head_dim] written at `index`.

    Returns (keys, values in layer_cache's layout (heads_first: [batch, kv_heads, slots, head_dim],
    else [batch, slots, kv_heads, head_dim]), attention mask [batch, 1, q, slots]: query i sees the
    real slots up to its own, index + i; written: what the layer returns for KVCache.updated, this
    call's (key, value) (stacked; the model writes all layers' at once) or, per layer, the written
    arrays themselves, so that each layer's cache is written once, in place).
    """
    slot_axis = 2 if layer_cache.heads_first else 1
    new_key, new_value = (jnp.swapaxes(x, 1, 2) for x in (key, value)) if layer_cache.heads_first else (key, value)
    keys = jax.lax.dynamic_update_slice_in_dim(layer_cache.keys, new_key.astype(layer_cache.keys.dtype), index,
                                               axis=slot_axis)
    values = jax.lax.dynamic_update_slice_in_dim(layer_cache.values, new_value.astype(layer_cache.values.dtype),
                                                 index, axis=slot_axis)
    query_length, slots = key.shape[1], keys.shape[slot_axis]
    causal = jnp.arange(slots)[None, :] <= index + jnp.arange(query_length)[:, None]
    written = PerLayer(((keys, values),)) if layer_cache.heads_first else (key, value)
    return keys, values, layer_cache.mask.astype(bool)[:, None, None, :] & causal[None, None], written
