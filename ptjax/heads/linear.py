"""Randomly initialized linear heads (P-tuning v2): [CLS]-style sequence classification, token
classification (tagging) and start/end span extraction (extractive QA).

Every head holds one weight matrix per task, [tasks, embed, labels], so multi-task training
(one shared prompt, one head per data set) selects rows with batch["task_id"]; a single task is
tasks = 1. Tasks with fewer labels than the widest one get -inf scores for the missing labels.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptjax.heads.base import (
    IGNORE,
    NEG_INF,
    cross_entropy,
    example_weights,
    hidden_at,
    last_real_position,
    valid_mask,
)
from ptjax.models.layers import BackboneOutput

POOLINGS = ("pooler", "first", "last", "mean")


def choose_pooling(asked: str, *, has_pooler: bool, causal: bool) -> str:
    """The pooling of a linear head: `asked`, or for "auto" the pooler where the backbone has one
    (the reference classifiers of P-tuning v2 and transformers read outputs[1], then dropout), else
    the first token (encoders) or the last real one (decoders, which see the whole input there)."""
    if asked == "auto":
        return "pooler" if has_pooler else "last" if causal else "first"
    if asked not in POOLINGS:
        raise ValueError(f"pooling {asked!r}: choose auto, {', '.join(POOLINGS)}")
    if asked == "pooler" and not has_pooler:
        raise ValueError("pooling 'pooler' needs a backbone with a pooler; use 'first' or 'last'")
    return asked


class TaskLinear(nn.Module):
    """x [batch, ..., embed], task_id [batch] -> [batch, ..., max(label_counts)] float32."""

    label_counts: Sequence[int]
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, task_id, deterministic: bool = True):
        tasks, width = len(self.label_counts), max(self.label_counts)
        kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed", None)),
                            (tasks, x.shape[-1], width))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (None, None)), (tasks, width))
        x = nn.Dropout(self.dropout)(x.astype(jnp.float32), deterministic=deterministic)
        kernel, bias = kernel[task_id], bias[task_id]  # [batch, embed, width], [batch, width]
        y = jnp.einsum("b...d,bdl->b...l", x, kernel) + bias.reshape(bias.shape[:1] + (1,) * (x.ndim - 2) + bias.shape[1:])
        counts = jnp.asarray(self.label_counts)[task_id]
        exists = jnp.arange(width)[None, :] < counts[:, None]
        return jnp.where(exists.reshape(exists.shape[:1] + (1,) * (x.ndim - 2) + exists.shape[1:]), y, NEG_INF)


def _task_id(batch: dict) -> jax.Array:
    some = batch["input_ids"]
    return batch.get("task_id", jnp.zeros((some.shape[0],), jnp.int32))


@dataclasses.dataclass(frozen=True)
class _LinearHead:
    label_counts: tuple[int, ...]
    dropout: float = 0.1

    uses_lm_head = False

    def module(self) -> TaskLinear:
        return TaskLinear(tuple(self.label_counts), self.dropout)

    def init(self, rng, hidden_size: int) -> tuple[dict, dict]:
        """(params, logical axes) of the head."""
        variables = self.module().init(rng, jnp.zeros((1, hidden_size)), jnp.zeros((1,), jnp.int32))
        return nn.meta.unbox(variables["params"]), nn.get_partition_spec(variables)["params"]

    def _apply(self, params, x, batch, train: bool, rng) -> jax.Array:
        rngs = {"dropout": rng} if train and rng is not None else {}
        return self.module().apply({"params": params}, x, _task_id(batch), deterministic=not train, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class SequenceClassifier(_LinearHead):
    """pooling: "pooler" (the backbone's [CLS] pooler, as P-tuning v2 uses), "first" token,
    "last" real token (decoders), or "mean" over real tokens."""

    pooling: str = "first"
    name: str = "sequence"

    def read_positions(self, batch: dict) -> jax.Array | None:
        """[batch, 1]: the one position pooling reads ([CLS] for the pooler and "first", the last
        real token for "last"); None for "mean", which reads them all."""
        if self.pooling in ("pooler", "first"):
            return jnp.zeros((batch["input_ids"].shape[0], 1), jnp.int32)
        if self.pooling == "last":
            return last_real_position(batch["attention_mask"])[:, None]
        return None

    def pool(self, outputs: BackboneOutput, batch: dict) -> jax.Array:
        if self.pooling == "pooler":
            if outputs.pooled is None:
                raise ValueError("pooling='pooler' needs a backbone with a pooler; use 'first' or 'last'")
            return outputs.pooled
        hidden = outputs.last_hidden_state
        if self.pooling == "first":
            return hidden_at(outputs, jnp.zeros((hidden.shape[0],), jnp.int32))
        mask = batch["attention_mask"]
        if self.pooling == "last":
            return hidden_at(outputs, last_real_position(mask))
        weights = mask.astype(jnp.float32)[..., None]
        return jnp.sum(hidden.astype(jnp.float32) * weights, 1) / jnp.maximum(weights.sum(1), 1.0)

    def loss(self, params, outputs, lm_logits: Callable, batch, *, train: bool, rng=None):
        logits = self._apply(params, self.pool(outputs, batch), batch, train, rng)
        loss, accuracy = cross_entropy(logits, batch["label"], valid_mask(batch, batch["label"].shape),
                                       example_weights(batch))
        return loss, {"accuracy": accuracy}

    def predict(self, params, outputs, lm_logits: Callable, batch) -> dict:
        logits = self._apply(params, self.pool(outputs, batch), batch, False, None)
        return {"scores": logits, "prediction": jnp.argmax(logits, -1)}


@dataclasses.dataclass(frozen=True)
class TokenClassifier(_LinearHead):
    """Per-token labels [batch, length]; positions labelled IGNORE (sub-word continuations,
    prompts, special tokens, padding) are neither trained nor scored."""

    name: str = "tokens"

    def loss(self, params, outputs, lm_logits: Callable, batch, *, train: bool, rng=None):
        logits = self._apply(params, outputs.last_hidden_state, batch, train, rng)
        labels = batch["labels"]
        mask = (labels != IGNORE) & valid_mask(batch, labels.shape)
        loss, accuracy = cross_entropy(logits, labels, mask)
        return loss, {"token_accuracy": accuracy}

    def predict(self, params, outputs, lm_logits: Callable, batch) -> dict:
        """prediction: the tag per token [batch, length]; probability: its softmax probability
        (for the predictions file)."""
        logits = self._apply(params, outputs.last_hidden_state, batch, False, None).astype(jnp.float32)
        return {"prediction": jnp.argmax(logits, -1), "probability": jnp.max(jax.nn.softmax(logits, -1), -1)}


@dataclasses.dataclass(frozen=True)
class SpanExtractor(_LinearHead):
    """Start and end logits over the tokens; positions outside batch["context_mask"] are excluded
    except position 0 ([CLS]), the "no answer" target of SQuAD 2.0."""

    label_counts: tuple[int, ...] = (2,)
    name: str = "span"

    def _logits(self, params, outputs, batch, train, rng):
        logits = self._apply(params, outputs.last_hidden_state, batch, train, rng)  # [batch, length, 2]
        allowed = batch["context_mask"].astype(bool).at[:, 0].set(True)
        logits = jnp.where(allowed[..., None], logits, NEG_INF)
        return logits[..., 0], logits[..., 1]

    def loss(self, params, outputs, lm_logits: Callable, batch, *, train: bool, rng=None):
        start, end = self._logits(params, outputs, batch, train, rng)
        mask = valid_mask(batch, batch["start_position"].shape)
        start_loss, start_acc = cross_entropy(start, batch["start_position"], mask)
        end_loss, end_acc = cross_entropy(end, batch["end_position"], mask)
        return (start_loss + end_loss) / 2, {"start_accuracy": start_acc, "end_accuracy": end_acc}

    def predict(self, params, outputs, lm_logits: Callable, batch) -> dict:
        start, end = self._logits(params, outputs, batch, False, None)
        return {"start_logits": start, "end_logits": end}
