"""T5 encoder-decoders: T5 v1.0, T5.1.1 and mT5 (pre-RMSNorm, relative position buckets).

Matches transformers' T5ForConditionalGeneration / MT5ForConditionalGeneration. The variants
differ only in data the config and checkpoint carry:
  v1.0      ReLU feed-forward (wi, wo); LM head tied to the shared embedding, decoder output
            scaled by d_model**-0.5 before it.
  T5.1.1    gated-GELU feed-forward (wi_0, wi_1, wo); no output scaling; an untied lm_head when
  / mT5     the checkpoint has one (hub checkpoints do; transformers 5 saves tiny ones tied).

Each stack owns one relative-position bias table (transformers keeps it in block 0) that is turned
into a [1, heads, query, key] bias once per forward (relative_positions.py) and broadcast into
every scanned layer.
Attention logits are not scaled (T5 folds the scale into its initialization).

Deep prompts: `prefix` reaches every encoder self-attention, `decoder_prefix` every decoder
self-attention; prefix slots sit at positions -P..-1 before the first real token, so their
relative-position bias uses key_pos - query_pos with those positions (the decoder then computes
what transformers computes with the prefix as past_key_values).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.models.attention import dot_product_attention, make_attention_mask, prepend_prefix_mask
from ptjax.models.kv_cache import KVCache, LayerCache, extend_layer_cache
from ptjax.models.layer_stacks import PerLayer, layer_stack
from ptjax.models.layers import (
    RESIDUAL_DTYPE,
    BackboneOutput,
    Dense,
    Dropout,
    Embed,
    PrefixKV,
    RMSNorm,
    activate,
    constrain,
    gated_activate,
)
from ptjax.models.registry import Family, TensorRule
from ptjax.models.relative_positions import relative_position_bias

# config.feed_forward_proj -> (gated, activation). transformers maps "gated-gelu" to gelu_new.
FEED_FORWARDS = {
    "relu": (False, "relu"),
    "gated-gelu": (True, "gelu_new"),
    "gated-silu": (True, "silu"),
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_eps: float = 1e-6
    feed_forward_proj: str = "relu"
    dropout_rate: float = 0.1
    # v1.0 scales the decoder output by d_model**-0.5 before its tied head.
    scale_decoder_outputs: bool = True
    # An lm_head separate from the shared embedding (T5.1.1 / mT5 hub checkpoints).
    untied_lm_head: bool = False
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    # Attention kernel (ptjax.models.attention.dot_product_attention): "" (ptjax's), "auto", "xla" or "cudnn".
    attention_impl: str = ""

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARDS:
            raise InputError(
                f"config.json: T5 feed_forward_proj={self.feed_forward_proj!r} is not supported; "
                f"ptjax supports {sorted(FEED_FORWARDS)}"
            )
        buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
        if buckets < 4 or distance <= buckets // 2:  # the log-spaced buckets need room
            raise InputError(f"config.json: T5 relative_attention_num_buckets={buckets} with "
                             f"relative_attention_max_distance={distance} is degenerate")


def shift_right(labels, decoder_start_token_id: int, pad_token_id: int):
    """Decoder inputs from labels [batch, length]: start token first, labels shifted one right,
    ignored labels (-100) replaced by padding (transformers' T5 `_shift_right`)."""
    labels = jnp.asarray(labels)
    start = jnp.full(labels.shape[:-1] + (1,), decoder_start_token_id, labels.dtype)
    shifted = jnp.concatenate([start, labels[..., :-1]], axis=-1)
    return jnp.where(shifted == -100, pad_token_id, shifted)


# --------------------------------------------------------------------------------------------
# Layers.


class T5Attention(nn.Module):
    """Unscaled multi-head attention; keys/values from `source` (self- or cross-attention).

    causal: the mask is causal (decoder self-attention), a hint for cuDNN's kernel.
    Decoding: layer_cache/cache_index attend to a KV cache (ptjax.models.kv_cache); kv gives
    cross-attention keys/values computed before ((keys, values), or a per-layer LayerCache).
    Returns (output, what the cache keeps of this call: extend_layer_cache's `written`, or the
    cross-attention keys/values).
    """

    config: T5Config
    dtype: Any = jnp.float32
    deterministic: bool = True
    causal: bool = False

    @nn.compact
    def __call__(self, hidden, source, mask, bias, prefix_kv=None, layer_cache=None, cache_index=None, kv=None):
        cfg, dt = self.config, self.dtype
        heads = (cfg.num_heads, cfg.d_kv)
        q = Dense(heads, ("embed",), ("heads", "kv"), use_bias=False, dtype=dt, name="q")(hidden)
        project_k = Dense(heads, ("embed",), ("kv_heads", "kv"), use_bias=False, dtype=dt, name="k")
        project_v = Dense(heads, ("embed",), ("kv_heads", "kv"), use_bias=False, dtype=dt, name="v")
        heads_first = False
        if kv is None:
            k, v = project_k(source), project_v(source)
            new_kv = (k, v)
        elif isinstance(kv, LayerCache):  # a per-layer cross-attention cache, read as it lies
            k, v, heads_first, new_kv = kv.keys, kv.values, kv.heads_first, PerLayer((kv,))
        else:
            (k, v), new_kv = kv, kv
        q = constrain(q, ("batch", "length", "heads", "kv"))
        if layer_cache is not None:
            k, v, mask, new_kv = extend_layer_cache(layer_cache, cache_index, k, v)
        prefix_key = prefix_value = None
        if prefix_kv is not None:
            prefix_key, prefix_value, prefix_mask = prefix_kv
            mask = prepend_prefix_mask(mask, prefix_mask)
        dropout_rng = None if self.deterministic or cfg.dropout_rate == 0 else self.make_rng("dropout")
        out = dot_product_attention(
            q, k, v, mask, prefix_key=prefix_key, prefix_value=prefix_value, bias=bias, scale=1.0,
            dropout_rate=cfg.dropout_rate, dropout_rng=dropout_rng, implementation=cfg.attention_impl or None,
            causal=self.causal,
            kv_heads_first=heads_first or (layer_cache is not None and layer_cache.heads_first),
        )
        out = constrain(out, ("batch", "length", "heads", "kv"))
        return Dense(cfg.d_model, ("heads", "kv"), ("embed",), use_bias=False, dtype=dt, name="o")(out), new_kv


class T5FeedForward(nn.Module):
    """wo(act(wi x)) or, gated, wo(act(wi_0 x) * wi_1 x)."""

    config: T5Config
    dtype: Any = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        cfg, dt = self.config, self.dtype
        gated, activation = FEED_FORWARDS[cfg.feed_forward_proj]
        dense = functools.partial(Dense, cfg.d_ff, ("embed",), ("mlp",), use_bias=False, dtype=dt)
        if gated:
            inner = gated_activate(activation, dense(name="wi_0")(x), dense(name="wi_1")(x))
        else:
            inner = activate(activation, dense(name="wi")(x))
        inner = constrain(inner, ("batch", "length", "mlp"))
        inner = Dropout(cfg.dropout_rate)(inner, deterministic=self.deterministic)
        return Dense(cfg.d_model, ("mlp",), ("embed",), use_bias=False, dtype=dt, name="wo")(inner)


class T5Block(nn.Module):
    """Pre-norm self-attention, (decoder) cross-attention and feed-forward, each residual.

    Scanned: __call__(hidden, prefix_kv, self_mask, position_bias, encoder_hidden, cross_mask,
    layer_cache, cache_index, cross_kv) -> (hidden, (hidden or None, self (k, v), cross (k, v)) or
    (hidden, (hidden or None, None, None)) without a cache; prefix_kv, layer_cache and cross_kv
    are per layer.
    """

    config: T5Config
    is_decoder: bool
    dtype: Any = jnp.float32
    deterministic: bool = True
    collect_hidden: bool = False

    @nn.compact
    def __call__(self, hidden, prefix_kv, self_mask, position_bias, encoder_hidden, cross_mask,
                 layer_cache=None, cache_index=None, cross_kv=None):
        cfg, dt = self.config, self.dtype
        norm = functools.partial(RMSNorm, cfg.layer_norm_eps, dtype=dt)
        attention = functools.partial(T5Attention, cfg, dtype=dt, deterministic=self.deterministic)
        dropout = functools.partial(Dropout(cfg.dropout_rate), deterministic=self.deterministic)

        normed = norm(name="self_attention_norm")(hidden)
        self_attention = attention(causal=self.is_decoder, name="self_attention")
        out, self_kv = self_attention(normed, normed, self_mask, position_bias, prefix_kv, layer_cache, cache_index)
        hidden = hidden + dropout(out)
        if self.is_decoder:
            normed = norm(name="cross_attention_norm")(hidden)
            out, cross_kv = attention(name="cross_attention")(normed, encoder_hidden, cross_mask, None, kv=cross_kv)
            hidden = hidden + dropout(out)
        normed = norm(name="feed_forward_norm")(hidden)
        out = T5FeedForward(cfg, dtype=dt, deterministic=self.deterministic, name="feed_forward")(normed)
        hidden = constrain(hidden + dropout(out), ("batch", "length", "embed"))
        if layer_cache is None:
            return hidden, (hidden if self.collect_hidden else None, None, None)
        return hidden, (hidden if self.collect_hidden else None, self_kv, cross_kv)


class T5Stack(nn.Module):
    """Encoder or decoder: embeddings [batch, length, embed] -> (final-normed hidden, all hidden).

    all hidden: [layers + 1, batch, length, embed] (embeddings, each layer, the last after the
    final norm) when output_hidden_states, else None.
    cache (decoder only): a KVCache; the call returns (final, all hidden, the written cache).
    """

    config: T5Config
    is_decoder: bool
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    per_layer_params: bool = False  # decoding layout (ptjax.models.layers.layer_stack)

    @property
    def num_layers(self) -> int:
        return self.config.num_decoder_layers if self.is_decoder else self.config.num_layers

    @nn.compact
    def __call__(self, embeds, mask=None, prefix: PrefixKV | None = None, encoder_hidden=None,
                 encoder_mask=None, *, output_hidden_states=False, deterministic=True,
                 cache: KVCache | None = None):
        cfg = self.config
        length = embeds.shape[1]
        key_length = length if cache is None else cache.slots
        table = self.param(
            "relative_attention_bias", nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.float32,
        )
        self._check_prefix(prefix)
        position_bias = relative_position_bias(  # with a cache, slot differences are position differences
            table, query_length=length, key_length=key_length, prefix_length=0 if prefix is None else prefix.length,
            bidirectional=not self.is_decoder, max_distance=cfg.relative_attention_max_distance,
            query_offset=0 if cache is None else cache.index,
        )
        self_mask = make_attention_mask(mask, query_length=length, key_length=length, causal=self.is_decoder)
        cross_mask = None
        if self.is_decoder:
            cross_mask = make_attention_mask(encoder_mask, query_length=length,
                                             key_length=encoder_hidden.shape[1], causal=False)
            encoder_hidden = encoder_hidden.astype(self.dtype)

        hidden = Dropout(cfg.dropout_rate)(embeds.astype(RESIDUAL_DTYPE), deterministic=deterministic)
        hidden = constrain(hidden, ("batch", "length", "embed"))
        stack = layer_stack(
            T5Block, num_layers=self.num_layers, remat_policy=self.remat_policy, scan_layers=self.scan_layers,
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast, 0),
            per_layer_params=self.per_layer_params,
        )(cfg, self.is_decoder, dtype=self.dtype, deterministic=deterministic,
          collect_hidden=output_hidden_states, name="layers")
        prefix_kv = None if prefix is None else prefix.for_layers()
        layer_cache = cross_kv = index = None
        if cache is not None:
            layer_cache, index, cross_kv = cache.per_layer(self.per_layer_params), cache.index, cache.cross_per_layer()
        last, (per_layer, self_kv, new_cross) = stack(hidden, prefix_kv, self_mask, position_bias, encoder_hidden,
                                                      cross_mask, layer_cache, index, cross_kv)
        if cache is not None:
            cache = cache.updated(self_kv).with_cross(new_cross)

        final = RMSNorm(cfg.layer_norm_eps, dtype=self.dtype, name="final_norm")(last)
        final = Dropout(cfg.dropout_rate)(final, deterministic=deterministic)
        all_hidden = None
        if output_hidden_states:
            all_hidden = jnp.concatenate([hidden[None], per_layer[:-1], final[None]])
        if cache is not None:
            return final, all_hidden, cache
        return final, all_hidden

    def _check_prefix(self, prefix: PrefixKV | None) -> None:
        if prefix is None:
            return
        cfg, which = self.config, "decoder_prefix" if self.is_decoder else "prefix"
        expected = (self.num_layers, cfg.num_heads, cfg.d_kv)
        got = (prefix.keys.shape[0],) + tuple(prefix.keys.shape[3:])
        if prefix.keys.ndim != 5 or got != expected or prefix.values.shape != prefix.keys.shape:
            raise ValueError(
                f"T5 {which}: keys/values must be [layers={expected[0]}, batch or 1, prefix_len, "
                f"heads={expected[1]}, head_dim={expected[2]}]; got keys {tuple(prefix.keys.shape)}, "
                f"values {tuple(prefix.values.shape)}"
            )


