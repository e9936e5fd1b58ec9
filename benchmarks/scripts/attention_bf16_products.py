"""Milliseconds of MiniLM's batched attention products (32 x 12 heads, 148 x 148 x 32) in float32
and in bf16 with float32 accumulation, and which operand types XLA:CPU compiles each form to
(BENCHMARKS.md "bf16 compute").

    python benchmarks/scripts/attention_bf16_products.py

QK = q k^T, PV = p v, dV = p^T dO; "transposed operands": q and k arrive as heads-first views of
[batch, length, heads, head_dim] arrays, as in a model; "merged": the same with the batch and
head axes merged first (what ptjax's attention kernel does with bf16 operands).
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import re, statistics, timeit
import jax, jax.numpy as jnp

b, h, q, d = 32, 12, 148, 32


def median_ms(f, *args):
    g = jax.jit(f)
    g(*args).block_until_ready()
    return round(statistics.median(timeit.timeit(lambda: g(*args).block_until_ready(), number=5) / 5
                                   for _ in range(7)) * 1000, 2)


def operand_types(f, *args):
    """The (lhs, rhs) element types of every product in the compiled function."""
    text = jax.jit(f).lower(*args).compile().as_text()
    found = []
    for computation in re.split(r"\n(?=\S)", text):
        types = dict(re.findall(r"([\w.\-]+): (\w+)\[", computation.split("\n")[0]))
        types.update(re.findall(r"%([\w.\-]+) = (\w+)\[", computation))
        found += [(types.get(x), types.get(y)) for x, y in re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", computation)]
    return found


f32 = jnp.float32
for dtype in (jnp.float32, jnp.bfloat16):
    x, p = jnp.ones((b, h, q, d), dtype), jnp.ones((b, h, q, q), dtype)
    print(jnp.dtype(dtype).name, "QK", median_ms(lambda a, c: jnp.einsum("bhqd,bhkd->bhqk", a, c, preferred_element_type=f32), x, x),
          "PV", median_ms(lambda a, c: jnp.einsum("bhqk,bhkd->bhqd", a, c, preferred_element_type=f32), p, x),
          "dV", median_ms(lambda a, c: jnp.einsum("bhqk,bhqd->bhkd", a, c, preferred_element_type=f32), p, x), "ms")

views = jnp.ones((b, q, h, d), jnp.bfloat16)
transposed = lambda a, c: jnp.einsum("bhqd,bhkd->bhqk", a.transpose(0, 2, 1, 3), c.transpose(0, 2, 1, 3),
                                     preferred_element_type=f32)


def merged(a, c):
    a, c = (x.transpose(0, 2, 1, 3).reshape(b * h, q, d) for x in (a, c))
    return jnp.einsum("nqd,nkd->nqk", a, c, preferred_element_type=f32).reshape(b, h, q, q)


for name, f in (("transposed operands", transposed), ("merged", merged)):
    print("bf16 QK,", name, ": operands", operand_types(f, views, views), median_ms(f, views, views), "ms")
