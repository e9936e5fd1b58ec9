"""Shared building blocks with hand-written derivatives."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ptjax.models.layers import ACTIVATIONS, dropout_mask, gelu_exact
from ptjax.models.llama import apply_rotary, rotary_tables


def test_exact_gelu_and_its_derivative_match_torch():
    x = np.linspace(-12.0, 12.0, 20001, dtype=np.float32)
    ours = np.asarray(gelu_exact(jnp.asarray(x)))
    slope = np.asarray(jax.vmap(jax.grad(gelu_exact))(jnp.asarray(x)))
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(tx).sum().backward()
    np.testing.assert_allclose(ours, torch.nn.functional.gelu(torch.tensor(x)).numpy(), atol=2e-6)
    np.testing.assert_allclose(slope, tx.grad.numpy(), atol=2e-6)
    assert ACTIVATIONS["gelu"] is gelu_exact


def test_exact_gelu_keeps_bfloat16():
    x = jnp.linspace(-4.0, 4.0, 64, dtype=jnp.bfloat16)
    out, slope = gelu_exact(x), jax.grad(lambda x: gelu_exact(x).sum())(x)
    assert out.dtype == slope.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32),
                               np.asarray(jax.nn.gelu(x.astype(jnp.float32), approximate=False)), atol=3e-2)


def _compiled_count(fn, pattern: str, *args) -> int:
    return len(re.findall(pattern, jax.jit(fn).lower(*args).compile().as_text()))


# Layers as XLA sees them: a product, then the elementwise work that reads a shared value.
HIDDEN = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 24))
WEIGHTS = jax.random.normal(jax.random.PRNGKey(1), (4, 24, 24)) * 0.2


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion decisions")
def test_rotary_tables_are_evaluated_once_however_many_layers_read_them():
    """XLA:CPU would evaluate cos and sin again in every fusion that reads the tables (each
    layer's query and key, forward and backward: 2 -> 14 trigonometric ops for 1 -> 4 layers
    here before computed_once); computed_once keeps them in one place."""
    inv_freq = 1.0 / (10000 ** (np.arange(0, 8, 2) / 8))

    def layers(count):
        def loss(hidden, weights, positions):
            cos, sin = rotary_tables(positions, inv_freq)
            for i in range(count):
                hidden = apply_rotary((hidden @ weights[i]).reshape(2, 6, 3, 8), cos, sin).reshape(2, 6, 24)
            return jnp.sum(hidden ** 2)
        return jax.grad(loss)

    positions = jnp.arange(6)[None]
    trig = r" (?:cosine|sine)\("
    assert _compiled_count(layers(4), trig, HIDDEN, WEIGHTS, positions) == \
        _compiled_count(layers(1), trig, HIDDEN, WEIGHTS, positions)
    angles = np.arange(6)[:, None] * inv_freq
    angles = np.concatenate([angles, angles], -1)
    cos, sin = rotary_tables(positions, inv_freq)
    np.testing.assert_allclose(np.asarray(cos)[0, :, 0], np.cos(angles), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sin)[0, :, 0], np.sin(angles), atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion decisions")
def test_a_dropout_mask_is_hashed_once_however_many_fusions_read_it():
    """Before computed_once the mask's hash was evaluated in every fusion reading it (1 -> 7
    copies of the murmur constant for 1 -> 4 readers here)."""
    def readers(count):
        def loss(hidden, weights, rng):
            keep = dropout_mask(rng, hidden.shape, 0.9)
            for i in range(count):
                hidden = jnp.where(keep, jnp.tanh(hidden @ weights[i]), 0.0)
            return jnp.sum(hidden ** 2)
        return jax.grad(loss)

    murmur = r"constant\(2246822507\)"  # murmur3's first finalizer multiplier, 0x85EBCA6B
    rng = jax.random.PRNGKey(2)
    assert _compiled_count(readers(4), murmur, HIDDEN, WEIGHTS, rng) == \
        _compiled_count(readers(1), murmur, HIDDEN, WEIGHTS, rng)
    mask = jax.jit(lambda rng: dropout_mask(rng, (16, 32), 0.9))(rng)
    assert mask.dtype == jnp.bool_ and 0.8 < float(mask.mean()) < 0.97
    np.testing.assert_array_equal(mask, dropout_mask(rng, (16, 32), 0.9))
