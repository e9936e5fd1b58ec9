"""DeBERTa's disentangled attention pieces: relative-position rows (v2's log buckets), the
content->position and position->content score terms, and v2's convolution after the first layer.
The layer that uses them is in ptjax/models/deberta.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.models.layers import activate, dropout_mask
from ptjax.models.products import einsum


@functools.cache
def log_buckets(length: int, bucket_size: int, max_position: int) -> np.ndarray:
    """Bucket of each distance 0..length-1 (int32), transformers' make_log_bucket_position in its
    float32 arithmetic, computed once on the host so the lookup is integer-exact everywhere."""
    distance = np.arange(length)
    mid = bucket_size // 2
    clipped = np.where(distance < mid, mid - 1, distance).astype(np.float32)
    log_pos = np.ceil(np.log(clipped / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
                      * np.float32(mid - 1)) + mid
    return np.where(clipped <= mid, distance, log_pos).astype(np.int32)


def relative_index(cfg, length: int) -> np.ndarray:
    """int32 [length, length]: the relative-table row of (query i, key j), for c2p and p2c alike
    (cfg: a DebertaConfig).

    The relative position is i - j (log-bucketed in v2 with position_buckets > 0), offset by the
    span and clipped to the table. (transformers slices the v1 table to the sequence's span
    first; that gives the same rows.)
    """
    relative = np.arange(length)[:, None] - np.arange(length)[None, :]
    if cfg.version == 2 and cfg.position_buckets > 0:
        table = log_buckets(length, cfg.position_buckets, cfg.max_relative_positions)
        relative = np.sign(relative) * table[np.abs(relative)]
    span = cfg.relative_span
    return np.clip(relative + span, 0, 2 * span - 1).astype(np.int32)


def disentangled_bias(query, key, pos_query, pos_key, index, dtype):
    """Relative terms of the scores, float32 [batch, heads, q, k] (not yet scaled).

    query: [batch, q, heads, head_dim], key: [batch, k, heads, head_dim]; pos_query, pos_key:
    [2 * span, heads, head_dim] (None for an absent term); index: int32 [q, k] from relative_index,
    or [batch, q, k] (its rows at the queries computed, when they are a subset); dtype: the
    products' operand dtype (float32 accumulation).
    """
    batch, heads = query.shape[0], query.shape[2]
    index = jnp.asarray(index)
    index = index[:, None] if index.ndim == 3 else index
    full = jnp.broadcast_to(index, (batch, heads) + index.shape[-2:])
    bias = jnp.zeros(full.shape, jnp.float32)
    if pos_key is not None:  # c2p: query i against the embedding of its distance to key j
        c2p = einsum("bqhd,rhd->bhqr", query, pos_key, dtype)
        bias = bias + jnp.take_along_axis(c2p, full, axis=-1)
    if pos_query is not None:  # p2c: key j against the embedding of the same distance
        p2c = einsum("bkhd,rhd->bhkr", key, pos_query, dtype)
        bias = bias + jnp.swapaxes(jnp.take_along_axis(p2c, jnp.swapaxes(full, -1, -2), axis=-1), -1, -2)
    return bias


def _layer_norm(x, scale, bias, eps):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)


def conv_after_first_layer(cfg, conv: dict, embeddings, layer_out, token_mask, rng):
    """v2's ConvLayer on real tokens: LayerNorm(layer_out + act(dropout(conv(embeddings)))).

    cfg: a DebertaConfig; embeddings, layer_out: [batch, length, embed]; token_mask: float
    [batch, length]; conv: {"kernel": [width, embed / groups, embed], "bias", "norm_scale",
    "norm_bias": [embed]}; rng: the dropout key, None without dropout.
    """
    dt = layer_out.dtype
    pad = (cfg.conv_kernel_size - 1) // 2
    out = jax.lax.conv_general_dilated(
        embeddings.astype(dt), conv["kernel"].astype(dt), window_strides=(1,), padding=[(pad, pad)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=cfg.conv_groups,
        preferred_element_type=jnp.float32,
    ) + conv["bias"].astype(jnp.float32)
    out = out * token_mask[..., None]
    if rng is not None:
        keep = dropout_mask(rng, out.shape, 1.0 - cfg.hidden_dropout)
        out = jnp.where(keep, out / (1.0 - cfg.hidden_dropout), 0.0)
    out = activate(cfg.conv_act, out)
    normed = _layer_norm(layer_out.astype(jnp.float32) + out, conv["norm_scale"], conv["norm_bias"], cfg.layer_norm_eps)
    return (normed * token_mask[..., None]).astype(dt)
