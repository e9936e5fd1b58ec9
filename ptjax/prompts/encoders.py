"""Prompt encoders: the modules that produce the soft-token vectors of a template.

    encoder = PromptEncoder(num_tokens=9, embed_dim=768, reparam="lstm")
    params = encoder.init(rng)["params"]
    vectors = encoder.apply({"params": params})              # [9, 768]
    plain, plain_params = materialize_encoder(encoder, params)   # export: just the vectors

Variants (`reparam`):
  "none": a trainable table [num_tokens, embed] (Lester et al. prompt tuning).
  "lstm": the table goes through a 2-layer bidirectional LSTM (embed // 2 per direction) and a
    2-layer MLP (Linear, ReLU, Linear), as in P-tuning's prompt encoder.
  "mlp": the table goes through the MLP only (P-tuning's MLP variant; with activation="tanh" and
    a hidden width, the MLP reparameterization of prefix tuning).
num_prompts > 0 gives a bank of independent prompts, output [num_prompts, num_tokens, embed]
(one prompt per relation or task, selected per example by `insert_soft_prompts(prompt_id=...)`).

Initializers for the table (`table_init`), each (rng, shape, dtype) -> array with shape
[..., num_tokens, embed]: `random_init` (normal; pass the vocabulary's scale from
`embedding_std`), `vocab_init` (rows sampled from the frozen embedding matrix, Lester's
"sampled vocab"), `text_init` (the embeddings of a text's tokens, cropped or repeated),
`label_init` (class-label embeddings first, sampled vocabulary after, Lester/PPT "label init"),
`vectors_init` (an exported or pre-trained prompt, e.g. PPT transfer).

Parameter logical axes: the table ("prompt", "embed") with a leading "prompt_bank" for banks;
MLP and LSTM weights use "embed" and "prompt_hidden" (all small: replicate them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.models.layers import Dense

Array = jax.Array
Initializer = Callable[..., Array]

REPARAMETERIZATIONS = ("none", "lstm", "mlp")
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


# --------------------------------------------------------------------------------------------
# Initializers.


def embedding_std(embedding) -> float:
    """The standard deviation of a (frozen) embedding matrix [vocab, embed], for random_init."""
    return float(jnp.std(jnp.asarray(embedding, jnp.float32)))


def random_init(stddev: float = 1.0) -> Initializer:
    """Normal(0, stddev). 1.0 matches PyTorch nn.Embedding (the P-tuning encoders' input)."""

    def init(rng, shape, dtype=jnp.float32):
        flat = stddev * jax.random.normal(rng, (math.prod(shape),), jnp.float32)
        return flat.reshape(shape).astype(dtype)

    return init


def _rows(embedding, ids, shape, dtype) -> Array:
    if embedding.shape[-1] != shape[-1]:
        raise InputError(f"prompt init: embedding width {embedding.shape[-1]} != prompt width {shape[-1]}")
    return jnp.take(jnp.asarray(embedding), ids, axis=0).reshape(shape).astype(dtype)


def _sample_ids(rng, count: int, vocab_size: int, candidate_ids) -> Array:
    pool = vocab_size if candidate_ids is None else len(candidate_ids)
    if count > pool:
        picks = jax.random.randint(rng, (count,), 0, pool)
    else:  # without replacement: the first `count` of a random order
        picks = jnp.argsort(jax.random.uniform(rng, (pool,)))[:count]
    return picks if candidate_ids is None else jnp.asarray(candidate_ids, jnp.int32)[picks]


def vocab_init(embedding, candidate_ids: Sequence[int] | None = None) -> Initializer:
    """Rows of `embedding` [vocab, embed] sampled without replacement (with, when the prompt is
    longer than the pool). candidate_ids: restrict the pool (e.g. the 5,000 most frequent tokens).
    """

    def init(rng, shape, dtype=jnp.float32):
        count = math.prod(shape[:-1])
        return _rows(embedding, _sample_ids(rng, count, embedding.shape[0], candidate_ids), shape, dtype)

    return init


def text_init(embedding, token_ids: Sequence[int]) -> Initializer:
    """The embeddings of `token_ids` (e.g. tokenizer(text, add_special_tokens=False).input_ids),
    repeated or cropped to the prompt length; every prompt of a bank gets the same."""
    if len(token_ids) == 0:
        raise InputError("text_init: the text has no tokens")

    def init(rng, shape, dtype=jnp.float32):
        ids = np.resize(np.asarray(token_ids, np.int32), shape[-2])
        ids = np.broadcast_to(ids, shape[:-1])
        return _rows(embedding, ids, shape, dtype)

    return init


def label_init(
    embedding, label_token_ids: Sequence[Sequence[int] | int], candidate_ids: Sequence[int] | None = None
) -> Initializer:
    """Token k < num_labels starts as label k's embedding (the mean over a multi-token label's
    tokens); the remaining tokens are sampled vocabulary rows (see vocab_init)."""
    labels = [[int(t)] if np.isscalar(t) else [int(i) for i in t] for t in label_token_ids]
    if not labels or any(not ids for ids in labels):
        raise InputError("label_init: every label needs at least one token")

    def init(rng, shape, dtype=jnp.float32):
        table = jnp.asarray(embedding)
        vectors = jnp.stack([table[jnp.asarray(ids)].astype(jnp.float32).mean(0) for ids in labels])
        sampled = vocab_init(embedding, candidate_ids)(rng, shape, jnp.float32)
        used = min(len(labels), shape[-2])
        return sampled.at[..., :used, :].set(vectors[:used]).astype(dtype)

    return init


def vectors_init(vectors) -> Initializer:
    """Start from given vectors: [tokens, embed] (repeated or cropped to the prompt length, the
    same for every prompt of a bank) or exactly the parameter's shape."""
    vectors = jnp.asarray(vectors)

    def init(rng, shape, dtype=jnp.float32):
        if tuple(vectors.shape) == tuple(shape):
            return vectors.astype(dtype)
        if vectors.ndim != 2 or vectors.shape[-1] != shape[-1]:
            raise InputError(
                f"vectors_init: vectors of shape {tuple(vectors.shape)} do not fit a prompt {tuple(shape)}"
            )
        rows = jnp.resize(vectors, (shape[-2], shape[-1]))
        return jnp.broadcast_to(rows, shape).astype(dtype)

    return init


# --------------------------------------------------------------------------------------------
# Modules.


def uniform_init(bound: float) -> Initializer:
    """U(-bound, bound), drawn flat and reshaped (high-rank random draws compile slowly on CPU)."""

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, (math.prod(shape),), dtype, -bound, bound).reshape(shape)

    return init