# --------------------------------------------------------------------------------------------
# The model.


class T5Model(nn.Module):
    """Encoder-decoder with LM head. Shapes: encoder [batch, source_length], decoder
    [batch, target_length]; see `__call__`, `encode`, `decode`."""

    config: T5Config
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    per_layer_params: bool = False  # decoding layout (ptjax.models.layers.layer_stack)

    def setup(self):
        cfg, dt = self.config, self.dtype
        stack = functools.partial(T5Stack, cfg, dtype=dt, scan_layers=self.scan_layers,
                                  remat_policy=self.remat_policy, per_layer_params=self.per_layer_params)
        self.shared = Embed(cfg.vocab_size, cfg.d_model, dtype=dt)
        self.encoder = stack(is_decoder=False)
        self.decoder = stack(is_decoder=True)
        if cfg.untied_lm_head:
            # Stored like an embedding, [vocab, embed], which is also the checkpoint's layout.
            self.lm_head = Embed(cfg.vocab_size, cfg.d_model, dtype=dt)

    def embed_tokens(self, input_ids):
        """[batch, length] -> [batch, length, embed]: what (decoder_)inputs_embeds replaces."""
        return self.shared(input_ids)

    def lm_logits(self, hidden, weights_first: bool = False):
        """Decoder hidden states [..., embed] -> float32 logits [..., vocab]. weights_first: the
        table goes first (decoding; Embed.attend)."""
        if self.config.scale_decoder_outputs:
            hidden = hidden * self.config.d_model ** -0.5
        head = self.lm_head if self.config.untied_lm_head else self.shared
        return head.attend(hidden, weights_first)

    def encode(self, input_ids=None, attention_mask=None, *, inputs_embeds=None,
               prefix: PrefixKV | None = None, output_hidden_states: bool = False,
               deterministic: bool = True) -> BackboneOutput:
        """Encoder only: last_hidden_state [batch, source_length, embed], hidden_states
        [encoder layers + 1, ...] on request."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("T5 encode: give input_ids or inputs_embeds")
            inputs_embeds = self.embed_tokens(input_ids)
        last, all_hidden = self.encoder(inputs_embeds, attention_mask, prefix,
                                        output_hidden_states=output_hidden_states, deterministic=deterministic)
        return BackboneOutput(last_hidden_state=last, hidden_states=all_hidden)

    def decode(self, decoder_input_ids=None, encoder_hidden_states=None, attention_mask=None,
               decoder_attention_mask=None, *, decoder_inputs_embeds=None,
               decoder_prefix: PrefixKV | None = None, output_hidden_states: bool = False,
               compute_logits: bool = True, deterministic: bool = True,
               cache: KVCache | None = None) -> BackboneOutput:
        """Decoder over encoder_hidden_states [batch, source_length, embed] (attention_mask is the
        encoder's padding mask). Encode once, then decode as many candidate targets as needed.
        cache: a KVCache for step-by-step decoding (the decoder's self-attention; the first call
        fills its cross-attention keys/values), returned written in output.cache."""
        if decoder_inputs_embeds is None:
            if decoder_input_ids is None:
                raise ValueError("T5 needs decoder_input_ids or decoder_inputs_embeds "
                                 "(ptjax.models.t5.shift_right builds them from labels)")
            decoder_inputs_embeds = self.embed_tokens(decoder_input_ids)
        if encoder_hidden_states is None:
            raise ValueError("T5 decode: encoder_hidden_states is required (from encode)")
        last, all_hidden, *written = self.decoder(
            decoder_inputs_embeds, decoder_attention_mask, decoder_prefix, encoder_hidden_states, attention_mask,
            output_hidden_states=output_hidden_states, deterministic=deterministic, cache=cache,
        )
        logits = constrain(self.lm_logits(last), ("batch", "length", "vocab")) if compute_logits else None
        return BackboneOutput(last_hidden_state=last, hidden_states=all_hidden, logits=logits,
                              encoder_last_hidden_state=encoder_hidden_states, cache=written[0] if written else None)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        *,
        inputs_embeds=None,
        decoder_inputs_embeds=None,
        prefix: PrefixKV | None = None,
        decoder_prefix: PrefixKV | None = None,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
        deterministic: bool = True,
    ) -> BackboneOutput:
        """Encode and decode. last_hidden_state, hidden_states, logits: the decoder's;
        encoder_last_hidden_state and encoder_hidden_states: the encoder's."""
        encoded = self.encode(input_ids, attention_mask, inputs_embeds=inputs_embeds, prefix=prefix,
                              output_hidden_states=output_hidden_states, deterministic=deterministic)
        decoded = self.decode(
            decoder_input_ids, encoded.last_hidden_state, attention_mask, decoder_attention_mask,
            decoder_inputs_embeds=decoder_inputs_embeds, decoder_prefix=decoder_prefix,
            output_hidden_states=output_hidden_states, compute_logits=compute_logits, deterministic=deterministic,
        )
        return decoded.replace(encoder_hidden_states=encoded.hidden_states)


# --------------------------------------------------------------------------------------------
# Checkpoint mapping.


def _config_from_hf(hf, names: frozenset[str]) -> T5Config:
    # transformers 5 reads v1.0 vs v1.1 from the saved tie_word_embeddings into
    # scale_decoder_outputs; MT5 never scales.
    scale = getattr(hf, "scale_decoder_outputs", None)
    if scale is None:
        scale = hf.model_type != "mt5" and getattr(hf, "tie_word_embeddings", True) is not False
    pad = hf.pad_token_id or 0
    start = getattr(hf, "decoder_start_token_id", None)  # T5 starts decoding with the pad token
    return T5Config(
        vocab_size=hf.vocab_size, d_model=hf.d_model, d_kv=hf.d_kv, d_ff=hf.d_ff, num_heads=hf.num_heads,
        num_layers=hf.num_layers, num_decoder_layers=hf.num_decoder_layers or hf.num_layers,
        relative_attention_num_buckets=hf.relative_attention_num_buckets,
        relative_attention_max_distance=hf.relative_attention_max_distance,
        layer_norm_eps=hf.layer_norm_epsilon, feed_forward_proj=hf.feed_forward_proj,
        dropout_rate=hf.dropout_rate, scale_decoder_outputs=bool(scale),
        untied_lm_head="lm_head.weight" in names, pad_token_id=pad,
        decoder_start_token_id=pad if start is None else start,
    )


def _weight_map(cfg: T5Config) -> dict[tuple[str, ...], TensorRule]:
    heads, d_kv, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    t = lambda w: w.T
    to_heads = lambda w: w.T.reshape(d, heads, d_kv)
    from_heads = lambda w: w.T.reshape(heads, d_kv, d)
    gated, _ = FEED_FORWARDS[cfg.feed_forward_proj]
    rules = {("shared", "embedding"): TensorRule("shared.weight")}
    if cfg.untied_lm_head:
        rules[("lm_head", "embedding")] = TensorRule("lm_head.weight")

    def attention(ours: tuple[str, ...], theirs: str) -> None:
        for name in ("q", "k", "v"):
            rules[ours + (name, "kernel")] = TensorRule(f"{theirs}.{name}.weight", to_heads)
        rules[ours + ("o", "kernel")] = TensorRule(f"{theirs}.o.weight", from_heads)

    for stack in ("encoder", "decoder"):
        block = stack + ".block.{i}.layer."
        layers = (stack, "layers")
        feed_forward = 2 if stack == "decoder" else 1
        rules[(stack, "relative_attention_bias")] = TensorRule(
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        rules[(stack, "final_norm", "scale")] = TensorRule(f"{stack}.final_layer_norm.weight")
        attention(layers + ("self_attention",), block + "0.SelfAttention")
        rules[layers + ("self_attention_norm", "scale")] = TensorRule(block + "0.layer_norm.weight")
        if stack == "decoder":
            attention(layers + ("cross_attention",), block + "1.EncDecAttention")
            rules[layers + ("cross_attention_norm", "scale")] = TensorRule(block + "1.layer_norm.weight")
        ff = f"{block}{feed_forward}."
        for name in ("wi_0", "wi_1", "wo") if gated else ("wi", "wo"):
            rules[layers + ("feed_forward", name, "kernel")] = TensorRule(ff + f"DenseReluDense.{name}.weight", t)
        rules[layers + ("feed_forward_norm", "scale")] = TensorRule(ff + "layer_norm.weight")
    return rules


def _build(cfg: T5Config, *, dtype=jnp.float32, scan_layers=True, remat_policy="none") -> T5Model:
    return T5Model(cfg, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy)


def _example_inputs(cfg: T5Config) -> dict:
    ids = np.zeros((1, 4), np.int32)
    return {"input_ids": ids, "attention_mask": np.ones((1, 4), np.int32), "decoder_input_ids": ids}


T5 = Family(
    name="t5",
    model_types=("t5", "mt5"),
    config_from_hf=_config_from_hf,
    build=_build,
    weight_map=_weight_map,
    example_inputs=_example_inputs,
    kind=lambda cfg: "seq2seq",
)

FAMILIES = (T5,)
