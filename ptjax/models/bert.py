"""BERT and RoBERTa encoders (post-LayerNorm), with optional pooler and MLM head.

Matches transformers' BertModel / BertForMaskedLM / RobertaForMaskedLM. RoBERTa differs only in
its position ids (counted from padding_idx + 1 over real tokens) and checkpoint names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ptjax.models.attention import dot_product_attention, make_attention_mask, prepend_prefix_mask
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
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    # RoBERTa: position ids start after padding_idx and skip padding.
    position_offset_from_padding: bool = False
    pad_token_id: int = 0
    has_pooler: bool = True
    has_mlm_head: bool = True
    # Attention kernel (ptjax.models.attention.dot_product_attention): "" (ptjax's), "auto", "xla" or "cudnn".
    attention_impl: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class BertLayer(nn.Module):
    """Self-attention + feed-forward, each followed by residual and LayerNorm (post-LN)."""

    config: BertConfig
    dtype: Any = jnp.float32
    deterministic: bool = True
    # transformers' ALBERT layer has no dropout on the feed-forward output; BERT's has.
    feed_forward_dropout: bool = True

    @nn.compact
    def __call__(self, hidden, prefix_kv, mask, query_index=None):
        """query_index [batch, n]: compute the output at these positions only (keys and values
        still from every position; last_layer_rows.stack_computing_rows)."""
        cfg, dt = self.config, self.dtype
        heads, head_dim = cfg.num_heads, cfg.head_dim
        keys_from = hidden
        if query_index is not None:
            hidden, mask = query_rows(hidden, query_index), query_rows(mask, query_index, axis=2)
        q = Dense((heads, head_dim), ("embed",), ("heads", "kv"), dtype=dt, name="query")(hidden)
        k = Dense((heads, head_dim), ("embed",), ("kv_heads", "kv"), dtype=dt, name="key")(keys_from)
        v = Dense((heads, head_dim), ("embed",), ("kv_heads", "kv"), dtype=dt, name="value")(keys_from)
        prefix_key = prefix_value = None
        if prefix_kv is not None:
            prefix_key, prefix_value, prefix_mask = prefix_kv
            mask = prepend_prefix_mask(mask, prefix_mask)
        dropout_rng = None if self.deterministic or cfg.attention_dropout == 0 else self.make_rng("dropout")
        attn = dot_product_attention(
            q, k, v, mask, prefix_key=prefix_key, prefix_value=prefix_value,
            dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng, implementation=cfg.attention_impl or None,
        )
        attn = Dense(cfg.hidden_size, ("heads", "kv"), ("embed",), dtype=dt, name="attention_output")(attn)
        attn = Dropout(cfg.hidden_dropout)(attn, deterministic=self.deterministic)
        hidden = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="attention_norm")(attn + hidden)

        inner = Dense(cfg.intermediate_size, ("embed",), ("mlp",), dtype=dt, name="intermediate")(hidden)
        inner = constrain(activate(cfg.hidden_act, inner), ("batch", "length", "mlp"))
        out = Dense(cfg.hidden_size, ("mlp",), ("embed",), dtype=dt, name="output")(inner)
        if self.feed_forward_dropout:
            out = Dropout(cfg.hidden_dropout)(out, deterministic=self.deterministic)
        hidden = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="output_norm")(out + hidden)
        hidden = constrain(hidden, ("batch", "length", "embed"))
        return hidden, hidden


class BertModel(nn.Module):
    """input_ids / inputs_embeds [batch, length] -> BackboneOutput.

    inputs_embeds [batch, length, embed] replaces the word-embedding lookup only; position and
    token-type embeddings are added to it, as in transformers.
    """

    config: BertConfig
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"

    def setup(self):
        cfg, dt = self.config, self.dtype
        self.word_embeddings = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dt)
        self.position_embeddings = Embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"), dtype=dt)
        self.token_type_embeddings = Embed(cfg.type_vocab_size, cfg.hidden_size, (None, "embed"), dtype=dt)
        self.embeddings_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)
        self.embeddings_dropout = Dropout(cfg.hidden_dropout)
        if cfg.has_pooler:
            self.pooler = Dense(cfg.hidden_size, ("embed",), (None,), dtype=dt)
        if cfg.has_mlm_head:
            self.mlm_transform = Dense(cfg.hidden_size, ("embed",), (None,), dtype=dt)
            self.mlm_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)
            self.mlm_bias = self.param(
                "mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,)
            )

    def embed_tokens(self, input_ids):
        """[batch, length] -> [batch, length, embed]: what inputs_embeds replaces."""
        return self.word_embeddings(input_ids)

    def lm_logits(self, hidden):
        """MLM head on any hidden states [..., embed] -> float32 logits [..., vocab]."""
        if not self.config.has_mlm_head:
            raise ValueError("this checkpoint has no MLM head (cls.predictions.*): use a [CLS] or token head")
        x = activate(self.config.hidden_act, self.mlm_transform(hidden))
        x = self.mlm_norm(x)
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
        (BackboneOutput.positions says so). Not with output_hidden_states."""
        cfg = self.config
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = self._position_ids(attention_mask, batch, length)
        if token_type_ids is None:
            token_type_ids = jnp.zeros((batch, length), jnp.int32)
        hidden = (inputs_embeds.astype(self.dtype) + self.position_embeddings(position_ids)
                  + self.token_type_embeddings(token_type_ids))
        hidden = self.embeddings_dropout(self.embeddings_norm(hidden), deterministic=deterministic)
        hidden = constrain(hidden, ("batch", "length", "embed"))

        mask = make_attention_mask(attention_mask, query_length=length, key_length=length, causal=False)
        prefix_kv = None if prefix is None else prefix.for_layers()
        layer_kwargs = {"dtype": self.dtype, "deterministic": deterministic, "name": "layers"}
        positions = query_positions if rows_only(query_positions, False, output_hidden_states) else None
        all_hidden = None
        if positions is not None:
            last = stack_computing_rows(BertLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                                        scan_layers=self.scan_layers,
                                        in_axes=(0, nn.broadcast))(cfg, **layer_kwargs)(
                hidden, prefix_kv, mask, query_index=positions)
        else:
            stack = layer_stack(
                BertLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                scan_layers=self.scan_layers, in_axes=(0, nn.broadcast),
            )(cfg, **layer_kwargs)
            last, per_layer = stack(hidden, prefix_kv, mask)
            all_hidden = jnp.concatenate([hidden[None], per_layer]) if output_hidden_states else None

        pooled = pooled_at_first(lambda x: jnp.tanh(self.pooler(x)), last, positions) if cfg.has_pooler else None
        logits = self.lm_logits(last) if compute_logits and cfg.has_mlm_head else None
        return BackboneOutput(last_hidden_state=last, hidden_states=all_hidden, logits=logits, pooled=pooled,
                              positions=positions)

    def _position_ids(self, mask, batch, length):
        if not self.config.position_offset_from_padding:
            return jnp.broadcast_to(jnp.arange(length), (batch, length))
        pad = self.config.pad_token_id
        if mask is None:
            return jnp.broadcast_to(jnp.arange(length) + pad + 1, (batch, length))
        mask = mask.astype(jnp.int32)
        return jnp.cumsum(mask, axis=1) * mask + pad