# PyTorch nn.Linear's default initialization (bound 1/sqrt(fan_in)), as the P-tuning code used.
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _lstm_step(carry, gates):
    """One time step; a module-level function so eager calls reuse the compiled scan."""
    h, c, recurrent = carry
    gates = gates + jnp.einsum("...f,fgk->...gk", h, recurrent)
    i, f, g, o = (gates[..., n, :] for n in range(4))
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c, recurrent), h


class LSTM(nn.Module):
    """One LSTM direction over [..., time, in] -> [..., time, features] (PyTorch gate order
    i, f, g, o; zero initial state). reverse: run from the last step to the first."""

    features: int
    in_axis_name: str | None = "embed"
    reverse: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        bound = 1.0 / math.sqrt(self.features)
        gates_in = Dense((4, self.features), (self.in_axis_name,), (None, "prompt_hidden"),
                         kernel_init=uniform_init(bound), name="input")(x)
        recurrent = self.param(
            "recurrent_kernel",
            nn.with_logical_partitioning(uniform_init(bound), ("prompt_hidden", None, None)),
            (self.features, 4, self.features),
        )
        steps = jnp.moveaxis(gates_in, -3, 0)  # [time, ..., 4, features]
        if self.reverse:
            steps = steps[::-1]
        zeros = jnp.zeros(steps.shape[1:-2] + (self.features,), steps.dtype)
        _, outputs = jax.lax.scan(_lstm_step, (zeros, zeros, recurrent), steps)
        if self.reverse:
            outputs = outputs[::-1]
        return jnp.moveaxis(outputs, 0, -2)


