"""Referent head: the LM writes a candidate answer into the slot (WSC as PET and P-tuning read it).

Each example carries one candidate (the noun phrase the pronoun may refer to) in the choice
layout of `ptjax.heads.choice` with one option: score_positions / score_targets / score_mask
[batch, 1, K] mark where the LM predicts each of the candidate's K tokens (masks for a masked LM,
the previous position for a causal LM, the decoder for T5), teacher-forced.

  loss      the candidate's mean token negative log-likelihood, over the examples whose label is
            1 only (the candidate is the referent): the model learns to name referents; wrong
            candidates teach nothing, as in PET's WSC training
  predict   the LM's own fill of the slot: its top token at every scored position ("fill"
            [batch, K], "fill_mask"), and the candidate's mean token log-likelihood ("score").
            The formulation decodes the fill and compares it with the candidate's words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ptjax.heads.base import valid_mask
from ptjax.models.layers import BackboneOutput


@dataclasses.dataclass(frozen=True)
class ReferentHead:
    name: str = "referent"
    uses_lm_head = True

    def init(self, rng, hidden_size: int) -> tuple[dict, dict]:
        return {}, {}

    def _token_log_probs(self, outputs: BackboneOutput, lm_logits: Callable, batch: dict):
        """(log-probs [batch, K, vocab] at the scored positions, targets [batch, K], mask [batch, K])."""
        batch_size, options = batch["option_mask"].shape
        if options != 1:
            raise ValueError(f"the referent head scores one candidate per example, got {options}")
        positions = batch["score_positions"].reshape(batch_size, -1)
        hidden = jnp.take_along_axis(outputs.last_hidden_state, positions[..., None], axis=1)
        log_probs = jax.nn.log_softmax(lm_logits(hidden).astype(jnp.float32), axis=-1)
        targets = batch["score_targets"].reshape(batch_size, -1)
        mask = batch["score_mask"].reshape(batch_size, -1).astype(jnp.float32)
        return log_probs, targets, mask

    def loss(self, params, outputs, lm_logits: Callable, batch, *, train: bool, rng=None):
        log_probs, targets, mask = self._token_log_probs(outputs, lm_logits, batch)
        token_lp = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        per_example = -jnp.sum(token_lp * mask, axis=-1) / jnp.maximum(mask.sum(-1), 1.0)
        rows = (valid_mask(batch, batch["label"].shape) & (batch["label"] == 1)).astype(jnp.float32)
        count = rows.sum()
        loss = jnp.sum(per_example * rows) / jnp.maximum(count, 1.0)
        hits = jnp.all((jnp.argmax(log_probs, -1) == targets) | (mask == 0), axis=-1).astype(jnp.float32)
        accuracy = jnp.sum(hits * rows) / jnp.maximum(count, 1.0)  # referents written exactly
        # A batch of wrong candidates only has nothing to learn: weight ~0, never 0 (the engine
        # divides by the summed weight of accumulated microbatches).
        return loss, {"accuracy": accuracy, "weight": jnp.maximum(count, 1e-6)}

    def predict(self, params, outputs, lm_logits: Callable, batch) -> dict:
        log_probs, targets, mask = self._token_log_probs(outputs, lm_logits, batch)
        token_lp = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        score = jnp.sum(token_lp * mask, axis=-1) / jnp.maximum(mask.sum(-1), 1.0)
        return {"fill": jnp.argmax(log_probs, -1).astype(jnp.int32), "fill_mask": mask.astype(jnp.int32),
                "score": score}
