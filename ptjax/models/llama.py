"""Llama-family decoders: Llama, Mistral, Qwen2 and SmolLM2 (pre-RMSNorm, RoPE, GQA, SwiGLU).

Matches transformers' LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM. The members
differ only in options read from the config and checkpoint: q/k/v (and o) projection biases
(Qwen2), MLP biases, an explicit head_dim, RoPE base and scaling, and a tied or separate LM head
(SmolLM2 ties it). Sliding-window attention (Mistral, Qwen2) is not implemented; a sequence longer
than the window is refused.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.models.attention import dot_product_attention, make_attention_mask, prepend_prefix_mask
from ptjax.models.kv_cache import KVCache, extend_layer_cache
from ptjax.models.last_layer_rows import query_rows, rows_only, stack_computing_rows
from ptjax.models.layer_stacks import layer_stack
from ptjax.models.layers import (
    ACTIVATIONS,
    RESIDUAL_DTYPE,
    BackboneOutput,
    Dense,
    Embed,
    PrefixKV,
    RMSNorm,
    computed_once,
    constrain,
    gated_activate,
)
from ptjax.models.registry import Family, TensorRule


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding frequencies. kind: "default", "linear" (positions divided by factor) or
    "llama3" (long wavelengths divided by factor, a smooth blend between low and high)."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192

    def inverse_frequencies(self, head_dim: int) -> np.ndarray:
        """[head_dim // 2] float32 angular speeds, one per rotated pair."""
        exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
        inv_freq = (1.0 / np.power(np.float32(self.theta), exponents)).astype(np.float32)
        if self.kind == "linear":
            return (inv_freq / np.float32(self.factor)).astype(np.float32)
        if self.kind == "llama3":
            wavelength = 2 * math.pi / inv_freq
            long_limit = self.original_max_positions / self.low_freq_factor
            short_limit = self.original_max_positions / self.high_freq_factor
            scaled = np.where(wavelength > long_limit, inv_freq / self.factor, inv_freq)
            blend = (self.original_max_positions / wavelength - self.low_freq_factor) / (
                self.high_freq_factor - self.low_freq_factor)
            smoothed = (1 - blend) * scaled / self.factor + blend * scaled
            medium = (wavelength >= short_limit) & (wavelength <= long_limit)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        return inv_freq


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    hidden_act: str = "silu"
    qkv_bias: bool = False
    output_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    attention_dropout: float = 0.0
    sliding_window: int | None = None
    # Attention kernel (ptjax.models.attention.dot_product_attention): "" (ptjax's), "auto", "xla" or "cudnn".
    attention_impl: str = ""


def rotary_tables(position_ids, inv_freq: np.ndarray):
    """position_ids [batch or 1, length] -> float32 (cos, sin), each [batch or 1, length, 1, head_dim]."""
    def tables(positions):
        angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
        angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
        return jnp.cos(angles), jnp.sin(angles)

    return computed_once(tables, position_ids)


def apply_rotary(x, cos, sin):
    """Rotate [batch, length, heads, head_dim] by position: the first half of head_dim pairs with
    the second half (transformers' layout, not llama.cpp's interleaved one). Computed in float32
    and returned in x's dtype, one rounding (as transformers under autocast, whose tables are
    float32); bf16 tables and products moved SmolLM2's bf16 gradients (ptjax.models.layers,
    RESIDUAL_DTYPE)."""
    first, second = jnp.split(x, 2, axis=-1)
    return (x * cos + jnp.concatenate([-second, first], axis=-1) * sin).astype(x.dtype)


class LlamaLayer(nn.Module):
    """RMSNorm -> attention (RoPE on q and k, then the prefix) -> residual; RMSNorm -> SwiGLU -> residual."""

    config: LlamaConfig
    dtype: Any = jnp.float32
    deterministic: bool = True
    return_hidden: bool = False

    @nn.compact
    def __call__(self, hidden, prefix_kv, mask, cos, sin, layer_cache=None, cache_index=None, query_index=None):
        """query_index [batch, n]: compute the output at these positions only (keys and values
        still from every position; last_layer_rows.stack_computing_rows)."""
        cfg, dt = self.config, self.dtype
        x = RMSNorm(cfg.rms_norm_eps, dtype=dt, name="attention_norm")(hidden)
        q_cos, q_sin = cos, sin
        x_q = x
        if query_index is not None:
            hidden, x_q, mask = query_rows(hidden, query_index), query_rows(x, query_index), query_rows(mask, query_index, 2)
            q_cos, q_sin = query_rows(cos, query_index), query_rows(sin, query_index)
        q = Dense((cfg.num_heads, cfg.head_dim), ("embed",), ("heads", "kv"), use_bias=cfg.qkv_bias,
                  dtype=dt, name="query")(x_q)
        k = Dense((cfg.num_kv_heads, cfg.head_dim), ("embed",), ("kv_heads", "kv"), use_bias=cfg.qkv_bias,
                  dtype=dt, name="key")(x)
        v = Dense((cfg.num_kv_heads, cfg.head_dim), ("embed",), ("kv_heads", "kv"), use_bias=cfg.qkv_bias,
                  dtype=dt, name="value")(x)
        q = constrain(apply_rotary(q, q_cos, q_sin), ("batch", "length", "heads", "kv"))
        k = constrain(apply_rotary(k, cos, sin), ("batch", "length", "kv_heads", "kv"))
        v = constrain(v, ("batch", "length", "kv_heads", "kv"))
        new_kv = (k, v)
        if layer_cache is not None:  # decoding: attend to the cache with this call's keys written in
            k, v, mask, new_kv = extend_layer_cache(layer_cache, cache_index, k, v)
        prefix_key = prefix_value = None
        if prefix_kv is not None:
            prefix_key, prefix_value, prefix_mask = prefix_kv
            mask = prepend_prefix_mask(mask, prefix_mask)
        dropout_rng = None if self.deterministic or cfg.attention_dropout == 0 else self.make_rng("dropout")
        attn = dot_product_attention(
            q, k, v, mask, prefix_key=prefix_key, prefix_value=prefix_value,
            dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng, implementation=cfg.attention_impl or None,
            causal=True,
            kv_heads_first=layer_cache is not None and layer_cache.heads_first,
        )
        attn = Dense(cfg.hidden_size, ("heads", "kv"), ("embed",), use_bias=cfg.output_bias, dtype=dt,
                     name="attention_output")(attn)
        hidden = hidden + attn

        x = RMSNorm(cfg.rms_norm_eps, dtype=dt, name="mlp_norm")(hidden)
        dense = lambda n, name: Dense(n, ("embed",), ("mlp",), use_bias=cfg.mlp_bias, dtype=dt, name=name)
        inner = gated_activate(cfg.hidden_act, dense(cfg.intermediate_size, "gate")(x),
                               dense(cfg.intermediate_size, "up")(x))
        inner = constrain(inner, ("batch", "length", "mlp"))
        out = Dense(cfg.hidden_size, ("mlp",), ("embed",), use_bias=cfg.mlp_bias, dtype=dt, name="down")(inner)
        hidden = constrain(hidden + out, ("batch", "length", "embed"))
        return hidden, (hidden if self.return_hidden else None, new_kv if layer_cache is not None else None)


class LlamaModel(nn.Module):
    """input_ids / inputs_embeds [batch, length] -> BackboneOutput (causal, right padding).

    position_ids [batch or 1, length] default to 0..length-1; prefix keys are not rotated, so a
    deep prompt does not shift the positions of real tokens.
    cache: a KVCache (ptjax.models.kv_cache) for decoding: this call's tokens sit at slots
    cache.index.., attend to the cache instead of `attention_mask`, and are written into the
    returned output.cache; position_ids are then required.
    """

    config: LlamaConfig
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    per_layer_params: bool = False  # decoding layout (ptjax.models.layers.layer_stack)

    def setup(self):
        cfg, dt = self.config, self.dtype
        self.embed = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dt)
        self.final_norm = RMSNorm(cfg.rms_norm_eps, dtype=dt)
        if not cfg.tie_word_embeddings:
            self.lm_head = Dense(cfg.vocab_size, ("embed",), ("vocab",), use_bias=False, dtype=dt,
                                 out_dtype=jnp.float32)

    def embed_tokens(self, input_ids):
        """[batch, length] -> [batch, length, embed]: what inputs_embeds replaces."""
        return self.embed(input_ids)

    def lm_logits(self, hidden, weights_first: bool = False):
        """Final-norm hidden states [..., embed] -> float32 logits [..., vocab]. weights_first: a
        tied table goes first (decoding; Embed.attend; an untied head does when its kernel is
        stored transposed, see Dense)."""
        if self.config.tie_word_embeddings:
            return self.embed.attend(hidden, weights_first)
        return self.lm_head(hidden)

    @nn.compact
    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        *,
        inputs_embeds=None,
        position_ids=None,
        prefix: PrefixKV | None = None,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
        deterministic: bool = True,
        cache: KVCache | None = None,
        query_positions=None,
    ) -> BackboneOutput:
        """query_positions [batch, n] int32: the caller reads the output at these positions
        only; without a cache or per-layer parameters the last layer computes just
        those rows (BackboneOutput.positions says so). Not with output_hidden_states."""
        cfg = self.config
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        length = inputs_embeds.shape[1]
        key_length = length + (0 if prefix is None else prefix.length) if cache is None else cache.slots
        if cfg.sliding_window is not None and key_length > cfg.sliding_window:
            raise InputError(f"sequence of {key_length} keys exceeds the sliding window of {cfg.sliding_window}, "
                             "which ptjax does not implement")
        if position_ids is None:
            position_ids = jnp.arange(length)[None]
        cos, sin = rotary_tables(position_ids, cfg.rope.inverse_frequencies(cfg.head_dim))
        hidden = constrain(inputs_embeds.astype(RESIDUAL_DTYPE), ("batch", "length", "embed"))

        mask = make_attention_mask(attention_mask, query_length=length, key_length=length, causal=True)
        prefix_kv = None if prefix is None else prefix.for_layers()
        decoding = self.per_layer_params or cache is not None
        positions = query_positions if rows_only(query_positions, decoding, output_hidden_states) else None
        if positions is not None:
            last = stack_computing_rows(
                LlamaLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy, scan_layers=self.scan_layers,
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
            )(cfg, dtype=self.dtype, deterministic=deterministic, name="layers")(
                hidden, prefix_kv, mask, cos, sin, None, None, query_index=positions)
        else:
            stack = layer_stack(
                LlamaLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                scan_layers=self.scan_layers, in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
                per_layer_params=self.per_layer_params,
            )(cfg, dtype=self.dtype, deterministic=deterministic, return_hidden=output_hidden_states,
              name="layers")
            layer_cache = None if cache is None else cache.per_layer(self.per_layer_params)
            last, (per_layer, new_kv) = stack(hidden, prefix_kv, mask, cos, sin, layer_cache,
                                              None if cache is None else cache.index)
            if cache is not None:
                cache = cache.updated(new_kv)
        last = self.final_norm(last)

        all_hidden = None
        if output_hidden_states:  # transformers' convention: the last entry is after the final norm
            all_hidden = jnp.concatenate([hidden[None], per_layer[:-1], last[None]])
        logits = None
        if compute_logits:
            logits = constrain(self.lm_logits(last), ("batch", "length", "vocab"))
        return BackboneOutput(last_hidden_state=last, hidden_states=all_hidden, logits=logits, cache=cache,
                              positions=positions)


