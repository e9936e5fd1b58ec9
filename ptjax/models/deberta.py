"""DeBERTa (v1) and DeBERTa-v2/v3 encoders: disentangled attention, optional MLM head and pooler.

Matches transformers' DebertaModel / DebertaForMaskedLM and DebertaV2Model / DebertaV2ForMaskedLM.
An attention score is content->content plus, from a table of relative-distance embeddings,
content->position (the query against the key's distance embedding, "c2p") and position->content
("p2c"), all divided by sqrt(head_dim * (1 + number of relative terms)). v2 adds log-spaced
distance buckets (`position_buckets`), key/query projections shared with the relative table
(`share_att_key`), a LayerNorm on the table (`norm_rel_ebd`) and a convolution after the first
layer (`conv_kernel_size`). v1 fuses its q/k/v projection (split here at load time).

transformers' MLM classes have no enhanced mask decoder (they drop the checkpoints'
`mask_predictions.*`), so neither has ptjax: the MLM head reads the last layer, as theirs does.

Deep-prompt prefix keys have no relative position. transformers' DeBERTa takes no
past_key_values, so the choice follows the P-tuning v2 authors' DeBERTa code (their modified
v1 and v2 files prepend past keys): a query scores a prefix key by content alone (the same
1/sqrt(head_dim * factor) scale, zero c2p/p2c terms), and the relative terms between real tokens
are computed over the real tokens only, as without a prefix.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.models.attention import dot_product_attention, make_attention_mask, prepend_prefix_mask
from ptjax.models.disentangled import conv_after_first_layer, disentangled_bias, relative_index
from ptjax.models.last_layer_rows import pooled_at_first, query_rows, rows_only, stack_computing_rows
from ptjax.models.layer_stacks import layer_stack
from ptjax.models.layers import (
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
class DebertaConfig:
    version: int  # 1: DeBERTa; 2: DeBERTa-v2 and v3
    vocab_size: int
    hidden_size: int
    embedding_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    position_biased_input: bool = True  # absolute position embeddings added to the input
    relative_attention: bool = False
    pos_att_type: tuple[str, ...] = ()  # subset of ("c2p", "p2c")
    max_relative_positions: int = 512
    position_buckets: int = -1  # v2: > 0 for log-spaced distance buckets
    share_att_key: bool = False  # v2: the relative table goes through the query/key projections
    norm_rel_ebd: bool = False  # v2: LayerNorm on the relative table
    conv_kernel_size: int = 0  # v2: convolution after the first layer (0: none)
    conv_groups: int = 1
    conv_act: str = "tanh"
    pooler_act: str = "gelu"
    has_pooler: bool = False
    has_mlm_head: bool = False
    mlm_names: str = ""  # "legacy" (cls.predictions.*) or "lm_predictions"
    attention_impl: str = ""

    @property
    def relative_span(self) -> int:
        """Half the rows of the relative table: distances map to [0, 2 * span)."""
        return self.position_buckets if self.version == 2 and self.position_buckets > 0 else self.max_relative_positions

    @property
    def score_scale(self) -> float:
        # transformers v1 counts every pos_att_type entry, v2 only c2p and p2c: equal for both here.
        return 1.0 / math.sqrt(self.head_dim * (1 + len(self.pos_att_type)))


# --------------------------------------------------------------------------------------------
# Layers.


class DebertaLayer(nn.Module):
    """Disentangled self-attention + feed-forward, post-LayerNorm.

    __call__(hidden, prefix_kv, layer_index, context) -> (hidden, hidden); context holds what
    every layer shares: mask, the relative table and index, and the inputs of v2's convolution.
    """

    config: DebertaConfig
    dtype: Any = jnp.float32
    deterministic: bool = True

    @nn.compact
    def __call__(self, hidden, prefix_kv, layer_index, context, query_index=None):
        """query_index [batch, n]: compute the output at these positions only (keys and values
        still from every position; last_layer_rows.stack_computing_rows). Not for layer 0 of a model with
        v2's convolution, which reads every position."""
        cfg, dt = self.config, self.dtype
        heads, head_dim = cfg.num_heads, cfg.head_dim
        dense = functools.partial(Dense, (heads, head_dim), ("embed",), ("heads", "kv"), dtype=dt)
        query_proj = dense(name="query")
        key_proj = Dense((heads, head_dim), ("embed",), ("kv_heads", "kv"), use_bias=cfg.version == 2, dtype=dt,
                         name="key")
        keys_from, mask, rel_index = hidden, context["mask"], context.get("rel_index")
        if query_index is not None:
            hidden, mask = query_rows(hidden, query_index), query_rows(mask, query_index, axis=2)
            rel_index = None if rel_index is None else query_rows(jnp.asarray(rel_index)[None], query_index)
        query, key = query_proj(hidden), key_proj(keys_from)
        value = Dense((heads, head_dim), ("embed",), ("kv_heads", "kv"), dtype=dt, name="value")(keys_from)
        bias = None
        if cfg.relative_attention and cfg.pos_att_type:
            table = Dropout(cfg.hidden_dropout)(context["rel_embeddings"], deterministic=self.deterministic)
            pos_key = pos_query = None
            if "c2p" in cfg.pos_att_type:
                pos_key = key_proj(table) if cfg.share_att_key else dense(use_bias=cfg.version == 2, name="pos_key")(table)
            if "p2c" in cfg.pos_att_type:
                pos_query = query_proj(table) if cfg.share_att_key else dense(name="pos_query")(table)
            bias = disentangled_bias(query, key, pos_query, pos_key, rel_index, dt) * cfg.score_scale
        prefix_key = prefix_value = None
        if prefix_kv is not None:
            prefix_key, prefix_value, prefix_mask = prefix_kv
            mask = prepend_prefix_mask(mask, prefix_mask)
            if bias is not None:  # prefix keys: content score only (see the module docstring)
                bias = jnp.pad(bias, ((0, 0), (0, 0), (0, 0), (prefix_key.shape[1], 0)))
        dropout_rng = None if self.deterministic or cfg.attention_dropout == 0 else self.make_rng("dropout")
        attn = dot_product_attention(
            query, key, value, mask, prefix_key=prefix_key, prefix_value=prefix_value, bias=bias,
            scale=cfg.score_scale, dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng,
            implementation=cfg.attention_impl or None,
        )
        attn = Dense(cfg.hidden_size, ("heads", "kv"), ("embed",), dtype=dt, name="attention_output")(attn)
        attn = Dropout(cfg.hidden_dropout)(attn, deterministic=self.deterministic)
        hidden = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="attention_norm")(attn + hidden)

        inner = Dense(cfg.intermediate_size, ("embed",), ("mlp",), dtype=dt, name="intermediate")(hidden)
        inner = constrain(activate(cfg.hidden_act, inner), ("batch", "length", "mlp"))
        out = Dense(cfg.hidden_size, ("mlp",), ("embed",), dtype=dt, name="output")(inner)
        out = Dropout(cfg.hidden_dropout)(out, deterministic=self.deterministic)
        hidden = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="output_norm")(out + hidden)
        if cfg.conv_kernel_size > 0 and query_index is None:
            conv_rng = None if self.deterministic or cfg.hidden_dropout == 0 else self.make_rng("dropout")
            hidden = jax.lax.cond(
                layer_index == 0,
                lambda h: conv_after_first_layer(cfg, context["conv"], context["embeddings"], h,
                                                  context["token_mask"], conv_rng),
                lambda h: h, hidden)
        hidden = constrain(hidden, ("batch", "length", "embed"))
        return hidden, hidden


