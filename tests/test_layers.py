"""Shared building blocks with hand-written derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from ptjax.models.layers import ACTIVATIONS, gelu_exact


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
