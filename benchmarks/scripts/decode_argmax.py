"""Microseconds of jnp.argmax against ptjax.generation.search.first_argmax over [8, 49152]
float32 logits (BENCHMARKS.md "Generation").

    python benchmarks/scripts/decode_argmax.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import time, numpy as np, jax, jax.numpy as jnp
x = jax.random.normal(jax.random.PRNGKey(0), (8, 49152))
from ptjax.generation.search import first_argmax as fast
for name, f in [("argmax", jax.jit(lambda l: jnp.argmax(l, -1).astype(jnp.int32))), ("fast", jax.jit(fast))]:
    f(x).block_until_ready(); ts=[]
    for _ in range(200):
        t=time.perf_counter(); f(x).block_until_ready(); ts.append(time.perf_counter()-t)
    print(name, np.median(ts)*1e6, "us")
y = x.at[3, 100].set(jnp.nan).at[5, 7].set(x[5].max())
print(jnp.argmax(y, -1), jax.jit(fast)(y))
