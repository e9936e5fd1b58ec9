"""ALBERT encoder: factorized embeddings, one layer shared by every depth, MLM head and pooler.

Matches transformers' AlbertModel / AlbertForMaskedLM. Tokens are embedded in a narrow space
(embedding_size, 128 in the published models) and mapped to the hidden width once; the encoder
applies the same post-LayerNorm layer num_hidden_layers times (a scan whose parameters are
broadcast, not stacked: one copy in memory, no `layers` axis). The published checkpoints all
have one layer group of one layer (num_hidden_groups = inner_group_num = 1), the only layout
ptjax reads.

Deep prompts: ALBERT's positions are absolute, so prefix keys/values are prepended to each
application's keys as for BERT; each depth takes its own prefix (the layer's weights are shared,
a P-tuning v2 prompt per depth is not).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.models.attention import make_attention_mask
from ptjax.models.bert import BertLayer
from ptjax.models.last_layer_rows import pooled_at_first, rows_only, stack_computing_rows
from ptjax.models.layer_stacks import REMAT_POLICIES
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
class AlbertConfig:
    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu_new"
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    has_pooler: bool = True
    has_mlm_head: bool = True
    attention_impl: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class AlbertLayer(BertLayer):
    """BERT's post-LN layer (ALBERT's config has the same fields), without dropout on the
    feed-forward output."""

    feed_forward_dropout: bool = False


def shared_layer_stack(*, num_layers: int, remat_policy: str = "none", scan_layers: bool = True):
    """AlbertLayer applied num_layers times with one set of parameters (broadcast over the scan);
    per-depth arguments (the prefix) are sliced on their leading axis, the mask is shared."""
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
    layer_cls = AlbertLayer
    if remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)
    return nn.scan(
        layer_cls, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
        in_axes=(0, nn.broadcast), length=num_layers, unroll=1 if scan_layers else num_layers,
    )


class AlbertModel(nn.Module):
    """input_ids / inputs_embeds [batch, length] -> BackboneOutput.

    inputs_embeds [batch, length, embedding_size] replaces the word-embedding lookup only.
    hidden_states[0] is the embedding output after its mapping to the hidden width.
    """

    config: AlbertConfig
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"

    def setup(self):
        cfg, dt = self.config, self.dtype
        self.word_embeddings = Embed(cfg.vocab_size, cfg.embedding_size, dtype=dt)
        self.position_embeddings = Embed(cfg.max_position_embeddings, cfg.embedding_size, (None, "embed"), dtype=dt)
        self.token_type_embeddings = Embed(cfg.type_vocab_size, cfg.embedding_size, (None, "embed"), dtype=dt)
        self.embeddings_norm = LayerNorm(cfg.layer_norm_eps, dtype=dt)
        self.embeddings_dropout = Dropout(cfg.hidden_dropout)
        self.embedding_projection = Dense(cfg.hidden_size, (None,), ("embed",), dtype=dt)
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
        """MLM head on any hidden states [..., hidden] -> float32 logits [..., vocab]."""
        if not self.config.has_mlm_head:
            raise ValueError("this checkpoint has no MLM head (predictions.*): use a [CLS] or token head")
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
        only; the last application of the shared layer
        computes just those rows (BackboneOutput.positions says so). Not with output_hidden_states."""
        cfg = self.config
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length), (batch, length))
        if token_type_ids is None:
            token_type_ids = jnp.zeros((batch, length), jnp.int32)
        hidden = (inputs_embeds.astype(self.dtype) + self.position_embeddings(position_ids)
                  + self.token_type_embeddings(token_type_ids))
        hidden = self.embeddings_dropout(self.embeddings_norm(hidden), deterministic=deterministic)
        hidden = constrain(self.embedding_projection(hidden), ("batch", "length", "embed"))

        mask = make_attention_mask(attention_mask, query_length=length, key_length=length, causal=False)
        prefix_kv = None if prefix is None else prefix.for_layers()
        positions = query_positions if rows_only(query_positions, False, output_hidden_states) else None
        all_hidden = None
        if positions is not None:
            last = stack_computing_rows(
                AlbertLayer, num_layers=cfg.num_layers, remat_policy=self.remat_policy, in_axes=(0, nn.broadcast),
                shared_stack=lambda n: shared_layer_stack(num_layers=n, remat_policy=self.remat_policy,
                                                          scan_layers=self.scan_layers),
            )(cfg, dtype=self.dtype, deterministic=deterministic, name="layer")(
                hidden, prefix_kv, mask, query_index=positions)
        else:
            stack = shared_layer_stack(num_layers=cfg.num_layers, remat_policy=self.remat_policy,
                                       scan_layers=self.scan_layers)
            last, per_layer = stack(cfg, dtype=self.dtype, deterministic=deterministic, name="layer")(
                hidden, prefix_kv, mask)
            all_hidden = jnp.concatenate([hidden[None], per_layer]) if output_hidden_states else None

        pooled = pooled_at_first(lambda x: jnp.tanh(self.pooler(x)), last, positions) if cfg.has_pooler else None
        logits = self.lm_logits(last) if compute_logits and cfg.has_mlm_head else None
        return BackboneOutput(last_hidden_state=last, hidden_states=all_hidden, logits=logits, pooled=pooled,
                              positions=positions)


