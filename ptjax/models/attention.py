"""Attention shared by every backbone: masks, deep-prompt prefixes, and the attention itself.

`dot_product_attention` is the one entry point. Its default kernel is written here with a
hand-derived backward pass rather than left to autodiff, because on CPU attention was the
slowest part of a small encoder's training step (a third of a MiniLM layer's time for a tenth
of its FLOPs). It differs from jax.nn.dot_product_attention in three ways (together they make
the forward and backward pass of MiniLM's attention with dropout faster than jax.nn's without
dropout: `python -m ptjax.benchmarks.attention`, figures in BENCHMARKS.md):
  - heads are moved next to the batch before the products ([batch, heads, length, head_dim]),
    the operand layout XLA:CPU's small batched matmuls run fastest in (the MiniLM score matmuls
    at 1.6x the speed they reach from [batch, length, heads, head_dim]), and grouped-query heads
    share their key/value head by stacking the group's queries along the length axis (no
    repeated keys);
  - the backward pass keeps only the probabilities and the output: the softmax gradient uses
    rowsum(dO * O) (FlashAttention's identity, valid with dropout too) instead of a reduction
    over the [length, length] gradient;
  - the attention-dropout mask is drawn once and kept (one byte per score) for the backward
    pass, instead of being re-derived inside each fusion that needs it;
  - a deep prompt's prefix keys and values enter the kernel apart from the others, and the
    backward pass computes gradients only for the inputs that carry one (JAX's symbolic zeros):
    where only the prefix does (P-tuning v2's first layer), it works on the prefix's score
    columns alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ptjax.models.layers import dropout_mask
from ptjax.models.products import einsum

Array = jax.Array
_F32 = jnp.float32


def make_attention_mask(
    key_mask: Array | None,
    *,
    query_length: int,
    key_length: int,
    causal: bool,
) -> Array:
    """Boolean mask [batch or 1, 1, query_length, key_length], True = may attend.

    key_mask: [batch, key_length] padding mask of the real keys (None: all real).
    causal: query i sees keys j <= i (queries and keys aligned at the end, as with a cache).
    """
    if key_mask is None:
        mask = jnp.ones((1, 1, query_length, key_length), bool)
    else:
        mask = key_mask.astype(bool)[:, None, None, :]
        mask = jnp.broadcast_to(mask, (key_mask.shape[0], 1, query_length, key_length))
    if causal:
        q_pos = jnp.arange(query_length)[:, None] + (key_length - query_length)
        mask = mask & (jnp.arange(key_length)[None, :] <= q_pos)[None, None]
    return mask


def prepend_prefix_mask(mask: Array, prefix_mask: Array | None) -> Array:
    """mask [b, 1, q, k] and prefix_mask [b' or 1, prefix_len] -> [max(b, b'), 1, q, prefix_len + k].

    Prefix slots are seen by every query (deep prompts sit before the sequence).
    """
    if prefix_mask is None:
        return mask
    batch = max(mask.shape[0], prefix_mask.shape[0])
    query_length = mask.shape[2]
    mask = jnp.broadcast_to(mask, (batch,) + mask.shape[1:])
    prefix = jnp.broadcast_to(prefix_mask.astype(bool)[:, None, None, :],
                              (batch, 1, query_length, prefix_mask.shape[-1]))
    return jnp.concatenate([prefix, mask], axis=-1)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array,
    *,
    prefix_key: Array | None = None,
    prefix_value: Array | None = None,
    bias: Array | None = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    implementation: str | None = None,
    causal: bool = False,
    kv_heads_first: bool = False,
) -> Array:
    """Multi-head attention over [prefix; keys], grouped-query aware.

    query: [batch, q_len, heads, head_dim]; key, value: [batch, k_len, kv_heads, head_dim].
    prefix_key, prefix_value: [batch or 1, prefix_len, kv_heads, head_dim], put before the keys.
    mask: bool, broadcastable to [batch, heads, q_len, prefix_len + k_len] (make_attention_mask and
      prepend_prefix_mask build it).
    bias: additive, broadcastable like mask (T5 relative positions). scale: default head_dim**-0.5.
    dropout_rate, dropout_rng: dropout on the probabilities (no dropout without a key).
    implementation: None or "" for this module's kernel; "xla" or "cudnn" for
      jax.nn.dot_product_attention's (those have no attention dropout: with dropout, this
      module's kernel runs whatever the choice); "auto" for `resolve_implementation`'s choice.
    causal: the mask was built causal (make_attention_mask(causal=True)); lets cuDNN use its causal
      flash kernel where the mask allows (_jax_nn_attention). The mask stays what is applied.
    kv_heads_first: key and value are [batch, kv_heads, k_len, head_dim], the kernel's own layout
      (a per-layer KV cache, ptjax.models.kv_cache), and are read as they lie.
    Returns [batch, q_len, heads, head_dim]. Scores and softmax run in float32.
    """
    if implementation == "auto":
        prefix = 0 if prefix_key is None else prefix_key.shape[1]
        implementation = resolve_implementation(query.dtype, query.shape[-1], (query.shape[1], prefix + key.shape[1]),
                                                special=bias is not None or kv_heads_first)
    if kv_heads_first and (prefix_key is not None or implementation):
        key, value, kv_heads_first = jnp.swapaxes(key, 1, 2), jnp.swapaxes(value, 1, 2), False
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    dropout = dropout_rate > 0.0 and dropout_rng is not None
    if prefix_key is not None:
        batch = key.shape[0]
        prefix_key = jnp.broadcast_to(prefix_key, (batch,) + prefix_key.shape[1:]).astype(key.dtype)
        prefix_value = jnp.broadcast_to(prefix_value, (batch,) + prefix_value.shape[1:]).astype(value.dtype)
        if implementation and not dropout:
            key = jnp.concatenate([prefix_key, key], axis=1)
            value = jnp.concatenate([prefix_value, value], axis=1)
            prefix_key = prefix_value = None
    if implementation and not dropout:
        return _jax_nn_attention(query, key, value, mask, None if bias is None else bias.astype(_F32),
                                 scale, implementation=implementation, causal=causal)
    k, v = (key, value) if kv_heads_first else (key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3))
    prefix_kv = None if prefix_key is None else (prefix_key.transpose(0, 2, 1, 3), prefix_value.transpose(0, 2, 1, 3))
    batch, q_len, heads, head_dim = query.shape
    kv_heads = k.shape[1]
    k_len = k.shape[2] + (0 if prefix_kv is None else prefix_kv[0].shape[2])
    group = heads // kv_heads

    def grouped(x: Array) -> Array:
        """[b or 1, heads or 1, q_len or 1, k_len] -> [b or 1, kv_heads or 1, group * q_len, k_len]."""
        x = jnp.broadcast_to(x, x.shape[:2] + (q_len, k_len))
        if x.shape[1] == 1:
            x = jnp.broadcast_to(x[:, :, None], (x.shape[0], 1, group, q_len, k_len))
            return x.reshape(x.shape[0], 1, group * q_len, k_len)
        return x.reshape(x.shape[0], kv_heads, group * q_len, k_len)

    # Query heads h = kv * group + g (the order of jnp.repeat over kv heads) -> rows g * q_len + i.
    q = query.reshape(batch, q_len, kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4)
    q = q.reshape(batch, kv_heads, group * q_len, head_dim)
    keep = dropout_mask(dropout_rng, (batch, kv_heads, group * q_len, k_len), 1.0 - dropout_rate) if dropout else None
    bias = None if bias is None else grouped(bias.astype(_F32))
    keep_scale = 1.0 / (1.0 - dropout_rate) if dropout_rate < 1.0 else 0.0  # rate 1: nothing is kept
    out = _attention(q, prefix_kv, k, v, grouped(mask.astype(bool)), bias, keep, float(scale), keep_scale)
    out = out.reshape(batch, kv_heads, group, q_len, head_dim).transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, q_len, heads, head_dim)


def resolve_implementation(dtype, head_dim: int, lengths: tuple[int, int], *, special: bool = False,
                           backend: str | None = None) -> str:
    """What implementation="auto" runs: cuDNN's flash kernel on a GPU, this module's kernel elsewhere.

    On an H200 the 1B Llama's bf16 train step took 0.176 s with cuDNN against 0.319 s with this
    module's kernel, which keeps the [q, k] probabilities for its backward pass (BENCHMARKS.md,
    "GPU"). cuDNN is chosen only where it is known to take the call: 16-bit operands, a head width
    that is a multiple of 8 up to 128, even query and key lengths (`lengths`, prefix included: with
    a dense mask, which the run-time fallback passes, cuDNN's training kernels refuse odd ones), and
    no `special` case (an additive bias such as T5's relative positions, or a KV cache read in this
    kernel's layout). On CPU this module's kernel is the faster one (BENCHMARKS.md, attention).
    Returns "cudnn" or "" (this module's kernel).
    """
    backend = backend or jax.default_backend()
    sixteen_bit = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    even = all(length % 2 == 0 for length in lengths)
    if backend == "gpu" and sixteen_bit and head_dim % 8 == 0 and head_dim <= 128 and even and not special:
        return "cudnn"
    return ""


def _jax_nn_attention(query, key, value, mask, bias, scale, *, implementation: str, causal: bool) -> Array:
    """jax.nn.dot_product_attention; for cuDNN, with the mask given as structure where it has one.

    A dense mask reaches cuDNN as an additive [batch, 1, q, k] bias that its kernel reads for every
    tile. Where the mask is exactly "the first n keys of each row" (right padding, deep prompts
    real in this layer), causal or not, the same attention is key_value_seq_lengths and is_causal,
    which cuDNN applies by skipping tiles and reading no bias. Whether a mask has that form is
    known only at run time (a deep prompt switched off in some layers, an all-padding example), so
    a cond picks the structured or the dense call. Both are flash kernels that save the output
    and the log-sum-exp (the dense one its bias too) for the backward pass, not the [q, k]
    probabilities, so what the cond saves stays small.
    """
    call = functools.partial(jax.nn.dot_product_attention, scale=scale, implementation=implementation)
    batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
    # jax.nn's causal mask aligns queries with the first keys; ours aligns them with the last.
    structurable = implementation == "cudnn" and mask.shape[1] == 1 and (q_len == k_len or not causal)
    if not structurable:
        return call(query, key, value, bias=bias, mask=mask)
    dense = jnp.broadcast_to(mask.astype(bool), (batch, 1, q_len, k_len))
    lengths = jnp.sum(dense[:, 0, -1, :], axis=-1, dtype=jnp.int32)  # the last query sees every real key
    structured = jnp.arange(k_len)[None, None, None, :] < lengths[:, None, None, None]
    if causal:
        structured = structured & jnp.tril(jnp.ones((q_len, k_len), bool))[None, None]
    expressible = jnp.all(dense == structured) & jnp.all(lengths > 0)
    return jax.lax.cond(
        expressible,
        lambda q, k, v, b: call(q, k, v, bias=b, is_causal=causal, key_value_seq_lengths=lengths),
        lambda q, k, v, b: call(q, k, v, bias=b, mask=dense),
        query, key, value, bias,
    )


# --------------------------------------------------------------------------------------------
# The kernel: q [b, kv, rows, d], k and v [b, kv, keys, d]; mask (bool), bias (float32) and keep
# (bool dropout mask or None) broadcast to [b, kv, rows, keys]; kept probabilities are scaled by
# keep_scale = 1 / keep probability.
#
# Products take q, k, v (and the cotangent dO) in their dtype, the compute dtype, and accumulate
# in float32 (ptjax.models.products.einsum); scores, probabilities and their gradients stay float32
# and are rounded to the compute dtype only as a product's operand. dV and dK contract the query
# axis: written as P^T dO or dS^T q, XLA:CPU has no bf16 kernel for that layout (its generic dot,
# 3-4x slower than float32), so they are dO^T P and q^T dS (_key_side_product): the small
# operand transposed, both row-major, bf16 (BENCHMARKS.md, "bf16 compute": SmolLM2's bf16 step
# 8.5% faster than with float32 dK/dV, prompt-gradient cosine with float32 0.9959-0.9952 against
# 0.9966-0.9941). The probabilities multiply the values in float32 (v widened), part of the change
# that keeps SmolLM2's bf16 prompt gradient near the float32 one (ptjax.models.layers.
# RESIDUAL_DTYPE): with that product in bf16 the 8 x 128 cosine fell to 0.9897 and the gradient's
# norm rose to 1.39x float32's (benchmarks/scripts/smollm2_bf16_gradient.py; BENCHMARKS.md).


def _product(spec: str, x: Array, y: Array, dtype) -> Array:
    """einsum(spec) over operands [b, h, ...] whose products take `dtype` and accumulate in float32.
    With bf16 operands, the two batch axes are first merged into one: a batched product whose
    operand XLA sees as a transpose (the heads-first view of [batch, length, heads, head_dim]
    arrays) gets no bf16 kernel on XLA:CPU (its layout is not row-major) and runs in float32, while
    the merge makes XLA write the operands out row-major (BENCHMARKS.md, "bf16 compute")."""
    if jnp.dtype(dtype) == _F32:
        return einsum(spec, x, y, dtype)
    merged = spec.replace("bh", "n")
    out = einsum(merged, x.reshape((-1,) + x.shape[2:]), y.reshape((-1,) + y.shape[2:]), dtype)
    return out.reshape(x.shape[:2] + out.shape[1:])


def _key_side_product(weights: Array, x: Array) -> Array:
    """sum over queries of weights[q, k] x[q, d] -> [b, h, d, k] (dV from the dropped
    probabilities and dO, dK from the score gradients and q), float32. With bf16 x the product
    is x^T [d, q] . weights [q, k] in bf16: both operands row-major, the small one transposed."""
    if jnp.dtype(x.dtype) == _F32:
        return einsum("bhqk,bhqd->bhdk", weights, x, _F32)
    return _product("bhdq,bhqk->bhdk", jnp.swapaxes(x, -1, -2), weights, x.dtype)


def _probabilities(q, k, mask, bias, scale):
    scores = _product("bhqd,bhkd->bhqk", q, k, q.dtype) * scale
    if bias is not None:
        scores = scores + bias
    scores = jnp.where(mask, scores, jnp.finfo(_F32).min)
    return jax.nn.softmax(scores, axis=-1)


def _dropped(x, keep, keep_scale):
    return x if keep is None else jnp.where(keep, x * keep_scale, 0.0)


def _weigh_values(probs, keep, keep_scale, v):
    return _product("bhqk,bhkd->bhqd", _dropped(probs, keep, keep_scale), v, _F32).astype(v.dtype)


def _with_prefix(prefix_kv: tuple[Array, Array] | None, k: Array, v: Array) -> tuple[Array, Array]:
    """(k, v) with the prefix's keys and values first (on the key axis), if there is one."""
    if prefix_kv is None:
        return k, v
    return jnp.concatenate([prefix_kv[0], k], axis=2), jnp.concatenate([prefix_kv[1], v], axis=2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _attention(q, prefix_kv, k, v, mask, bias, keep, scale, keep_scale):
    """prefix_kv: None or (prefix k, prefix v) [b, kv, prefix, d], the first keys; kept apart so
    the backward pass sees which inputs carry a gradient (below)."""
    k, v = _with_prefix(prefix_kv, k, v)
    return _weigh_values(_probabilities(q, k, mask, bias, scale), keep, keep_scale, v)


def _attention_forward(q, prefix_kv, k, v, mask, bias, keep, scale, keep_scale):
    """With symbolic zeros: each input arrives as (value, perturbed). An input that does not
    depend on what is differentiated gets no gradient computed: P-tuning v2's first layer, whose
    queries, keys and values come from the frozen embeddings, needs the key-side gradients of its
    prefix only, so its backward pass works on the prefix's score columns alone."""
    perturbed = {"q": q.perturbed, "k": k.perturbed or v.perturbed, "bias": bias is not None and bias.perturbed,
                 "prefix": prefix_kv is not None and (prefix_kv[0].perturbed or prefix_kv[1].perturbed)}
    q, k, v, mask, keep = q.value, k.value, v.value, mask.value, None if keep is None else keep.value
    bias = None if bias is None else bias.value
    prefix = None if prefix_kv is None else (prefix_kv[0].value, prefix_kv[1].value)
    prefix_len = 0 if prefix is None else prefix[0].shape[2]
    k, v = _with_prefix(prefix, k, v)
    probs = _probabilities(q, k, mask, bias, scale)
    out = _weigh_values(probs, keep, keep_scale, v)
    # The prefix length and which gradients to compute travel as the shape of an empty residual:
    # static, and part of what JAX caches the traced backward pass under (a structure-only flag
    # is not: two layers that differ only in it would share one backward pass).
    wanted = [int(perturbed[name]) for name in ("q", "k", "bias", "prefix")]
    return out, (q, k, v, bias, keep, probs, out, jnp.zeros((0, prefix_len, *wanted), _F32))


def _attention_backward(scale, keep_scale, residuals, d_out):
    q, k, v, bias, keep, probs, out, flags = residuals
    prefix_len, want_q, want_k, want_bias, want_prefix = flags.shape[1], *(bool(n) for n in flags.shape[2:])
    if isinstance(d_out, jax.custom_derivatives.SymbolicZero):
        return None, None, None, None, None, None, None
    # Score columns whose gradient is needed: every key's, or only the prefix's when nothing
    # else (queries, the other keys, a bias) carries a gradient.
    columns = k.shape[2] if (want_q or want_k or want_bias) else prefix_len
    if columns < k.shape[2]:
        k, v, probs = k[:, :, :columns], v[:, :, :columns], probs[..., :columns]
        keep = None if keep is None else keep[..., :columns]
    dropped = _dropped(probs, keep, keep_scale)
    d_v = _key_side_product(dropped, d_out).astype(v.dtype)
    d_probs = _dropped(_product("bhqd,bhkd->bhqk", d_out, v, v.dtype), keep, keep_scale)
    # sum_k P'[q, k] dP'[q, k] = dO[q] . O[q]: the softmax Jacobian's row term without a
    # reduction over keys (P' = dropped probabilities).
    row = jnp.sum(d_out.astype(_F32) * out.astype(_F32), axis=-1, keepdims=True)
    d_scores = probs * (d_probs - row)
    d_q = _product("bhqk,bhkd->bhqd", d_scores * scale, k, q.dtype).astype(q.dtype) if want_q else None
    d_k = jnp.swapaxes(_key_side_product(d_scores * scale, q).astype(k.dtype), -1, -2)
    d_v = jnp.swapaxes(d_v, -1, -2)
    d_bias = None
    if want_bias:
        summed = tuple(i for i, (b, s) in enumerate(zip(bias.shape, d_scores.shape)) if b == 1 and s != 1)
        d_bias = jnp.sum(d_scores, axis=summed, keepdims=True)
    d_prefix = None
    if want_prefix:
        d_prefix = (d_k[:, :, :prefix_len], d_v[:, :, :prefix_len])
    d_k, d_v = (d_k[:, :, prefix_len:], d_v[:, :, prefix_len:]) if want_k else (None, None)
    return d_q, d_prefix, d_k, d_v, None, d_bias, None


_attention.defvjp(_attention_forward, _attention_backward, symbolic_zeros=True)