class DebertaModel(nn.Module):
    """input_ids / inputs_embeds [batch, length] -> BackboneOutput (v1 and v2 alike).

    inputs_embeds [batch, length, embedding_size] replaces the word-embedding lookup only.
    """

    config: DebertaConfig
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"

    def setup(self):
        cfg, dt = self.config, self.dtype
        self.word_embeddings = Embed(cfg.vocab_size, cfg.embedding_size, dtype=dt)
        if cfg.position_biased_input:
            self.position_embeddings = Embed(cfg.max_position_embeddings, cfg.embedding_size, (None, "embed"), dtype=dt)
        if cfg.type_vocab_size > 0:
            self.token_type_embeddings = Embed(cfg.type_vocab_size, cfg.embedding_size, (None, "embed"), dtype=dt)
        if cfg.embedding_size != cfg.hidden_size:
            self.embed_proj = Dense(cfg.hidden_size, (None,), ("embed",), use_bias=False, dtype=dt)
        self.embeddings_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)
        self.embeddings_dropout = Dropout(cfg.hidden_dropout)
        if cfg.relative_attention:
            self.rel_embeddings = Embed(2 * cfg.relative_span, cfg.hidden_size, (None, "embed"), dtype=dt)
            if cfg.norm_rel_ebd:
                self.rel_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)
        if cfg.conv_kernel_size > 0:
            shape = (cfg.conv_kernel_size, cfg.hidden_size // cfg.conv_groups, cfg.hidden_size)
            self.conv_kernel = self.param("conv_kernel", nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (None, None, "embed")), shape)
            self.conv_bias = self.param("conv_bias", nn.with_logical_partitioning(
                nn.initializers.zeros, ("embed",)), (cfg.hidden_size,))
            self.conv_norm_scale = self.param("conv_norm_scale", nn.with_logical_partitioning(
                nn.initializers.ones, ("embed",)), (cfg.hidden_size,))
            self.conv_norm_bias = self.param("conv_norm_bias", nn.with_logical_partitioning(
                nn.initializers.zeros, ("embed",)), (cfg.hidden_size,))
        if cfg.has_pooler:
            self.pooler = Dense(cfg.hidden_size, ("embed",), (None,), dtype=dt)
        if cfg.has_mlm_head:
            self.mlm_transform = Dense(cfg.embedding_size, ("embed",), (None,), dtype=dt)
            self.mlm_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)
            self.mlm_bias = self.param(
                "mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,)
            )

    def embed_tokens(self, input_ids):
        """[batch, length] -> [batch, length, embedding_size]: what inputs_embeds replaces."""
        return self.word_embeddings(input_ids)

    def lm_logits(self, hidden):
        """MLM head on any hidden states [..., embed] -> float32 logits [..., vocab]."""
        if not self.config.has_mlm_head:
            raise ValueError("this checkpoint has no MLM head (cls.predictions.* / lm_predictions.*): "
                             "use a [CLS] or token head")
        x = self.mlm_norm(activate(self.config.hidden_act, self.mlm_transform(hidden)))
        return self.word_embeddings.attend(x) + self.mlm_bias.astype(jnp.float32)

    @nn.compact
    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        *,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        prefix: PrefixKV | None = None,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
        deterministic: bool = True,
        query_positions=None,
    ) -> BackboneOutput:
        """query_positions [batch, n] int32: the caller reads the output at these positions
        only; the last layer computes just those rows
        (BackboneOutput.positions says so), unless it is v2's first layer, which convolves every
        position. Not with output_hidden_states."""
        cfg = self.config
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), jnp.int32)
        token_mask = attention_mask.astype(jnp.float32)
        hidden = inputs_embeds.astype(self.dtype)
        if cfg.position_biased_input:
            if position_ids is None:
                position_ids = jnp.broadcast_to(jnp.arange(length), (batch, length))
            hidden = hidden + self.position_embeddings(position_ids)
        if cfg.type_vocab_size > 0:
            if token_type_ids is None:
                token_type_ids = jnp.zeros((batch, length), jnp.int32)
            hidden = hidden + self.token_type_embeddings(token_type_ids)
        if cfg.embedding_size != cfg.hidden_size:
            hidden = self.embed_proj(hidden)
        hidden = self.embeddings_norm(hidden) * token_mask[..., None].astype(self.dtype)
        hidden = self.embeddings_dropout(hidden, deterministic=deterministic)
        hidden = constrain(hidden, ("batch", "length", "embed"))

        context = {"mask": make_attention_mask(attention_mask, query_length=length, key_length=length, causal=False)}
        if cfg.relative_attention:
            table = self.rel_embeddings.embedding
            context["rel_embeddings"] = self.rel_norm(table) if cfg.norm_rel_ebd else table.astype(self.dtype)
            context["rel_index"] = relative_index(cfg, length)
        if cfg.conv_kernel_size > 0:
            conv = {"kernel": self.conv_kernel, "bias": self.conv_bias, "norm_scale": self.conv_norm_scale,
                    "norm_bias": self.conv_norm_bias}
            context.update(conv=conv, embeddings=hidden, token_mask=token_mask)
        prefix_kv = None if prefix is None else prefix.for_layers()
        one_convolved_layer = cfg.conv_kernel_size > 0 and cfg.num_layers == 1
        positions = query_positions if rows_only(query_positions, one_convolved_layer, output_hidden_states) else None
        layer_kwargs = {"dtype": self.dtype, "deterministic": deterministic, "name": "layers"}
        all_hidden = None
        if positions is not None:
            last = stack_computing_rows(DebertaLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                                        scan_layers=self.scan_layers,
                                        in_axes=(0, 0, nn.broadcast))(cfg, **layer_kwargs)(
                hidden, prefix_kv, jnp.arange(cfg.num_layers), context, query_index=positions)
        else:
            stack = layer_stack(
                DebertaLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                scan_layers=self.scan_layers, in_axes=(0, 0, nn.broadcast),
            )(cfg, **layer_kwargs)
            last, per_layer = stack(hidden, prefix_kv, jnp.arange(cfg.num_layers), context)
            all_hidden = jnp.concatenate([hidden[None], per_layer]) if output_hidden_states else None

        pool = lambda x: activate(cfg.pooler_act, self.pooler(x))
        pooled = pooled_at_first(pool, last, positions) if cfg.has_pooler else None
        logits = self.lm_logits(last) if compute_logits and cfg.has_mlm_head else None
        return BackboneOutput(last_hidden_state=last, hidden_states=all_hidden, logits=logits, pooled=pooled,
                              positions=positions)


