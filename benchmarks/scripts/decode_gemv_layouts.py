"""GB/s of the weights through an 8-row product at SmolLM2's shapes (30 layers of weights per
shape, so that no cache holds them): x . W -> [8, N] against W^T . x^T -> [N, 8], with and without
the transpose back behind an optimization barrier; float32 and bf16 (BENCHMARKS.md "Generation").

    python benchmarks/scripts/decode_gemv_layouts.py
"""

import os, time, numpy as np, jax, jax.numpy as jnp
rows = 8
def bench(f, *a, n=30):
    jax.block_until_ready(f(*a)); ts = []
    for _ in range(n):
        t = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t)
    return np.median(ts)
key = jax.random.PRNGKey(0)
dn = lambda a, b, ca, cb: jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), preferred_element_type=jnp.float32)
ob = jax.lax.optimization_barrier
for dt in ["float32", "bfloat16"]:
  for K, N in [(576, 576), (576, 1536), (1536, 576), (576, 49152)]:
    L = 30 if N != 49152 else 1
    Ws = [jax.random.normal(jax.random.fold_in(key, i), (K, N), jnp.float32).astype(dt) for i in range(L)]
    WTs = [w.T.copy() for w in Ws]
    x = jax.random.normal(key, (rows, K), jnp.float32)
    variants = {
        "x@W": (lambda x, w: dn(x.astype(w.dtype), w, 1, 0), Ws),
        "barrier(WT.x).T": (lambda x, w: ob(dn(w, x.astype(w.dtype), 1, 1)).T, WTs),
        "WT.x no T": (lambda x, w: dn(w, x.astype(w.dtype), 1, 1), WTs),
    }
    byts = sum(w.size * w.dtype.itemsize for w in Ws)
    res = []
    for name, (op, ws) in variants.items():
        f = jax.jit(lambda x, ws, op=op: [op(x, w) for w in ws])
        t = bench(f, x, ws)
        res.append(f"{name} {byts/t/1e9:5.1f}")
    print(dt, K, N, " | ".join(res), flush=True)
