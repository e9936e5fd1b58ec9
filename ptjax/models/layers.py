"""Building blocks shared by every backbone: dense layers and norms with logical axis names and
dropout (the layer stack lives in ptjax.models.layer_stacks, attention in ptjax.models.attention,
the products in the compute dtype in ptjax.models.products).

Logical axis names used on parameters (mapped to mesh axes by `ptjax.training.sharding`):
  vocab, embed, mlp, heads, kv_heads, kv (head dim), layers (the scanned stack), and None for
  small axes that are never sharded (positions, token types, relative-position buckets).
Activations use: batch, length, embed, heads, kv, mlp, vocab.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ptjax.models.products import einsum, weights_first_einsum

Array = jax.Array
Dtype = Any

default_kernel_init = nn.initializers.normal(stddev=0.02)


@jax.custom_jvp
def gelu_exact(x: Array) -> Array:
    """x * Phi(x) with erf, as torch's GELU computes it.

    jax.nn.gelu(approximate=False) goes through erfc, whose XLA:CPU expansion (two branches and
    an exp) made the activation and the intermediates autodiff kept for its derivative some 15%
    of a BERT layer's training step on CPU. The derivative Phi(x) + x phi(x) is written out, so the
    backward pass keeps one tensor. Agrees with jax.nn.gelu to 1e-6 in float32.
    """
    return x * _normal_cdf(x)


def _normal_cdf(x: Array) -> Array:
    return 0.5 * (1.0 + jax.lax.erf(x * np.asarray(0.5**0.5, x.dtype)))


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    cdf = _normal_cdf(x)
    density = jnp.exp(-0.5 * x * x) * np.asarray((2 * np.pi) ** -0.5, x.dtype)
    return x * cdf, dx * (cdf + x * density)


# transformers activation names (config.hidden_act and friends) -> functions. Models call them
# through `activate` and `gated_activate`; the dict itself is for checking a config's name.
ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}

# Both helpers compute in float32 and round once to x's dtype, as torch's bf16 kernels do. Traced
# in bf16, every intermediate of an erf or a sigmoid would be rounded to bf16 (its constants too:
# 1/sqrt(2) becomes 0.70703125), and XLA:CPU spends a convert pair on each rounding: the GELU and
# its derivative were ~11% of MiniLM's bf16 training step. The derivatives follow in float32.


def activate(name: str, x: Array) -> Array:
    """ACTIVATIONS[name](x) in float32, returned in x's dtype. x: any shape."""
    return ACTIVATIONS[name](x.astype(jnp.float32)).astype(x.dtype)


def gated_activate(name: str, gate: Array, up: Array) -> Array:
    """ACTIVATIONS[name](gate) * up (a gated feed-forward's inner layer), rounded once.

    Rounding the activation before the product, as a bf16 `activate(gate) * up` would, put
    SmolLM2's bf16 prompt gradient at cosine 0.90-0.95 to float32's on two of six random batches,
    against 0.98-0.99 with one rounding (BENCHMARKS.md, "bf16 compute"). gate, up: the same shape.
    """
    return (ACTIVATIONS[name](gate.astype(jnp.float32)) * up.astype(jnp.float32)).astype(gate.dtype)


# --------------------------------------------------------------------------------------------
# Prompt hooks and outputs: the only prompt-related types the model files know.


@struct.dataclass
class PrefixKV:
    """Deep-prompt keys and values prepended to every attention of a layer stack.

    keys, values: [layers, batch or 1, prefix_len, kv_heads, head_dim], already in the form
      attention consumes (after any positional rotation a model applies to its own keys; prefix
      keys get none). Real tokens keep their own position ids.
    mask: [batch or 1, prefix_len] bool, True where a prefix slot is real. None: all real.
    layer_mask: [layers] bool, True for layers that carry the prefix (the rest ignore it).
      None: every layer.
    """

    keys: Array
    values: Array
    mask: Array | None = None
    layer_mask: Array | None = None

    @property
    def length(self) -> int:
        return self.keys.shape[2]

    def for_layers(self) -> tuple[Array, Array, Array]:
        """(keys, values, mask) with a leading layer axis, mask [layers, batch or 1, prefix_len]."""
        num_layers, batch, length = self.keys.shape[:3]
        mask = jnp.ones((batch, length), bool) if self.mask is None else self.mask.astype(bool)
        layer_mask = (
            jnp.ones((num_layers,), bool) if self.layer_mask is None else self.layer_mask.astype(bool)
        )
        return self.keys, self.values, layer_mask[:, None, None] & mask[None]


