"""The gated feed-forward's activation forward and backward at SmolLM2's [1184, 1536] in bf16:
ptjax.models.layers.gated_activate (float32 inside, rounded once; autodiff's backward) against a
custom VJP computing both gradients from gate, up and the cotangent in one function; medians of
50 calls each, twice, and whether the results are equal (BENCHMARKS.md "bf16 compute").

    python benchmarks/scripts/swiglu_backward.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import time

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.models.layers import gated_activate


@jax.custom_vjp
def fused_swiglu(gate, up):
    g = gate.astype(jnp.float32)
    return (g * jax.nn.sigmoid(g) * up.astype(jnp.float32)).astype(gate.dtype)


def _forward(gate, up):
    return fused_swiglu(gate, up), (gate, up)


def _backward(residuals, d_out):
    gate, up = residuals
    g, u, d = gate.astype(jnp.float32), up.astype(jnp.float32), d_out.astype(jnp.float32)
    s = jax.nn.sigmoid(g)
    return (d * u * s * (1 + g * (1 - s))).astype(gate.dtype), (d * g * s).astype(up.dtype)


fused_swiglu.defvjp(_forward, _backward)


def forward_and_backward(fn):
    def run(gate, up, d_out):
        out, pull = jax.vjp(fn, gate, up)
        return (out, *pull(d_out))
    return jax.jit(run)


rng = np.random.default_rng(0)
gate, up, d_out = (jnp.asarray(rng.normal(size=(1184, 1536)), jnp.bfloat16) for _ in range(3))
arms = {"gated_activate": forward_and_backward(lambda g, u: gated_activate("silu", g, u)),
        "fused custom VJP": forward_and_backward(fused_swiglu)}
results = [arm(gate, up, d_out) for arm in arms.values()]
print("equal (output, d gate, d up):", [bool(jnp.all(a == b)) for a, b in zip(*results)])
for _ in range(2):
    for name, arm in arms.items():
        times = []
        for _ in range(50):
            start = time.perf_counter()
            jax.block_until_ready(arm(gate, up, d_out))
            times.append(time.perf_counter() - start)
        print(f"{name:18s} {np.median(times) * 1e3:.3f} ms", flush=True)
