"""Banks of prompts trained together as if each trained alone.

A bank of fully independent prompt encoders: one table, BiLSTM and MLP per prompt.

    bank = PromptEncoderBank(num_prompts=41, num_tokens=6, embed_dim=768, reparam="lstm")
    params = bank.init({"params": rng})["params"]
    vectors = bank.apply({"params": params})        # [41, 6, 768], prompt k from encoder k

`PromptEncoder(num_prompts=n)` keeps n tables but shares one LSTM/MLP among them (a multi-task
prompt). P-tuning's LAMA setting trains one encoder per relation; this bank gives each prompt its
own encoder (the same module vmapped over a leading "prompt_bank" axis), so that several
relations train in one job while a prompt's parameters get gradient only from its own examples.
Drop-in for PromptModel.soft_prompt: same output shape as a banked PromptEncoder, and a
`table_init` field that PromptModel.init_params sets (each prompt draws its own rows).

Training a bank entry together with others ends where it would alone (`BankTraining`, which the
train step and the optimizer use through the model's `bank` attribute):
  - its loss is the mean over its own rows of the batch (rows weighted 1 / its row count, in the
    batch field "example_weight" that heads read), not a share of the batch mean;
  - its gradient is clipped by its own global norm;
  - the optimizer (moments, step count, schedule) runs per entry, vmapped over the bank axis, and
    an entry with no rows in the batch is left as it was: no update, no moment decay, no count.
Leaves without the bank axis (a shared head, a shared encoder) are optimized as usual.
LAMA trains one P-tuning prompt per relation this way; batched sweep variants can do the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ptjax.errors import InputError
from ptjax.prompts.encoders import Initializer, PromptEncoder

BANK_AXIS = "prompt_bank"  # logical name of the leading axis of banked parameters
EXAMPLE_WEIGHT = "example_weight"  # batch field: per-row loss weight replacing the batch mean


class PromptEncoderBank(nn.Module):
    """num_prompts independent PromptEncoders; __call__() -> float32 [num_prompts, num_tokens, embed_dim].

    reparam, hidden_dim, activation, lstm_layers, table_init: as in PromptEncoder (per prompt).
    Parameters have a leading [num_prompts] axis (logical name "prompt_bank").
    """

    num_prompts: int
    num_tokens: int
    embed_dim: int
    reparam: str = "lstm"
    hidden_dim: int | None = None
    activation: str = "relu"
    lstm_layers: int = 2
    table_init: Initializer | None = None

    @nn.compact
    def __call__(self):
        if self.num_prompts < 1:
            raise InputError(f"a prompt bank needs at least one prompt, got num_prompts={self.num_prompts}")
        encoders = nn.vmap(
            PromptEncoder, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=(), out_axes=0,
            axis_size=self.num_prompts, metadata_params={nn.PARTITION_NAME: "prompt_bank"},
        )
        return encoders(
            num_tokens=self.num_tokens, embed_dim=self.embed_dim, reparam=self.reparam, hidden_dim=self.hidden_dim,
            activation=self.activation, lstm_layers=self.lstm_layers, table_init=self.table_init, name="encoder",
        )()


# --------------------------------------------------------------------------------------------
# Training a bank: each entry as if alone.


def entry_weights(prompt_id: jax.Array, valid: jax.Array | None, num_entries: int,
                  scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(row weights float32 [batch], has examples bool [num_entries]) of a batch.

    A row weighs scale / (rows of its entry), 0 when not valid: the weighted sum of the rows'
    losses is the sum over entries of each entry's mean loss. scale: the number of microbatches
    that will average the sum (gradient accumulation)."""
    rows = jnp.ones(prompt_id.shape, jnp.float32) if valid is None else valid.astype(jnp.float32)
    counts = jnp.zeros((num_entries,), jnp.float32).at[prompt_id].add(rows)
    weights = rows * (scale / jnp.maximum(counts[prompt_id], 1.0))
    return weights, counts > 0


def per_entry(inner: optax.GradientTransformation, *, clip_norm: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """`inner` run on each bank entry alone: every leaf has the bank axis first; the state is the
    inner state per entry (counts included). update(..., entry_has_examples=bool [entries])
    clips each entry's gradient to its own global norm `clip_norm` (0: none), updates it, and
    leaves entries without examples untouched (zero update, previous state)."""

    def init(params):
        return jax.vmap(inner.init)(params)

    def update(updates, state, params=None, *, entry_has_examples=None, **extra):
        del extra

        def one(grads, entry_state, entry_params):
            if clip_norm:
                grads, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
            return inner.update(grads, entry_state, entry_params)

        new_updates, new_state = jax.vmap(one)(updates, state, params)
        if entry_has_examples is None:
            return new_updates, new_state

        def where(new, old):
            keep = entry_has_examples.reshape((-1,) + (1,) * (new.ndim - 1))
            return jnp.where(keep, new, old)

        new_updates = jax.tree.map(lambda u: where(u, jnp.zeros_like(u)), new_updates)
        return new_updates, jax.tree.map(where, new_state, state)

    return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass(frozen=True)
class BankTraining:
    """How a model with a prompt bank trains it: entries independent (module docstring).

    num_entries: bank size. is_bank_leaf(path): whether a trainable leaf has the bank axis first
    (the model knows from its logical axes)."""

    num_entries: int
    is_bank_leaf: Callable[[tuple[str, ...]], bool]

    def prepare(self, batch: dict, microbatches: int = 1) -> tuple[dict, dict]:
        """(batch with EXAMPLE_WEIGHT, extra arguments of the optimizer update) for a train step."""
        weights, present = entry_weights(batch["prompt_id"], batch.get("valid"), self.num_entries,
                                         scale=float(microbatches))
        return {**batch, EXAMPLE_WEIGHT: weights}, {"entry_has_examples": present}

    def wrap(self, inner: optax.GradientTransformation, clip_norm: float) -> optax.GradientTransformationExtraArgs:
        return per_entry(inner, clip_norm=clip_norm)
