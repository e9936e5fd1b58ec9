"""Multiple-choice head: one score per candidate, softmax over the candidates.

Each example carries `options` candidate sequences ([batch, options, length] fields); the model
runs the backbone on them flattened to [batch * options, length] and this head scores them:
- scoring="lm": the log-likelihood of each option's answer tokens under the LM head
  (COPA, WSC and PPT's unified multiple choice; also multi-token label words). The featurizer
  marks, per option, up to K scored tokens: score_positions [batch, options, K] (where the LM
  predicts the token: the mask for masked LMs, the previous position for causal LMs / the T5
  decoder), score_targets [batch, options, K] and score_mask [batch, options, K].
- scoring="linear": a trained linear score on the pooled representation (fine-tuning style).
option_mask [batch, options] marks real options when examples have different numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ptjax.heads.base import NEG_INF, cross_entropy, valid_mask
from ptjax.heads.linear import SequenceClassifier
from ptjax.models.layers import BackboneOutput


@dataclasses.dataclass(frozen=True)
class ChoiceHead:
    scoring: str = "lm"
    length_normalize: bool = False
    pooling: str = "first"
    dropout: float = 0.1
    name: str = "choice"

    def __post_init__(self):
        if self.scoring not in ("lm", "linear"):
            raise ValueError(f"scoring must be 'lm' or 'linear', got {self.scoring!r}")

    @property
    def uses_lm_head(self) -> bool:
        return self.scoring == "lm"

    def _linear(self) -> SequenceClassifier:
        return SequenceClassifier(label_counts=(1,), dropout=self.dropout, pooling=self.pooling)

    def init(self, rng, hidden_size: int) -> tuple[dict, dict]:
        return self._linear().init(rng, hidden_size) if self.scoring == "linear" else ({}, {})

    def scores(self, params, outputs: BackboneOutput, lm_logits: Callable, batch: dict, train=False, rng=None):
        """-> [batch, options] float32."""
        batch_size, options = batch["option_mask"].shape
        if self.scoring == "linear":
            flat = {"attention_mask": batch["attention_mask"].reshape(batch_size * options, -1),
                    "input_ids": batch["input_ids"].reshape(batch_size * options, -1)}
            pooled = self._linear().pool(outputs, flat)
            scores = self._linear()._apply(params, pooled, flat, train, rng)[:, 0]
        else:
            positions = batch["score_positions"].reshape(batch_size * options, -1)
            hidden = jnp.take_along_axis(outputs.last_hidden_state, positions[..., None], axis=1)
            log_probs = jax.nn.log_softmax(lm_logits(hidden).astype(jnp.float32), axis=-1)
            targets = batch["score_targets"].reshape(batch_size * options, -1)
            token_scores = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
            mask = batch["score_mask"].reshape(batch_size * options, -1).astype(jnp.float32)
            scores = jnp.sum(token_scores * mask, axis=-1)
            if self.length_normalize:
                scores = scores / jnp.maximum(mask.sum(-1), 1.0)
        scores = scores.reshape(batch_size, options)
        return jnp.where(batch["option_mask"].astype(bool), scores, NEG_INF)

    def loss(self, params, outputs, lm_logits: Callable, batch, *, train: bool, rng=None):
        scores = self.scores(params, outputs, lm_logits, batch, train, rng)
        loss, accuracy = cross_entropy(scores, batch["label"], valid_mask(batch, batch["label"].shape))
        return loss, {"accuracy": accuracy}

    def predict(self, params, outputs, lm_logits: Callable, batch) -> dict:
        scores = self.scores(params, outputs, lm_logits, batch)
        return {"scores": scores, "prediction": jnp.argmax(scores, -1)}