@struct.dataclass
class BackboneOutput:
    """What every backbone returns. Fields a model does not produce stay None.

    last_hidden_state: [batch, length, embed], after the final norm.
    hidden_states: [layers + 1, batch, length, embed] when requested: the embedding output and
      each layer's output (the last one after the final norm, as transformers reports it).
    logits: [batch, length, vocab] float32 when requested.
    pooled: [batch, embed] (BERT-style pooler), when the model has one.
    encoder_last_hidden_state: [batch, source_length, embed] for encoder-decoders.
    encoder_hidden_states: [encoder layers + 1, batch, source_length, embed] for encoder-decoders,
      when hidden states are requested (hidden_states then holds the decoder's).
    cache: the KVCache with this call's keys/values written, when the call was given one.
    positions: int32 [batch, n] when the backbone was asked for these positions only
      (query_positions: its last layer computed those rows, and last_hidden_state is
      [batch, n, embed], row i at positions[:, i]); None when it holds every position.
      ptjax.heads.base.hidden_at reads either form.
    """

    last_hidden_state: Array
    hidden_states: Array | None = None
    logits: Array | None = None
    pooled: Array | None = None
    encoder_last_hidden_state: Array | None = None
    encoder_hidden_states: Array | None = None
    cache: Any = None  # ptjax.models.kv_cache.KVCache after a cached call (decoding)
    positions: Array | None = None


# The residual stream of the pre-norm stacks (Llama, GPT-2, T5: the hidden state every layer adds
# its outputs to) stays float32 whatever the compute dtype, as under torch.autocast (a bf16 layer
# output added to a float32 stream gives float32). With it, float32 rotary tables and attention
# probabilities, SmolLM2's bf16 prompt gradient has cosine 0.9966 with the float32 one (norm
# 1.12x) on an 8 x 128 batch, against 0.9824 (norm 0.80x) with a bf16 stream
# (benchmarks/scripts/smollm2_bf16_gradient.py; BENCHMARKS.md "bf16 compute"). The post-norm
# encoders (BERT, ALBERT, DeBERTa) carry their LayerNorm outputs in the compute dtype: MiniLM's
# bf16 gradient has cosine 0.99997.
RESIDUAL_DTYPE = jnp.float32


# A Dense layer whose parameters hold this instead of "kernel" ([*features, *in], the transposed
# kernel; ptjax.generation.backbones.decoding_params makes it) multiplies weights-first.
WEIGHTS_FIRST_KERNEL = "kernel_out_in"


# --------------------------------------------------------------------------------------------
# Parameterized layers.


class Dense(nn.Module):
    """y = x . kernel (+ bias), contracting the trailing `len(in_axes)` axes of x.

    kernel: [*x.shape[-len(in_axes):], *features] with logical names in_axes + out_axes.
    bias: [*features] with logical names out_axes.
    dtype: the compute dtype of the product (float32 accumulation, `einsum`) and of the result;
    out_dtype: the result's dtype when it differs (float32 logits).
    """

    features: int | Sequence[int]
    in_axes: Sequence[str | None]
    out_axes: Sequence[str | None]
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = default_kernel_init
    out_dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        n_in = len(self.in_axes)
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        batch = "".join(next(letters) for _ in range(x.ndim - n_in))
        contracted = "".join(next(letters) for _ in range(n_in))
        out = "".join(next(letters) for _ in features)
        if self.has_variable("params", WEIGHTS_FIRST_KERNEL):  # decoding copy: [*features, *in]
            kernel = self.param(
                WEIGHTS_FIRST_KERNEL,
                nn.with_logical_partitioning(self.kernel_init, tuple(self.out_axes) + tuple(self.in_axes)),
                features + tuple(x.shape[-n_in:]), self.param_dtype,
            )
            y = weights_first_einsum(f"{out}{contracted},{batch}{contracted}->{batch}{out}", kernel, x, self.dtype)
        else:
            kernel = self.param(
                "kernel",
                nn.with_logical_partitioning(self.kernel_init, tuple(self.in_axes) + tuple(self.out_axes)),
                tuple(x.shape[-n_in:]) + features,
                self.param_dtype,
            )
            y = einsum(f"{batch}{contracted},{contracted}{out}->{batch}{out}", x, kernel, self.dtype)
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, tuple(self.out_axes)),
                features, self.param_dtype,
            )
            y = y + bias.astype(jnp.float32)
        return y.astype(self.out_dtype or self.dtype)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, statistics in float32. scale/bias: [embed]."""

    epsilon: float = 1e-12
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (dim,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                              (dim,), self.param_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * scale (Llama, T5), the mean square taken in float32. scale: [embed].

    The normalized activations are cast back to the compute dtype before the scale multiplies
    them, as the reference implementations do.
    """

    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.epsilon)
        return (normed * scale.astype(jnp.float32)).astype(self.dtype)