# --------------------------------------------------------------------------------------------
# Checkpoint mapping.

_MLM_NAMES = {
    "legacy": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
    "lm_predictions": ("lm_predictions.lm_head.dense", "lm_predictions.lm_head.LayerNorm",
                       "lm_predictions.lm_head.bias"),
}


def _config_from_hf(hf, names: frozenset[str], version: int) -> DebertaConfig:
    where = f"config.json (model_type={hf.model_type})"
    if getattr(hf, "talking_head", False):
        raise InputError(f"{where}: talking_head=True is not supported by ptjax's DeBERTa")
    pos_att_type = tuple(t for t in (hf.pos_att_type or ()) if t in ("c2p", "p2c"))
    if set(hf.pos_att_type or ()) - {"c2p", "p2c"}:
        raise InputError(f"{where}: pos_att_type {hf.pos_att_type} has terms ptjax's DeBERTa lacks (c2p, p2c only)")
    max_relative = hf.max_relative_positions if hf.max_relative_positions >= 1 else hf.max_position_embeddings
    mlm = next((kind for kind, (dense, _, _) in _MLM_NAMES.items() if dense + ".weight" in names), "")
    norm_rel = "layer_norm" in [x.strip() for x in str(getattr(hf, "norm_rel_ebd", "none")).lower().split("|")]
    return DebertaConfig(
        version=version, vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
        embedding_size=getattr(hf, "embedding_size", None) or hf.hidden_size,
        num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
        head_dim=getattr(hf, "attention_head_size", None) or hf.hidden_size // hf.num_attention_heads,
        intermediate_size=hf.intermediate_size, max_position_embeddings=hf.max_position_embeddings,
        type_vocab_size=hf.type_vocab_size, layer_norm_eps=hf.layer_norm_eps, hidden_act=hf.hidden_act,
        hidden_dropout=hf.hidden_dropout_prob, attention_dropout=hf.attention_probs_dropout_prob,
        position_biased_input=getattr(hf, "position_biased_input", True),
        relative_attention=bool(getattr(hf, "relative_attention", False)), pos_att_type=pos_att_type,
        max_relative_positions=max_relative,
        position_buckets=getattr(hf, "position_buckets", -1) if version == 2 else -1,
        share_att_key=bool(getattr(hf, "share_att_key", False)) and version == 2,
        norm_rel_ebd=norm_rel and version == 2,
        conv_kernel_size=getattr(hf, "conv_kernel_size", 0) if version == 2 else 0,
        conv_groups=getattr(hf, "conv_groups", 1), conv_act=getattr(hf, "conv_act", "tanh"),
        pooler_act=getattr(hf, "pooler_hidden_act", "gelu"),
        has_pooler="pooler.dense.weight" in names, has_mlm_head=bool(mlm), mlm_names=mlm,
    )


