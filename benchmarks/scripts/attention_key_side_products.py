"""Milliseconds of the attention backward's key-side products at MiniLM's shapes (32 x 12 heads,
148 x 148 x 32), the forms ptjax.models.attention used before and uses now, beside torch's bmm at
the same shapes (BENCHMARKS.md, "dK and dV as bf16 products").

    python benchmarks/scripts/attention_key_side_products.py
    KEEP=0 python benchmarks/scripts/attention_key_side_products.py  # without keep_freed_memory

Without ptjax.hostmem.keep_freed_memory a product writing a fresh [384, 148, 148] float32 output
(34 MB) page-faults it in on every call, which then dominates its time.
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import os, statistics, timeit

from ptjax.hostmem import keep_freed_memory

if os.environ.get("KEEP", "1") == "1":
    keep_freed_memory()
import jax, jax.numpy as jnp, torch

n, q, d = 32 * 12, 148, 32
f32, bf16 = jnp.float32, jnp.bfloat16
key = jax.random.PRNGKey(0)
p = jax.random.uniform(key, (n, q, q), f32)
x = jax.random.normal(key, (n, q, d), f32)


def median_ms(f, *args):
    g = jax.jit(f)
    jax.block_until_ready(g(*args))
    return statistics.median(timeit.timeit(lambda: jax.block_until_ready(g(*args)), number=5) / 5
                             for _ in range(7)) * 1000


def product(spec):
    return lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=f32)


pb, xb = p.astype(bf16), x.astype(bf16)  # operands as the kernel gets them
rows = {
    "q k^T, bf16": median_ms(product("nqd,nkd->nqk"), xb, xb),
    "p v, float32": median_ms(product("nqk,nkd->nqd"), p, x),
    "dV = P^T dO, float32 (before)": median_ms(product("nqk,nqd->ndk"), p, x),
    "dV = P^T dO, bf16": median_ms(product("nqk,nqd->ndk"), pb, xb),
    # As the kernel has it: dO [batch, heads, q, d] transposed, then batch and heads merged (the
    # merge makes XLA write the transpose out; folded into the product it is the slow layout).
    "dV^T = dO^T P, bf16 (now, with dO's transpose)":
        median_ms(lambda a, b: product("ndq,nqk->ndk")(jnp.swapaxes(a, 2, 3).reshape(n, d, q), b),
                  xb.reshape(32, 12, q, d), pb),
    "the same, dO^T given": median_ms(product("ndq,nqk->ndk"), jnp.swapaxes(xb, 1, 2), pb),
}
for name, ms in rows.items():
    print(f"{name:50s} {ms:6.2f} ms")
tp, tx = torch.rand(n, q, q).bfloat16(), torch.randn(n, q, d).bfloat16()
for name, call in (("torch bf16 bmm q k^T", lambda: torch.bmm(tx, tx.transpose(1, 2))),
                   ("torch bf16 bmm p v", lambda: torch.bmm(tp, tx)),
                   ("torch bf16 bmm P^T dO", lambda: torch.bmm(tp.transpose(1, 2), tx))):
    call()
    print(f"{name:50s} {statistics.median(timeit.timeit(call, number=5) / 5 for _ in range(7)) * 1000:6.2f} ms")
