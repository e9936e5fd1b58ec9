"""30 SmolLM2-shaped layers of weights-first products: separate query/key/value and gate/up
matrices against one fused matrix each (milliseconds per pass; BENCHMARKS.md "Generation").

    python benchmarks/scripts/decode_fused_projections.py
"""

import time, numpy as np, jax, jax.numpy as jnp
ob = jax.lax.optimization_barrier
dn = lambda a, b: jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
wf = lambda w, x: ob(dn(w, x)).T
L = 30; key = jax.random.PRNGKey(0)
r = lambda i, *s: jax.random.normal(jax.random.fold_in(key, i), s) * 0.02
sep = [dict(q=r(7*i, 576, 576), k=r(7*i+1, 192, 576), v=r(7*i+2, 192, 576), g=r(7*i+3, 1536, 576), u=r(7*i+4, 1536, 576), d=r(7*i+5, 576, 1536)) for i in range(L)]
fused = [dict(qkv=jnp.concatenate([p['q'], p['k'], p['v']]), gu=jnp.concatenate([p['g'], p['u']]), d=p['d']) for p in sep]
x0 = r(999, 8, 576)
def layer_sep(x, p):
    q, k, v = wf(p['q'], x), wf(p['k'], x), wf(p['v'], x)
    x = x + q + jnp.tile(k, (1, 3)) + jnp.tile(v, (1, 3))
    h = jax.nn.silu(wf(p['g'], x)) * wf(p['u'], x)
    return x + wf(p['d'], h)
def layer_fused(x, p):
    qkv = wf(p['qkv'], x); q, k, v = qkv[:, :576], qkv[:, 576:768], qkv[:, 768:]
    x = x + q + jnp.tile(k, (1, 3)) + jnp.tile(v, (1, 3))
    gu = wf(p['gu'], x); h = jax.nn.silu(gu[:, :1536]) * gu[:, 1536:]
    return x + wf(p['d'], h)
def run(layer):
    @jax.jit
    def f(x, ps):
        for p in ps: x = layer(x, p)
        return x
    return f
for _ in range(2):
  for name, layer, ps in [("separate", layer_sep, sep), ("fused", layer_fused, fused)]:
    f = run(layer); out = f(x0, ps).block_until_ready(); ts = []
    for _ in range(40):
        t = time.perf_counter(); f(x0, ps).block_until_ready(); ts.append(time.perf_counter() - t)
    print(name, f"{np.median(ts)*1e3:.2f} ms", float(jnp.abs(out).mean()))