class BiLSTM(nn.Module):
    """Stacked bidirectional LSTM: [..., time, in] -> [..., time, 2 * features]."""

    features: int
    num_layers: int = 2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for layer in range(self.num_layers):
            in_axis = "embed" if layer == 0 else "prompt_hidden"
            forward = LSTM(self.features, in_axis, name=f"layer_{layer}_forward")(x)
            backward = LSTM(self.features, in_axis, reverse=True, name=f"layer_{layer}_backward")(x)
            x = jnp.concatenate([forward, backward], axis=-1)
        return x


class MLP(nn.Module):
    """Linear -> activation -> Linear back to out_dim, on the last axis."""

    hidden_dim: int
    out_dim: int
    activation: str = "relu"
    in_axis_name: str | None = "embed"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = Dense(self.hidden_dim, (self.in_axis_name,), ("prompt_hidden",), kernel_init=torch_linear_init,
                  name="hidden")(x)
        x = ACTIVATIONS[self.activation](x)
        return Dense(self.out_dim, ("prompt_hidden",), ("embed",), kernel_init=torch_linear_init,
                     name="output")(x)


class PromptEncoder(nn.Module):
    """Soft-prompt vectors: __call__() -> float32 [num_tokens, embed_dim], or
    [num_prompts, num_tokens, embed_dim] when num_prompts > 0.

    reparam: "none" | "lstm" | "mlp" (module docstring). hidden_dim: the MLP's width (default
    embed_dim, as in P-tuning). activation: "relu" (P-tuning) or "tanh". lstm_layers: 2 in the
    paper. table_init: the table's initializer (default random_init(1.0)).
    """

    num_tokens: int
    embed_dim: int
    reparam: str = "none"
    num_prompts: int = 0
    hidden_dim: int | None = None
    activation: str = "relu"
    lstm_layers: int = 2
    table_init: Initializer | None = None

    @nn.compact
    def __call__(self) -> Array:
        if self.reparam not in REPARAMETERIZATIONS:
            known = ", ".join(REPARAMETERIZATIONS)
            raise InputError(f"unknown prompt reparameterization {self.reparam!r} (known: {known})")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {self.activation!r} (known: {', '.join(ACTIVATIONS)})")
        if self.num_tokens < 1:
            raise InputError(f"a prompt needs at least one token, got num_tokens={self.num_tokens}")
        bank = (self.num_prompts,) if self.num_prompts else ()
        bank_axes = ("prompt_bank",) if self.num_prompts else ()
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(
                self.table_init or random_init(1.0), bank_axes + ("prompt", "embed")
            ),
            bank + (self.num_tokens, self.embed_dim),
            jnp.float32,
        )
        x = table
        hidden = self.hidden_dim or self.embed_dim
        if self.reparam == "lstm":
            x = BiLSTM(self.embed_dim // 2, self.lstm_layers, name="lstm")(x)
            x = MLP(hidden, self.embed_dim, self.activation, "prompt_hidden", name="mlp")(x)
        elif self.reparam == "mlp":
            x = MLP(hidden, self.embed_dim, self.activation, name="mlp")(x)
        return x


def materialize_encoder(encoder: PromptEncoder, params: Any) -> tuple[PromptEncoder, dict]:
    """The encoder's output computed once, as an equivalent plain table.

    Returns (encoder with reparam="none", {"embedding": vectors}); applying the pair gives the
    same vectors, so an exported prompt is just the vectors and inference needs no LSTM or MLP.
    """
    vectors = jax.device_get(encoder.apply({"params": params}))
    return encoder.clone(reparam="none", table_init=None, parent=None), {"embedding": np.asarray(vectors)}
