"""Verbalizer head: class scores are LM-head logits of label words at one position.

PET / P-tuning / PPT formulation: the pattern puts a mask (masked LMs), the answer slot's
preceding token (causal LMs) or the sentinel (T5 decoder) at `target_index`, and each class is a
word of the vocabulary. LAMA is the same head with the candidate vocabulary as the "labels".
An optional batch["label_mask"] [batch, labels] restricts each example to some of the labels.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.heads.base import NEG_INF, cross_entropy, example_weights, hidden_at, valid_mask
from ptjax.models.layers import BackboneOutput


@dataclasses.dataclass(frozen=True)
class VerbalizerHead:
    """label_token_ids: [num_labels] token id of each label word, or [num_tasks, max_labels]
    padded with -1 when a batch mixes tasks (rows picked by batch["task_id"]).

    loss_over: "labels" normalizes the softmax over the label words (PET); "vocab" over the whole
    vocabulary (P-tuning's LAMA objective), predictions still restricted to the labels.
    """

    label_token_ids: np.ndarray
    loss_over: str = "labels"
    name: str = "verbalizer"

    def __post_init__(self):
        if self.loss_over not in ("labels", "vocab"):
            raise ValueError(f"loss_over must be 'labels' or 'vocab', got {self.loss_over!r}")
        object.__setattr__(self, "label_token_ids", np.asarray(self.label_token_ids, np.int32))

    uses_lm_head = True

    def init(self, rng, hidden_size: int) -> tuple[dict, dict]:
        """(params, logical axes): a verbalizer trains nothing of its own."""
        return {}, {}

    def _label_ids(self, batch: dict) -> jax.Array:
        ids = jnp.asarray(self.label_token_ids)
        if ids.ndim == 1:
            return jnp.broadcast_to(ids, (batch["target_index"].shape[0], ids.shape[0]))
        return ids[batch["task_id"]]

    def read_positions(self, batch: dict) -> jax.Array:
        """[batch, 1]: target_index, the one position scored (of the sequence the backbone reads:
        the input of an encoder or a decoder-only model)."""
        return jnp.clip(batch["target_index"], 0, batch["input_ids"].shape[1] - 1)[:, None]

    def logits(self, outputs: BackboneOutput, lm_logits: Callable, batch: dict) -> tuple:
        """-> (label scores [batch, labels], vocab logits [batch, vocab]) at batch["target_index"]."""
        target_hidden = hidden_at(outputs, batch["target_index"])
        vocab_logits = lm_logits(target_hidden).astype(jnp.float32)
        label_ids = self._label_ids(batch)
        scores = jnp.take_along_axis(vocab_logits, jnp.maximum(label_ids, 0), axis=-1)
        allowed = label_ids >= 0
        if "label_mask" in batch:  # per-example label sets (PPT unified multiple choice: 2-16 options)
            allowed = allowed & batch["label_mask"].astype(bool)
        return jnp.where(allowed, scores, NEG_INF), vocab_logits

    def loss(self, params, outputs, lm_logits, batch, *, train: bool, rng=None) -> tuple:
        scores, vocab_logits = self.logits(outputs, lm_logits, batch)
        mask = valid_mask(batch, batch["label"].shape)
        weights = example_weights(batch)
        if self.loss_over == "vocab":
            token = jnp.take_along_axis(self._label_ids(batch), batch["label"][:, None], axis=1)[:, 0]
            loss, _ = cross_entropy(vocab_logits, token, mask, weights)
            _, accuracy = cross_entropy(scores, batch["label"], mask)
        else:
            loss, accuracy = cross_entropy(scores, batch["label"], mask, weights)
        return loss, {"accuracy": accuracy}

    def predict(self, params, outputs, lm_logits, batch) -> dict:
        scores, _ = self.logits(outputs, lm_logits, batch)
        return {"scores": scores, "prediction": jnp.argmax(scores, axis=-1)}
