"""One query over an 84-slot KV cache, 30 layers: ptjax's attention kernel against a
multiply-and-reduce form, an einsum form and a heads-first cache layout (milliseconds;
BENCHMARKS.md "Generation").

    python benchmarks/scripts/decode_attention_layouts.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import time, numpy as np, jax, jax.numpy as jnp
from ptjax.models.attention import dot_product_attention
k0 = jax.random.PRNGKey(0)
B, S, KV, G, D, L = 8, 84, 3, 3, 64, 30
q = jax.random.normal(k0, (L, B, 1, KV*G, D)); k = jax.random.normal(k0, (L, B, S, KV, D)); v = jax.random.normal(k0, (L, B, S, KV, D))
mask = jnp.ones((B, 1, 1, S), bool).at[:, :, :, 70:].set(False)
def reduce_attn(q, k, v, mask):
    b, _, h, d = q.shape
    qg = q.reshape(b, KV, G, d)
    s = jnp.sum(qg[:, None] * k[:, :, :, None, :], axis=-1) * d ** -0.5  # [b, S, kv, g]
    s = jnp.where(mask[:, 0, 0][:, :, None, None], s, -1e30)
    p = jax.nn.softmax(s, axis=1)
    o = jnp.sum(p[..., None] * v[:, :, :, None, :], axis=1)  # [b, kv, g, d]
    return o.reshape(b, 1, h, d)
def grouped_einsum_attn(q, k, v, mask, key_axes="skd"):
    """key_axes: the layout of k and v, "skd" ([b, slots, kv, d]) or "ksd" (heads first)."""
    b, _, h, d = q.shape
    qg = q.reshape(b, KV, G, d)
    s = jnp.einsum(f'bkgd,b{key_axes}->bkgs', qg, k) * d ** -0.5
    s = jnp.where(mask[:, 0, 0][:, None, None, :], s, -1e30)
    p = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum(f'bkgs,b{key_axes}->bkgd', p, v)
    return o.reshape(b, 1, h, d)
def median_ms(f, k, v):
    g = jax.jit(lambda q, k, v: [f(q[i], k[i], v[i], mask) for i in range(L)])
    out = g(q, k, v); jax.block_until_ready(out); ts = []
    for _ in range(50):
        t = time.perf_counter(); jax.block_until_ready(g(q, k, v)); ts.append(time.perf_counter() - t)
    return np.median(ts) * 1e3, out
ref = lambda q, k, v, m: dot_product_attention(q, k, v, m, causal=True)
for name, f in [("current", ref), ("reduce", reduce_attn), ("einsum", grouped_einsum_attn)]:
    ms, out = median_ms(f, k, v)
    print(name, f"{ms:.2f} ms for {L} layers", float(jnp.abs(out[3] - ref(q[3], k[3], v[3], mask)).max()))
kh = jnp.swapaxes(k, 2, 3).copy()  # [L, B, KV, S, D]
vh = jnp.swapaxes(v, 2, 3).copy()
ms, out = median_ms(lambda q, k, v, m: grouped_einsum_attn(q, k, v, m, "ksd"), kh, vh)
print("heads_first", f"{ms:.2f} ms", float(jnp.abs(out[3] - ref(q[3], k[3], v[3], mask)).max()))
