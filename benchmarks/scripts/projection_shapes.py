"""Dense products at MiniLM's projection shapes, bf16 (float32 accumulation) and float32, with the
right operand used as stored or transposed: three [384, 384] projections against one [384, 1152]
(BENCHMARKS.md "bf16 compute").

    python benchmarks/scripts/projection_shapes.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

ROWS = 4736  # 32 x 148 tokens: the MiniLM Lester case


def product(a, b, rhs_contracting):
    return jax.lax.dot_general(a, b, (((1,), (rhs_contracting,)), ((), ())), preferred_element_type=jnp.float32)


def median_ms(fn, *args, repeats=30):
    fn = jax.jit(fn)
    fn(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return np.median(times) * 1e3


key = jax.random.PRNGKey(0)
for inner, outer in [(384, 384), (384, 1152), (1152, 384), (384, 1536), (1536, 384)]:
    for dtype in (jnp.bfloat16, jnp.float32):
        a = jax.random.normal(key, (ROWS, inner)).astype(dtype)
        for rhs_contracting in (0, 1):
            b = jax.random.normal(key, (inner, outer) if rhs_contracting == 0 else (outer, inner)).astype(dtype)
            ms = median_ms(lambda a, b, rhs=rhs_contracting: product(a, b, rhs), a, b)
            print(f"{ROWS}x{inner}x{outer} {jnp.dtype(dtype).name:8s} rhs contracting {rhs_contracting}: "
                  f"{ms:6.2f} ms {2 * ROWS * inner * outer / ms / 1e6:5.0f} GFLOP/s", flush=True)