class Embed(nn.Module):
    """Token embedding table [num_embeddings, embed] with a lookup and a tied output projection."""

    num_embeddings: int
    features: int
    axes: tuple[str | None, str | None] = ("vocab", "embed")
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    embedding_init: Callable = default_kernel_init

    def setup(self):
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(self.embedding_init, self.axes),
            (self.num_embeddings, self.features), self.param_dtype,
        )

    def __call__(self, ids: Array) -> Array:
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: Array, weights_first: bool = False) -> Array:
        """x: [..., embed] -> [..., num_embeddings] float32 (operands in the compute dtype).
        weights_first: the table goes first (weights_first_einsum; decoding, few rows of x)."""
        if weights_first:
            rows = x.reshape(-1, x.shape[-1])
            logits = weights_first_einsum("vd,bd->bv", self.embedding, rows, self.dtype)
            return logits.reshape(x.shape[:-1] + (self.num_embeddings,))
        return einsum("...d,vd->...v", x, self.embedding, self.dtype)


def computed_once(fn: Callable[[Array], Any], operand: Array) -> Any:
    """fn(operand), computed once into buffers of its own, for a value that many fusions read.

    XLA:CPU fuses an elementwise producer into each of its consumers and evaluates it again for
    every element a consumer writes: a rotary table's cos and sin once per batch row and head, in
    every layer's query and key and again in the backward pass (143 thunk-ms of SmolLM2's 1.2 s
    bf16 train step), a dropout mask's hash once per backward fusion that reads it.
    jax.lax.optimization_barrier does not prevent that (XLA:CPU removes barriers before fusion);
    the result of a conditional is a buffer on every backend. Both branches are fn, so whichever
    the predicate (read from `operand`, so that XLA cannot fold the conditional away) picks, the
    value is the same. BENCHMARKS.md, "bf16 compute".
    """
    pick = jnp.ravel(operand)[0] != 0
    return jax.lax.cond(pick, fn, fn, operand)


# --------------------------------------------------------------------------------------------
# Dropout.


def _mix32(x: Array) -> Array:
    """murmur3's 32-bit finalizer: every input bit flips each output bit with probability ~1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def dropout_mask(rng: Array, shape: tuple[int, ...], keep_prob: float) -> Array:
    """bool `shape`, True with probability keep_prob (to 2^-32), independently per element.

    64 bits drawn from `rng` seed a counter-based hash of each element's index (two murmur3
    finalizer rounds). Threefry bits for every element (jax.random.bernoulli) cost about ten
    times more on CPU, where attention and hidden dropout were a fifth of a BERT prompt-tuning
    step; dropout needs independent-looking masks, not a cryptographic generator. The index is
    global, so a sharded mask equals the unsharded one.
    """
    seeds = jax.random.bits(rng, (3,), jnp.uint32)
    return computed_once(functools.partial(_hashed_mask, shape=tuple(shape), keep_prob=keep_prob), seeds)


def _hashed_mask(seeds: Array, shape: tuple[int, ...], keep_prob: float) -> Array:
    inner = 1
    split = len(shape)
    while split > 0 and inner * shape[split - 1] < 2**32:  # trailing axes whose flat index fits 32 bits
        split -= 1
        inner *= shape[split]
    outer_shape = shape[:split]
    index = jax.lax.iota(jnp.uint32, inner).reshape((1,) * split + shape[split:]) if inner > 1 else \
        jnp.zeros((1,) * len(shape), jnp.uint32)
    bits = _mix32(_mix32(index ^ seeds[0]) ^ seeds[1])
    if outer_shape:  # more than 2^32 elements: mix in the leading axes' flat index too
        outer = jax.lax.iota(jnp.uint32, int(np.prod(outer_shape))).reshape(outer_shape + (1,) * (len(shape) - split))
        bits = _mix32(bits ^ _mix32(outer ^ seeds[2]))
    threshold = min(int(keep_prob * 2.0**32), 2**32 - 1)
    return jnp.broadcast_to(bits < jnp.uint32(threshold), shape)


class Dropout(nn.Module):
    """Inverted dropout with `dropout_mask` (flax.linen.Dropout's interface, rng "dropout")."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        mask = dropout_mask(self.make_rng("dropout"), x.shape, keep)
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


def constrain(x: Array, axes: tuple[str | None, ...]) -> Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh context)."""
    return nn.with_logical_constraint(x, axes)
