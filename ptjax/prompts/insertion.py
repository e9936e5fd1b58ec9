"""Inserting soft-prompt vectors into input embeddings (inside the jitted step).

    embeds = backbone.apply({"params": frozen}, ids, method="embed_tokens")   # [b, l, e]
    embeds = insert_soft_prompts(embeds, batch["soft_index"], encoder_output)
    out = backbone.apply({"params": frozen}, inputs_embeds=embeds, attention_mask=mask)

A gather plus a select: no loops over examples, static shapes, differentiable w.r.t. the
vectors (the gather's transpose sums gradients of repeated uses).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def insert_soft_prompts(
    embeds: Array, soft_index: Array, vectors: Array, prompt_id: Array | None = None
) -> Array:
    """Replace the embeddings at soft-token slots by prompt vectors.

    embeds: [batch, length, embed] token embeddings.
    soft_index: int [batch, length]; -1 keeps the embedding, k >= 0 takes soft vector k.
    vectors: [num_soft, embed] shared by every example, or [num_prompts, num_soft, embed]
      with prompt_id: int [batch] choosing each example's prompt.
    Returns [batch, length, embed] in embeds' dtype. Indices are not range-checked (under jit
    an out-of-range k is clamped); templates number their soft tokens 0 .. num_soft - 1.
    """
    if embeds.ndim != 3 or soft_index.shape != embeds.shape[:2]:
        raise ValueError(
            f"embeds {embeds.shape} and soft_index {soft_index.shape} must be [b, l, e] and [b, l]"
        )
    slot = jnp.maximum(soft_index, 0)
    if vectors.ndim == 2:
        gathered = jnp.take(vectors, slot, axis=0)  # [b, l, e]
    elif vectors.ndim == 3:
        if prompt_id is None:
            raise ValueError("vectors [num_prompts, num_soft, embed] need prompt_id [batch]")
        gathered = vectors[jnp.asarray(prompt_id)[:, None], slot]  # [b, l, e]
    else:
        raise ValueError(
            f"vectors must be [num_soft, embed] or [num_prompts, num_soft, embed], got {vectors.shape}"
        )
    if gathered.shape[-1] != embeds.shape[-1]:
        raise ValueError(f"prompt width {gathered.shape[-1]} != embedding width {embeds.shape[-1]}")
    return jnp.where((soft_index >= 0)[..., None], gathered.astype(embeds.dtype), embeds)
