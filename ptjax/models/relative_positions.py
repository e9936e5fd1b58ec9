"""T5's relative-position attention bias: key/query distances -> buckets -> a learned bias per head.

Half the buckets are exact distances, the rest log-spaced up to max_distance; bidirectional
(encoder) attention gives keys after the query their own half, causal (decoder) attention puts
them all in bucket 0. Deep-prompt slots sit at negative key positions, before the first token.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from ptjax.models.layers import constrain


@functools.cache
def _distance_buckets(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of each distance 0..max_distance (int32 [max_distance + 1]); farther distances
    share the last entry. Half the buckets are exact distances, the rest log-spaced.

    Computed once on the host with transformers' float32 arithmetic, so the runtime lookup is
    integer-exact on every backend (a device `log` may differ by an ulp at bucket edges).
    """
    max_exact = num_buckets // 2
    distance = np.arange(max_distance + 1)
    log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    large = max_exact + (
        log_ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    ).astype(np.int32)
    return np.where(distance < max_exact, distance, np.minimum(large, num_buckets - 1)).astype(np.int32)


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int, max_distance: int):
    """relative_position = key_pos - query_pos (int array) -> bucket ids in [0, num_buckets).

    bidirectional: keys after the query get their own half of the buckets; otherwise (causal)
    every key at or after the query falls in bucket 0.
    """
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(relative_position > 0, num_buckets, 0)
        distance = jnp.abs(relative_position)
    else:
        offset = 0
        distance = jnp.maximum(-relative_position, 0)
    table = jnp.asarray(_distance_buckets(num_buckets, max_distance))
    return offset + table[jnp.minimum(distance, max_distance)]


def relative_position_bias(table, *, query_length: int, key_length: int, prefix_length: int,
                           bidirectional: bool, max_distance: int, query_offset=0):
    """Bias [1, heads, query_length, prefix_length + key_length] float32 from table [buckets, heads].

    Queries sit at query_offset + 0..query_length-1 (a decoding step's slot in a KV cache; may be
    traced), prefix keys at -prefix_length..-1, real keys at 0.. .
    """
    queries = jnp.arange(query_length) + query_offset
    relative = jnp.arange(-prefix_length, key_length)[None, :] - queries[:, None]
    buckets = relative_position_bucket(relative, bidirectional=bidirectional, num_buckets=table.shape[0],
                                       max_distance=max_distance)
    bias = jnp.take(table, buckets, axis=0).astype(jnp.float32)  # [query, key, heads]
    return constrain(bias.transpose(2, 0, 1)[None], (None, "heads", None, None))
