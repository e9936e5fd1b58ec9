"""The products every backbone runs, in the compute dtype: both operands cast to it, float32
accumulation, forward and backward (`einsum`); the weights-first order for decoding's few rows
(`weights_first_einsum`); and whether the hardware multiplies bf16 natively
(`native_bf16_products`, for model.compute_dtype="auto"). BENCHMARKS.md, "bf16 compute"."""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any


def einsum(spec: str, a: Array, b: Array, dtype: Dtype) -> Array:
    """jnp.einsum(spec, a, b) with both operands cast to `dtype` and float32 accumulation.

    Returns float32; callers cast to their activation dtype where the next op wants it. With a
    bf16 `dtype`, the backward products also take bf16 operands (the float32 cotangent rounded to
    bf16, as torch.autocast does) and accumulate in float32. Left to autodiff, the transpose of a
    bf16 x bf16 -> float32 product multiplies the float32 cotangent by the bf16 operand, which
    XLA runs as a float32 product (the bf16 weight converted on every step): on CPUs with bf16
    dot instructions that is the slow path (XLA:CPU runs bf16 x bf16 -> float32 1.4-5x faster
    than float32, bf16 x bf16 -> bf16 no faster; BENCHMARKS.md, "bf16 compute"). spec: two
    operands, no index repeated within an operand, every input index in the output or the
    other operand (the products of a network: dense layers, attention, the LM head).
    """
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))
    return _einsum_f32_accumulate(spec, a.astype(dtype), b.astype(dtype))


def weights_first_einsum(spec: str, weights: Array, x: Array, dtype: Dtype) -> Array:
    """einsum(spec, weights, x, dtype) for products with few rows (decoding): weights [*out, *in]
    first, x [*batch, *in] second (spec in letters, no ellipsis), the result transposed to spec's
    output order.

    XLA:CPU streams a [N, K] weight matrix through a product with 8 rows of x faster as
    weights . x^T -> [N, 8] than as x . W -> [8, N] (19-27 against 16-17 GB/s at SmolLM2's shapes,
    float32, 2-core EPYC; BENCHMARKS.md "Generation"). The optimization barrier keeps XLA from
    folding the transpose back into the product, which would undo the order.
    """
    inputs, output = spec.split("->")
    weights_spec, x_spec = inputs.split(",")
    out_axes = "".join(c for c in weights_spec if c in output)
    batch_axes = "".join(c for c in x_spec if c in output)
    product = jax.lax.optimization_barrier(einsum(f"{inputs}->{out_axes}{batch_axes}", weights, x, dtype))
    order = [(out_axes + batch_axes).index(c) for c in output]
    return jnp.transpose(product, order)


def native_bf16_products() -> bool:
    """Whether the default backend multiplies bf16 natively: TPU; a GPU of compute capability 8.0
    or newer; a CPU with AVX512-BF16 or AMX-BF16 (the Linux /proc/cpuinfo flags). The one place
    ptjax looks at the hardware to pick a precision (model.compute_dtype="auto")."""
    backend = jax.default_backend()
    if backend == "tpu":
        return True
    if backend == "gpu":
        try:
            return float(jax.devices()[0].compute_capability) >= 8.0
        except (AttributeError, TypeError, ValueError):
            return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return backend == "cpu" and re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _einsum_f32_accumulate(spec: str, a: Array, b: Array) -> Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _einsum_forward(spec, a, b):
    return _einsum_f32_accumulate(spec, a, b), (a, b)


def _einsum_backward(spec, residuals, d_out):
    a, b = residuals
    (a_axes, b_axes), out_axes = spec.replace(" ", "").split("->")[0].split(","), spec.split("->")[1].strip()
    d_out = d_out.astype(a.dtype)
    d_a = jnp.einsum(f"{out_axes},{b_axes}->{a_axes}", d_out, b, preferred_element_type=jnp.float32)
    d_b = jnp.einsum(f"{out_axes},{a_axes}->{b_axes}", d_out, a, preferred_element_type=jnp.float32)
    return d_a.astype(a.dtype), d_b.astype(b.dtype)  # XLA drops d_b for frozen weights (unused)


_einsum_f32_accumulate.defvjp(_einsum_forward, _einsum_backward)
