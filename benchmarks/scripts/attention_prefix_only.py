"""MiniLM P-tuning v2's first-layer attention (batch 32 x 128 tokens, 12 heads of 32, a 16-key
prefix, dropout 0.1), forward and backward to the prefix only, as the train step differentiates
it: milliseconds per call and the products' output shapes (BENCHMARKS.md, "bf16 compute").

    python benchmarks/scripts/attention_prefix_only.py [DTYPE]     # bfloat16 (default) or float32
    PYTHONPATH=/tmp/before python benchmarks/scripts/attention_prefix_only.py   # another checkout
"""

import sys as _sys, pathlib as _pathlib, os as _os
if not _os.environ.get("PYTHONPATH"):
    _sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import collections, re, sys, time

from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages

restart_with_huge_pages()
keep_freed_memory()
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.models.attention import dot_product_attention, make_attention_mask, prepend_prefix_mask

BATCH, LENGTH, HEADS, HEAD_DIM, PREFIX = 32, 128, 12, 32, 16
dtype = jnp.dtype(sys.argv[1] if len(sys.argv) > 1 else "bfloat16")
keys = jax.random.split(jax.random.PRNGKey(0), 6)
q, k, v = (jax.random.normal(keys[i], (BATCH, LENGTH, HEADS, HEAD_DIM)).astype(dtype) for i in range(3))
prefix_k, prefix_v = (jax.random.normal(keys[3 + i], (1, PREFIX, HEADS, HEAD_DIM)) for i in range(2))
mask = prepend_prefix_mask(make_attention_mask(None, query_length=LENGTH, key_length=LENGTH, causal=False),
                           jnp.ones((1, PREFIX), bool))


def loss(pk, pv):
    out = dot_product_attention(q, k, v, mask, prefix_key=pk, prefix_value=pv, dropout_rate=0.1,
                                dropout_rng=keys[5])
    return jnp.sum(out.astype(jnp.float32) ** 2)


step = jax.jit(jax.grad(loss, (0, 1)))
hlo = step.lower(prefix_k, prefix_v).compile().as_text()
shapes = collections.Counter(m.group(1) for m in re.finditer(r"= (\w+\[[\d,]*\])\S* dot\(", hlo))
print("products:", ", ".join(f"{n} x {s}" for s, n in sorted(shapes.items())))
jax.block_until_ready(step(prefix_k, prefix_v))
times = []
for _ in range(30):
    start = time.perf_counter()
    jax.block_until_ready(step(prefix_k, prefix_v))
    times.append(time.perf_counter() - start)
print(f"{dtype.name}: median {np.median(times) * 1e3:.1f} ms, fastest {min(times) * 1e3:.1f} ms")