# --------------------------------------------------------------------------------------------
# Checkpoint mapping.


def _config_from_hf(hf, names: frozenset[str]) -> AlbertConfig:
    if hf.num_hidden_groups != 1 or hf.inner_group_num != 1:
        raise InputError(f"config.json (model_type=albert): num_hidden_groups={hf.num_hidden_groups}, "
                         f"inner_group_num={hf.inner_group_num}; ptjax reads ALBERT with one shared layer "
                         f"(both 1, as every published checkpoint)")
    return AlbertConfig(
        vocab_size=hf.vocab_size, embedding_size=hf.embedding_size, hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings, type_vocab_size=hf.type_vocab_size,
        layer_norm_eps=hf.layer_norm_eps, hidden_act=hf.hidden_act, hidden_dropout=hf.hidden_dropout_prob,
        attention_dropout=hf.attention_probs_dropout_prob,
        has_pooler="pooler.weight" in names, has_mlm_head="predictions.dense.weight" in names,
    )


def _weight_map(cfg: AlbertConfig) -> dict[tuple[str, ...], TensorRule]:
    heads, head_dim, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    t = lambda w: w.T
    layer = "encoder.albert_layer_groups.0.albert_layers.0."
    rules = {
        ("word_embeddings", "embedding"): TensorRule("embeddings.word_embeddings.weight"),
        ("position_embeddings", "embedding"): TensorRule("embeddings.position_embeddings.weight"),
        ("token_type_embeddings", "embedding"): TensorRule("embeddings.token_type_embeddings.weight"),
        ("embeddings_norm", "scale"): TensorRule("embeddings.LayerNorm.weight"),
        ("embeddings_norm", "bias"): TensorRule("embeddings.LayerNorm.bias"),
        ("embedding_projection", "kernel"): TensorRule("encoder.embedding_hidden_mapping_in.weight", t),
        ("embedding_projection", "bias"): TensorRule("encoder.embedding_hidden_mapping_in.bias"),
    }
    for ours in ("query", "key", "value"):
        rules[("layer", ours, "kernel")] = TensorRule(
            layer + f"attention.{ours}.weight", lambda w: w.T.reshape(d, heads, head_dim))
        rules[("layer", ours, "bias")] = TensorRule(layer + f"attention.{ours}.bias",
                                                     lambda b: b.reshape(heads, head_dim))
    for ours, theirs, transform in (
        ("attention_output", "attention.dense", lambda w: w.T.reshape(heads, head_dim, d)),
        ("intermediate", "ffn", t),
        ("output", "ffn_output", t),
    ):
        rules[("layer", ours, "kernel")] = TensorRule(layer + theirs + ".weight", transform)
        rules[("layer", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    for ours, theirs in (("attention_norm", "attention.LayerNorm"), ("output_norm", "full_layer_layer_norm")):
        rules[("layer", ours, "scale")] = TensorRule(layer + theirs + ".weight")
        rules[("layer", ours, "bias")] = TensorRule(layer + theirs + ".bias")
    if cfg.has_pooler:
        rules[("pooler", "kernel")] = TensorRule("pooler.weight", t)
        rules[("pooler", "bias")] = TensorRule("pooler.bias")
    if cfg.has_mlm_head:
        rules[("mlm_transform", "kernel")] = TensorRule("predictions.dense.weight", t)
        rules[("mlm_transform", "bias")] = TensorRule("predictions.dense.bias")
        rules[("mlm_norm", "scale")] = TensorRule("predictions.LayerNorm.weight")
        rules[("mlm_norm", "bias")] = TensorRule("predictions.LayerNorm.bias")
        rules[("mlm_bias",)] = TensorRule("predictions.bias")
    return rules


def _build(cfg: AlbertConfig, *, dtype=jnp.float32, scan_layers=True, remat_policy="none") -> AlbertModel:
    return AlbertModel(cfg, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy)


def _example_inputs(cfg: AlbertConfig) -> dict:
    return {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}


ALBERT = Family(
    name="albert", model_types=("albert",), config_from_hf=_config_from_hf, build=_build,
    weight_map=_weight_map, example_inputs=_example_inputs,
    kind=lambda cfg: "masked_lm" if cfg.has_mlm_head else "encoder", checkpoint_prefixes=("albert.",),
    shared_layer="layer", query_positions=True,
)

FAMILIES = (ALBERT,)
