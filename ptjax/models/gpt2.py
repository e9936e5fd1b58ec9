"""GPT-2 decoder (pre-LayerNorm, learned absolute positions, LM head tied to the token embeddings).

Matches transformers' GPT2LMHeadModel. The checkpoint's fused c_attn projection is split into
separate query/key/value parameters as it loads, so attention code and prefix K/V look the same as
in every other family. GPT-2's Conv1D layers store weights as [in, out]: no transpose is needed.
"""

from __future__ import annotations

import dataclasses
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
    Dropout,
    Embed,
    LayerNorm,
    PrefixKV,
    activate,
    constrain,
)
from ptjax.models.registry import Family, TensorRule


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"
    embedding_dropout: float = 0.1
    residual_dropout: float = 0.1
    attention_dropout: float = 0.1
    scale_attention: bool = True
    # Attention kernel (ptjax.models.attention.dot_product_attention): "" (ptjax's), "auto", "xla" or "cudnn".
    attention_impl: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class GPT2Layer(nn.Module):
    """LayerNorm -> attention -> residual; LayerNorm -> MLP -> residual."""

    config: GPT2Config
    dtype: Any = jnp.float32
    deterministic: bool = True
    return_hidden: bool = False

    @nn.compact
    def __call__(self, hidden, prefix_kv, mask, layer_cache=None, cache_index=None, query_index=None):
        """query_index [batch, n]: compute the output at these positions only (keys and values
        still from every position; last_layer_rows.stack_computing_rows)."""
        cfg, dt = self.config, self.dtype
        heads, head_dim = cfg.num_heads, cfg.head_dim
        x = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="attention_norm")(hidden)
        x_q = x
        if query_index is not None:
            hidden, x_q, mask = query_rows(hidden, query_index), query_rows(x, query_index), query_rows(mask, query_index, 2)
        q = Dense((heads, head_dim), ("embed",), ("heads", "kv"), dtype=dt, name="query")(x_q)
        k = Dense((heads, head_dim), ("embed",), ("kv_heads", "kv"), dtype=dt, name="key")(x)
        v = Dense((heads, head_dim), ("embed",), ("kv_heads", "kv"), dtype=dt, name="value")(x)
        q = constrain(q, ("batch", "length", "heads", "kv"))
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
            scale=None if cfg.scale_attention else 1.0,
            dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng, implementation=cfg.attention_impl or None,
            causal=True,
            kv_heads_first=layer_cache is not None and layer_cache.heads_first,
        )
        attn = Dense(cfg.hidden_size, ("heads", "kv"), ("embed",), dtype=dt, name="attention_output")(attn)
        hidden = hidden + Dropout(cfg.residual_dropout)(attn, deterministic=self.deterministic)

        x = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="mlp_norm")(hidden)
        inner = Dense(cfg.intermediate_size, ("embed",), ("mlp",), dtype=dt, name="intermediate")(x)
        inner = constrain(activate(cfg.activation, inner), ("batch", "length", "mlp"))
        out = Dense(cfg.hidden_size, ("mlp",), ("embed",), dtype=dt, name="output")(inner)
        hidden = hidden + Dropout(cfg.residual_dropout)(out, deterministic=self.deterministic)
        hidden = constrain(hidden, ("batch", "length", "embed"))
        return hidden, (hidden if self.return_hidden else None, new_kv if layer_cache is not None else None)


