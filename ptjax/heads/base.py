"""What every head shares: the batch fields it reads and masked losses.

A head turns backbone outputs into per-example scores, a loss and predictions. Heads never see
prompts or tasks. Batch fields (leading dimension `batch`; the input pipeline adds `valid`):

    input_ids, attention_mask, token_type_ids, soft_index   [batch, length] int32
    target_index      [batch]          position scored by a verbalizer (mask / next token / decoder)
    label             [batch]          class index (classification, multiple choice)
    labels            [batch, length]  token classes, IGNORE where not scored (tagging)
    start_position, end_position [batch], context_mask [batch, length]   (extractive QA)
    option_mask [batch, options], score_mask / score_target [batch, options, length]  (choice)
    task_id [batch] (multi-task heads), prompt_id [batch] (several prompts in one batch)
    valid             [batch] bool     False on rows that only pad an evaluation batch
    example_weight    [batch] float32  optional, training: the loss is the sum of the rows'
                      losses times these weights instead of their mean (a prompt bank trained
                      entry by entry weighs a row 1 / its entry's rows: ptjax.prompts.banks)

A head that reads the last hidden state at fixed positions only (one per example) says which in
`read_positions(batch) -> int32 [batch, n]`, and reads them with `hidden_at`; the backbone may
then compute its last layer at those rows only (ptjax.models.last_layer_rows.stack_computing_rows).
Heads without the method, or returning None, get every position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ptjax.models.layers import BackboneOutput

IGNORE = -100
# Score of a class that does not exist (padded labels, excluded positions): finite, so that no
# gradient meets inf - inf, and far below any real logit.
NEG_INF = -1e9


def valid_mask(batch: dict, shape: tuple[int, ...]) -> jax.Array:
    """batch["valid"] broadcast to `shape` (all True when the pipeline sent no mask)."""
    valid = batch.get("valid")
    if valid is None:
        return jnp.ones(shape, bool)
    return jnp.broadcast_to(valid.reshape(valid.shape + (1,) * (len(shape) - valid.ndim)), shape)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                  weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy over the entries where mask is True.

    logits: [..., classes] (any dtype; computed in float32); labels: [...] int; mask: [...] bool.
    weights: [...] float32 or None; given, the loss is sum(weights * nll) over masked entries
    instead of the mean (the accuracy stays a mean).
    Entries scored NEG_INF (padded classes) never win and cost nothing.
    """
    logits = logits.astype(jnp.float32)
    safe_labels = jnp.where(mask, labels, 0)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    correct = jnp.argmax(logits, axis=-1) == safe_labels
    if weights is not None:
        loss = jnp.sum(jnp.where(mask, nll * weights.astype(jnp.float32), 0.0))
    else:
        loss = masked_mean(nll, mask)
    return loss, masked_mean(correct, mask)


def example_weights(batch: dict) -> jax.Array | None:
    """batch["example_weight"] [batch] (training a prompt bank entry by entry), or None."""
    return batch.get("example_weight")


def gather_positions(hidden: jax.Array, index: jax.Array) -> jax.Array:
    """hidden [batch, length, ...] at index [batch] -> [batch, ...]."""
    index = jnp.clip(index, 0, hidden.shape[1] - 1)
    return jnp.take_along_axis(hidden, index.reshape((-1, 1) + (1,) * (hidden.ndim - 2)), axis=1)[:, 0]


def hidden_at(outputs: BackboneOutput, index: jax.Array) -> jax.Array:
    """outputs.last_hidden_state at position index [batch] -> [batch, embed], whether the
    backbone computed every position or only outputs.positions (a head's read_positions)."""
    if outputs.positions is None:
        return gather_positions(outputs.last_hidden_state, index)
    column = jnp.argmax(outputs.positions == index[:, None], axis=1)
    return gather_positions(outputs.last_hidden_state, column)


def last_real_position(attention_mask: jax.Array) -> jax.Array:
    """[batch, length] right-padded mask -> [batch] index of the last real token."""
    return jnp.sum(attention_mask.astype(jnp.int32), axis=1) - 1