# --------------------------------------------------------------------------------------------
# Checkpoint mapping.

_ROPE_KINDS = ("default", "linear", "llama3")


def rope_from_hf(hf) -> RopeConfig:
    """RoPE settings from a transformers config: `rope_parameters` (transformers 5) or the older
    `rope_theta` + `rope_scaling`."""
    params = dict(getattr(hf, "rope_parameters", None) or {})
    scaling = dict(getattr(hf, "rope_scaling", None) or {})
    params = {**scaling, **params}
    theta = params.get("rope_theta", getattr(hf, "rope_theta", None))
    if theta is None:
        theta = 10000.0
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in _ROPE_KINDS:
        raise InputError(f"config.json: rope type {kind!r} is not supported; ptjax implements {list(_ROPE_KINDS)}")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise InputError("config.json: partial_rotary_factor != 1 is not supported")
    return RopeConfig(
        theta=float(theta), kind=kind, factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_positions=int(params.get("original_max_position_embeddings")
                                   or getattr(hf, "max_position_embeddings", 8192)),
    )


def _config_from_hf(hf, names: frozenset[str]) -> LlamaConfig:
    heads = hf.num_attention_heads
    if hf.hidden_act not in ACTIVATIONS:
        raise InputError(f"config.json: hidden_act {hf.hidden_act!r} is not supported; known: {sorted(ACTIVATIONS)}")
    window = getattr(hf, "sliding_window", None)
    if hf.model_type == "qwen2" and not getattr(hf, "use_sliding_window", False):
        window = None
    return LlamaConfig(
        vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers,
        num_heads=heads, num_kv_heads=getattr(hf, "num_key_value_heads", None) or heads,
        head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads,
        intermediate_size=hf.intermediate_size, rms_norm_eps=hf.rms_norm_eps, rope=rope_from_hf(hf),
        hidden_act=hf.hidden_act,
        qkv_bias="layers.0.self_attn.q_proj.bias" in names,
        output_bias="layers.0.self_attn.o_proj.bias" in names,
        mlp_bias="layers.0.mlp.gate_proj.bias" in names,
        # A checkpoint that stores lm_head.weight uses it (identical to the embeddings when tied).
        tie_word_embeddings="lm_head.weight" not in names,
        attention_dropout=float(getattr(hf, "attention_dropout", 0.0) or 0.0),
        sliding_window=window,
    )


