"""30 layers' query projection and rotary embedding (SmolLM2's shapes, bf16 products), with the
rotary tables as ptjax computes them (ptjax.models.layers.computed_once), computed inline (cos and
sin then fuse into every layer's fusion), and inline behind jax.lax.optimization_barrier: the
trigonometric ops left in the compiled function and milliseconds per call (BENCHMARKS.md,
"Values computed once").

    python benchmarks/scripts/rotary_tables_once.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import re, statistics, timeit

from ptjax.hostmem import keep_freed_memory

keep_freed_memory()
import jax, jax.numpy as jnp, numpy as np

from ptjax.models.llama import apply_rotary, rotary_tables

inv_freq = 1.0 / (10000 ** (np.arange(0, 64, 2) / 64))
x = jax.random.normal(jax.random.PRNGKey(0), (30, 1184, 576), jnp.float32)
w = jax.random.normal(jax.random.PRNGKey(1), (576, 576), jnp.bfloat16)
positions = jnp.arange(148)[None]


def inline_tables(positions):
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def layers(tables):
    def run(x, positions):
        cos, sin = tables(positions)
        return [apply_rotary(jnp.dot(x[i].astype(jnp.bfloat16), w, preferred_element_type=jnp.float32)
                             .reshape(8, 148, 9, 64).astype(jnp.bfloat16), cos, sin) for i in range(30)]
    return jax.jit(run)


for name, tables in (("computed_once (ptjax)", lambda p: rotary_tables(p, inv_freq)), ("inline", inline_tables),
                     ("inline + optimization_barrier", lambda p: jax.lax.optimization_barrier(inline_tables(p)))):
    f = layers(tables)
    trig = len(re.findall(r" (?:cosine|sine)\(", f.lower(x, positions).compile().as_text()))
    jax.block_until_ready(f(x, positions))
    ms = statistics.median(timeit.timeit(lambda f=f: jax.block_until_ready(f(x, positions)), number=5) / 5
                           for _ in range(7)) * 1000
    print(f"{name:32s} trigonometric ops {trig:3d}   {ms:6.1f} ms")