class GPT2Model(nn.Module):
    """input_ids / inputs_embeds [batch, length] -> BackboneOutput (causal, right padding).

    inputs_embeds replaces the token lookup only; position embeddings (position_ids [batch or 1,
    length], default 0..length-1) are added to it, as in transformers.
    cache: a KVCache (ptjax.models.kv_cache) for decoding, as in LlamaModel (position_ids required).
    """

    config: GPT2Config
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    per_layer_params: bool = False  # decoding layout (ptjax.models.layers.layer_stack)

    def setup(self):
        cfg, dt = self.config, self.dtype
        self.token_embeddings = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dt)
        self.position_embeddings = Embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"), dtype=dt)
        self.embeddings_dropout = Dropout(cfg.embedding_dropout)
        self.final_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)

    def embed_tokens(self, input_ids):
        """[batch, length] -> [batch, length, embed]: what inputs_embeds replaces."""
        return self.token_embeddings(input_ids)

    def lm_logits(self, hidden, weights_first: bool = False):
        """Final-norm hidden states [..., embed] -> float32 logits [..., vocab] (tied head).
        weights_first: the table goes first (decoding; Embed.attend)."""
        return self.token_embeddings.attend(hidden, weights_first)

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
        if position_ids is None:
            position_ids = jnp.arange(length)[None]
        hidden = inputs_embeds.astype(RESIDUAL_DTYPE) + self.position_embeddings(position_ids)
        hidden = self.embeddings_dropout(hidden, deterministic=deterministic)
        hidden = constrain(hidden, ("batch", "length", "embed"))

        mask = make_attention_mask(attention_mask, query_length=length, key_length=length, causal=True)
        prefix_kv = None if prefix is None else prefix.for_layers()
        decoding = self.per_layer_params or cache is not None
        positions = query_positions if rows_only(query_positions, decoding, output_hidden_states) else None
        if positions is not None:
            last = stack_computing_rows(
                GPT2Layer, num_layers=cfg.num_layers, remat_policy=self.remat_policy, scan_layers=self.scan_layers,
                in_axes=(0, nn.broadcast, 0, nn.broadcast),
            )(cfg, dtype=self.dtype, deterministic=deterministic, name="layers")(
                hidden, prefix_kv, mask, None, None, query_index=positions)
        else:
            stack = layer_stack(
                GPT2Layer, num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                scan_layers=self.scan_layers, in_axes=(0, nn.broadcast, 0, nn.broadcast),
                per_layer_params=self.per_layer_params,
            )(cfg, dtype=self.dtype, deterministic=deterministic, return_hidden=output_hidden_states,
              name="layers")
            layer_cache = None if cache is None else cache.per_layer(self.per_layer_params)
            last, (per_layer, new_kv) = stack(hidden, prefix_kv, mask, layer_cache,
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


def _config_from_hf(hf, names: frozenset[str]) -> GPT2Config:
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise InputError("config.json: scale_attn_by_inverse_layer_idx=True is not supported")
    if hf.activation_function not in ACTIVATIONS:
        raise InputError(f"config.json: activation_function {hf.activation_function!r} is not supported; "
                         f"known: {sorted(ACTIVATIONS)}")
    return GPT2Config(
        vocab_size=hf.vocab_size, hidden_size=hf.n_embd, num_layers=hf.n_layer, num_heads=hf.n_head,
        intermediate_size=hf.n_inner or 4 * hf.n_embd, max_position_embeddings=hf.n_positions,
        layer_norm_eps=hf.layer_norm_epsilon, activation=hf.activation_function,
        embedding_dropout=hf.embd_pdrop, residual_dropout=hf.resid_pdrop, attention_dropout=hf.attn_pdrop,
        scale_attention=getattr(hf, "scale_attn_weights", True),
    )


def _weight_map(cfg: GPT2Config) -> dict[tuple[str, ...], TensorRule]:
    d, heads, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    layer = "h.{i}."

    def fused_part(index: int):
        """Slice query (0), key (1) or value (2) out of c_attn: weight [d, 3d] or bias [3d]."""
        def kernel(w):
            return w[:, index * d:(index + 1) * d].reshape(d, heads, hd)

        def bias(b):
            return b[index * d:(index + 1) * d].reshape(heads, hd)

        return kernel, bias

    rules = {
        ("token_embeddings", "embedding"): TensorRule("wte.weight"),
        ("position_embeddings", "embedding"): TensorRule("wpe.weight"),
        ("final_norm", "scale"): TensorRule("ln_f.weight"),
        ("final_norm", "bias"): TensorRule("ln_f.bias"),
        ("layers", "attention_output", "kernel"): TensorRule(
            layer + "attn.c_proj.weight", lambda w: w.reshape(heads, hd, d)),
        ("layers", "attention_output", "bias"): TensorRule(layer + "attn.c_proj.bias"),
        ("layers", "intermediate", "kernel"): TensorRule(layer + "mlp.c_fc.weight"),
        ("layers", "intermediate", "bias"): TensorRule(layer + "mlp.c_fc.bias"),
        ("layers", "output", "kernel"): TensorRule(layer + "mlp.c_proj.weight"),
        ("layers", "output", "bias"): TensorRule(layer + "mlp.c_proj.bias"),
    }
    for index, name in enumerate(("query", "key", "value")):
        kernel, bias = fused_part(index)
        rules[("layers", name, "kernel")] = TensorRule(layer + "attn.c_attn.weight", kernel)
        rules[("layers", name, "bias")] = TensorRule(layer + "attn.c_attn.bias", bias)
    for ours, theirs in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
        rules[("layers", ours, "scale")] = TensorRule(layer + theirs + ".weight")
        rules[("layers", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    return rules


def _build(cfg: GPT2Config, *, dtype=jnp.float32, scan_layers=True, remat_policy="none") -> GPT2Model:
    return GPT2Model(cfg, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy)


def _example_inputs(cfg: GPT2Config) -> dict:
    return {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}


GPT2 = Family(
    name="gpt2",
    model_types=("gpt2",),
    config_from_hf=_config_from_hf,
    build=_build,
    weight_map=_weight_map,
    example_inputs=_example_inputs,
    kind=lambda cfg: "causal_lm",
    checkpoint_prefixes=("transformer.",),
    query_positions=True,
)

FAMILIES = (GPT2,)