def _weight_map(cfg: LlamaConfig) -> dict[tuple[str, ...], TensorRule]:
    d, hd = cfg.hidden_size, cfg.head_dim
    t = lambda w: w.T
    layer = "layers.{i}."
    rules = {
        ("embed", "embedding"): TensorRule("embed_tokens.weight"),
        ("final_norm", "scale"): TensorRule("norm.weight"),
        ("layers", "attention_norm", "scale"): TensorRule(layer + "input_layernorm.weight"),
        ("layers", "mlp_norm", "scale"): TensorRule(layer + "post_attention_layernorm.weight"),
        ("layers", "attention_output", "kernel"): TensorRule(
            layer + "self_attn.o_proj.weight", lambda w: w.T.reshape(cfg.num_heads, hd, d)),
    }
    for ours, theirs, heads in (("query", "q_proj", cfg.num_heads), ("key", "k_proj", cfg.num_kv_heads),
                                ("value", "v_proj", cfg.num_kv_heads)):
        rules[("layers", ours, "kernel")] = TensorRule(
            layer + f"self_attn.{theirs}.weight", lambda w, h=heads: w.T.reshape(d, h, hd))
        if cfg.qkv_bias:
            rules[("layers", ours, "bias")] = TensorRule(
                layer + f"self_attn.{theirs}.bias", lambda b, h=heads: b.reshape(h, hd))
    if cfg.output_bias:
        rules[("layers", "attention_output", "bias")] = TensorRule(layer + "self_attn.o_proj.bias")
    for ours in ("gate", "up", "down"):
        rules[("layers", ours, "kernel")] = TensorRule(layer + f"mlp.{ours}_proj.weight", t)
        if cfg.mlp_bias:
            rules[("layers", ours, "bias")] = TensorRule(layer + f"mlp.{ours}_proj.bias")
    if not cfg.tie_word_embeddings:
        rules[("lm_head", "kernel")] = TensorRule("lm_head.weight", t)
    return rules


def _build(cfg: LlamaConfig, *, dtype=jnp.float32, scan_layers=True, remat_policy="none") -> LlamaModel:
    return LlamaModel(cfg, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy)


def _example_inputs(cfg: LlamaConfig) -> dict:
    return {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}


LLAMA = Family(
    name="llama",
    model_types=("llama", "mistral", "qwen2"),
    config_from_hf=_config_from_hf,
    build=_build,
    weight_map=_weight_map,
    example_inputs=_example_inputs,
    kind=lambda cfg: "causal_lm",
    checkpoint_prefixes=("model.",),
    query_positions=True,
)

FAMILIES = (LLAMA,)