# --------------------------------------------------------------------------------------------
# Checkpoint mapping.


def _config_from_hf(hf, names: frozenset[str], roberta: bool) -> BertConfig:
    return BertConfig(
        vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings, type_vocab_size=hf.type_vocab_size,
        layer_norm_eps=hf.layer_norm_eps, hidden_act=hf.hidden_act,
        hidden_dropout=hf.hidden_dropout_prob, attention_dropout=hf.attention_probs_dropout_prob,
        position_offset_from_padding=roberta, pad_token_id=hf.pad_token_id or 0,
        has_pooler="pooler.dense.weight" in names,
        has_mlm_head=_mlm_names(roberta)[0] in names,
    )


def _mlm_names(roberta: bool) -> tuple[str, str, str, str, str]:
    if roberta:
        return ("lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
                "lm_head.layer_norm.bias", "lm_head.bias")
    return ("cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
            "cls.predictions.bias")


def _weight_map(cfg: BertConfig, roberta: bool) -> dict[tuple[str, ...], TensorRule]:
    heads, head_dim, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    t = lambda w: w.T  # noqa: E731  PyTorch Linear stores [out, in]
    to_heads = lambda w: w.T.reshape(d, heads, head_dim)  # noqa: E731
    from_heads = lambda w: w.T.reshape(heads, head_dim, d)  # noqa: E731
    split_bias = lambda b: b.reshape(heads, head_dim)  # noqa: E731
    layer = "encoder.layer.{i}."
    rules = {
        ("word_embeddings", "embedding"): TensorRule("embeddings.word_embeddings.weight"),
        ("position_embeddings", "embedding"): TensorRule("embeddings.position_embeddings.weight"),
        ("token_type_embeddings", "embedding"): TensorRule("embeddings.token_type_embeddings.weight"),
        ("embeddings_norm", "scale"): TensorRule("embeddings.LayerNorm.weight"),
        ("embeddings_norm", "bias"): TensorRule("embeddings.LayerNorm.bias"),
    }
    for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
        rules[("layers", ours, "kernel")] = TensorRule(layer + f"attention.self.{theirs}.weight", to_heads)
        rules[("layers", ours, "bias")] = TensorRule(layer + f"attention.self.{theirs}.bias", split_bias)
    for ours, theirs, transform in (
        ("attention_output", "attention.output.dense", from_heads),
        ("intermediate", "intermediate.dense", t),
        ("output", "output.dense", t),
    ):
        rules[("layers", ours, "kernel")] = TensorRule(layer + theirs + ".weight", transform)
        rules[("layers", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    for ours, theirs in (("attention_norm", "attention.output.LayerNorm"), ("output_norm", "output.LayerNorm")):
        rules[("layers", ours, "scale")] = TensorRule(layer + theirs + ".weight")
        rules[("layers", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    if cfg.has_pooler:
        rules[("pooler", "kernel")] = TensorRule("pooler.dense.weight", t)
        rules[("pooler", "bias")] = TensorRule("pooler.dense.bias")
    if cfg.has_mlm_head:
        dense_w, dense_b, norm_w, norm_b, bias = _mlm_names(roberta)
        rules[("mlm_transform", "kernel")] = TensorRule(dense_w, t)
        rules[("mlm_transform", "bias")] = TensorRule(dense_b)
        rules[("mlm_norm", "scale")] = TensorRule(norm_w)
        rules[("mlm_norm", "bias")] = TensorRule(norm_b)
        rules[("mlm_bias",)] = TensorRule(bias)
    return rules


def _build(cfg: BertConfig, *, dtype=jnp.float32, scan_layers=True, remat_policy="none") -> BertModel:
    return BertModel(cfg, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy)


def _example_inputs(cfg: BertConfig) -> dict:
    return {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}


def _kind(cfg: BertConfig) -> str:
    return "masked_lm" if cfg.has_mlm_head else "encoder"


BERT = Family(
    name="bert",
    model_types=("bert",),
    config_from_hf=lambda hf, names: _config_from_hf(hf, names, roberta=False),
    build=_build,
    weight_map=lambda cfg: _weight_map(cfg, roberta=False),
    example_inputs=_example_inputs,
    kind=_kind,
    checkpoint_prefixes=("bert.",),
    query_positions=True,
)

ROBERTA = Family(
    name="roberta",
    model_types=("roberta", "xlm-roberta"),
    config_from_hf=lambda hf, names: _config_from_hf(hf, names, roberta=True),
    build=_build,
    weight_map=lambda cfg: _weight_map(cfg, roberta=True),
    example_inputs=_example_inputs,
    kind=_kind,
    checkpoint_prefixes=("roberta.",),
    query_positions=True,
)

FAMILIES = (BERT, ROBERTA)