def _weight_map(cfg: DebertaConfig) -> dict[tuple[str, ...], TensorRule]:
    heads, head_dim, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    t = lambda w: w.T
    to_heads = lambda w: w.T.reshape(d, heads, head_dim)
    split_bias = lambda b: b.reshape(heads, head_dim)
    layer = "encoder.layer.{i}."
    attn = layer + "attention.self."
    rules = {
        ("word_embeddings", "embedding"): TensorRule("embeddings.word_embeddings.weight"),
        ("embeddings_norm", "scale"): TensorRule("embeddings.LayerNorm.weight"),
        ("embeddings_norm", "bias"): TensorRule("embeddings.LayerNorm.bias"),
    }
    if cfg.position_biased_input:
        rules[("position_embeddings", "embedding")] = TensorRule("embeddings.position_embeddings.weight")
    if cfg.type_vocab_size > 0:
        rules[("token_type_embeddings", "embedding")] = TensorRule("embeddings.token_type_embeddings.weight")
    if cfg.embedding_size != cfg.hidden_size:
        rules[("embed_proj", "kernel")] = TensorRule("embeddings.embed_proj.weight", t)
    if cfg.version == 1:
        # in_proj.weight [heads * 3 * head_dim, embed]: per head, the query, key and value rows.
        def fused(part):
            return lambda w: w.reshape(heads, 3, head_dim, d)[:, part].transpose(2, 0, 1)
        for part, ours in enumerate(("query", "key", "value")):
            rules[("layers", ours, "kernel")] = TensorRule(attn + "in_proj.weight", fused(part))
        rules[("layers", "query", "bias")] = TensorRule(attn + "q_bias", split_bias)
        rules[("layers", "value", "bias")] = TensorRule(attn + "v_bias", split_bias)
        relative = {"pos_key": ("pos_proj", False), "pos_query": ("pos_q_proj", True)}
    else:
        for ours in ("query", "key", "value"):
            rules[("layers", ours, "kernel")] = TensorRule(attn + f"{ours}_proj.weight", to_heads)
            rules[("layers", ours, "bias")] = TensorRule(attn + f"{ours}_proj.bias", split_bias)
        relative = {"pos_key": ("pos_key_proj", True), "pos_query": ("pos_query_proj", True)}
    if cfg.relative_attention:
        rules[("rel_embeddings", "embedding")] = TensorRule("encoder.rel_embeddings.weight")
        if cfg.norm_rel_ebd:
            rules[("rel_norm", "scale")] = TensorRule("encoder.LayerNorm.weight")
            rules[("rel_norm", "bias")] = TensorRule("encoder.LayerNorm.bias")
        for ours, term in (("pos_key", "c2p"), ("pos_query", "p2c")):
            if term in cfg.pos_att_type and not cfg.share_att_key:
                theirs, has_bias = relative[ours]
                rules[("layers", ours, "kernel")] = TensorRule(attn + theirs + ".weight", to_heads)
                if has_bias:
                    rules[("layers", ours, "bias")] = TensorRule(attn + theirs + ".bias", split_bias)
    from_heads = lambda w: w.T.reshape(heads, head_dim, d)
    for ours, theirs, transform in (("attention_output", "attention.output.dense", from_heads),
                                    ("intermediate", "intermediate.dense", t), ("output", "output.dense", t)):
        rules[("layers", ours, "kernel")] = TensorRule(layer + theirs + ".weight", transform)
        rules[("layers", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    for ours, theirs in (("attention_norm", "attention.output.LayerNorm"), ("output_norm", "output.LayerNorm")):
        rules[("layers", ours, "scale")] = TensorRule(layer + theirs + ".weight")
        rules[("layers", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    if cfg.conv_kernel_size > 0:  # torch Conv1d [out, in / groups, width] -> [width, in / groups, out]
        rules[("conv_kernel",)] = TensorRule("encoder.conv.conv.weight", lambda w: w.transpose(2, 1, 0))
        rules[("conv_bias",)] = TensorRule("encoder.conv.conv.bias")
        rules[("conv_norm_scale",)] = TensorRule("encoder.conv.LayerNorm.weight")
        rules[("conv_norm_bias",)] = TensorRule("encoder.conv.LayerNorm.bias")
    if cfg.has_pooler:
        rules[("pooler", "kernel")] = TensorRule("pooler.dense.weight", t)
        rules[("pooler", "bias")] = TensorRule("pooler.dense.bias")
    if cfg.has_mlm_head:
        dense, norm, bias = _MLM_NAMES[cfg.mlm_names]
        rules[("mlm_transform", "kernel")] = TensorRule(dense + ".weight", t)
        rules[("mlm_transform", "bias")] = TensorRule(dense + ".bias")
        rules[("mlm_norm", "scale")] = TensorRule(norm + ".weight")
        rules[("mlm_norm", "bias")] = TensorRule(norm + ".bias")
        rules[("mlm_bias",)] = TensorRule(bias)
    return rules


def _build(cfg: DebertaConfig, *, dtype=jnp.float32, scan_layers=True, remat_policy="none") -> DebertaModel:
    return DebertaModel(cfg, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy)


def _example_inputs(cfg: DebertaConfig) -> dict:
    return {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}


def _kind(cfg: DebertaConfig) -> str:
    return "masked_lm" if cfg.has_mlm_head else "encoder"


DEBERTA = Family(
    name="deberta", model_types=("deberta",),
    config_from_hf=lambda hf, names: _config_from_hf(hf, names, version=1),
    build=_build, weight_map=_weight_map, example_inputs=_example_inputs, kind=_kind,
    checkpoint_prefixes=("deberta.",),
    query_positions=True,
)

DEBERTA_V2 = Family(
    name="deberta-v2", model_types=("deberta-v2",),
    config_from_hf=lambda hf, names: _config_from_hf(hf, names, version=2),
    build=_build, weight_map=_weight_map, example_inputs=_example_inputs, kind=_kind,
    checkpoint_prefixes=("deberta.",),
    query_positions=True,
)

FAMILIES = (DEBERTA, DEBERTA_V2)
