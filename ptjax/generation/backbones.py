"""Prefill and one decoding step for each backbone kind, prompts injected, over a KVCache.

Causal LMs (GPT-2, the Llama family). Cache slots, the same for every row:

    [deep prompt: P slots][prompt tokens, left-aligned to the right: L slots][generated: N slots]

A batch arrives left-padded (ptjax.generation.generator moves every row's tokens to the end), so
generated token t of every row goes to slot P + L + t and one step serves the whole batch; each
row's own position ids (counted from its first real token, after its prefix when positions
shift) and its slot mask make the padding invisible. The deep prompt is written into the first
P slots of every layer before the prompt runs (its mask per layer and example), so a P-tuning v2
prefix is in the cache from the start, exactly like transformers' past_key_values.

T5: the encoder runs once (soft prompt in its inputs_embeds, deep prompt as its prefix); the
decoder's cache holds its own deep prompt, if any, then the start token and generated tokens;
the first decoder call also stores the cross-attention keys/values of the encoder output.
"""

from __future__ import annotations

import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from ptjax.generation.bank import PromptBank, gather_prefix
from ptjax.models.kv_cache import KVCache
from ptjax.models.layer_stacks import unstack_layer_params
from ptjax.models.layers import WEIGHTS_FIRST_KERNEL, Dense, PrefixKV
from ptjax.prompts.insertion import insert_soft_prompts

Array = jax.Array


@struct.dataclass
class Batch:
    """input_ids, attention_mask, soft_index: int32 [batch, length], left-padded (soft_index -1
    where the token is real text); prompt_id: int32 [batch], each row's bank entry."""

    input_ids: Array
    attention_mask: Array
    soft_index: Array
    prompt_id: Array


@struct.dataclass
class CausalContext:
    """next_position: int32 [rows], the position id of generated token 0; first_slot: its slot."""

    next_position: Array
    first_slot: int = struct.field(pytree_node=False)


@struct.dataclass
class Seq2SeqContext:
    encoder_hidden: Array   # [rows, source, embed]
    encoder_mask: Array     # [rows, source]
    first_slot: int = struct.field(pytree_node=False)


def _cache_dims(config, decoder: bool = False) -> tuple[int, int, int]:
    layers = config.num_decoder_layers if decoder else config.num_layers
    kv_heads = getattr(config, "num_kv_heads", None) or config.num_heads
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None)
    return layers, kv_heads, head_dim


def _input_embeddings(module, params, bank: PromptBank, batch: Batch) -> Array:
    embeds = module.apply({"params": params}, batch.input_ids, method="embed_tokens")
    if bank.soft is not None:
        embeds = insert_soft_prompts(embeds, batch.soft_index, bank.soft, batch.prompt_id)
    return embeds


def _logits(module, params, hidden: Array, weights_first: bool = False) -> Array:
    return module.apply({"params": params}, hidden, weights_first, method="lm_logits").astype(jnp.float32)


class _Decoder:
    """Equal for equal backbone modules: a jit static argument, so generators share compilations."""

    def __init__(self, module, config, weights_first: bool = False):
        self.module, self.config, self.weights_first = module, config, weights_first

    @property
    def per_layer_cache(self) -> bool:
        """A module with per-layer weights (an unrolled layer loop) takes the per-layer cache layout."""
        return bool(getattr(self.module, "per_layer_params", False))

    def __eq__(self, other):
        return type(self) is type(other) and (self.module, self.weights_first) == (other.module, other.weights_first)

    def __hash__(self):
        return hash((type(self), self.module, self.weights_first))


class CausalLM(_Decoder):
    """Decoding functions for a causal LM backbone (module: GPT2Model or LlamaModel)."""

    def prefill(self, params, bank: PromptBank, batch: Batch, max_new_tokens: int
                ) -> tuple[Array, KVCache, CausalContext]:
        """Run the prompt; -> (next-token logits [batch, vocab], cache, context)."""
        rows, length = batch.input_ids.shape
        prefix = bank.prefix_slots
        layers, kv_heads, head_dim = _cache_dims(self.config)
        cache = KVCache.empty(layers, rows, prefix + length + max_new_tokens, kv_heads, head_dim, self.module.dtype,
                              per_layer=self.per_layer_cache)
        real = batch.attention_mask.astype(bool)
        slot_mask = jnp.zeros((layers, rows, cache.slots), bool)
        slot_mask = slot_mask.at[:, :, prefix:prefix + length].set(real[None])
        if prefix:
            keys, values, mask = gather_prefix(bank.prefix_keys, bank.prefix_values, bank.prefix_mask,
                                               batch.prompt_id)
            cache = cache.written_at(0, keys, values)
            slot_mask = slot_mask.at[:, :, :prefix].set(mask)
        offset = bank.position_offset(batch.prompt_id)
        counted = jnp.cumsum(real, axis=1, dtype=jnp.int32)  # 1.. over each row's real tokens
        positions = offset[:, None] + jnp.maximum(counted - 1, 0)
        out = self.module.apply(
            {"params": params}, inputs_embeds=_input_embeddings(self.module, params, bank, batch),
            position_ids=positions, cache=cache.replace(mask=slot_mask, index=jnp.asarray(prefix, jnp.int32)),
            compute_logits=False,
        )
        logits = _logits(self.module, params, out.last_hidden_state[:, -1], self.weights_first)
        context = CausalContext(next_position=offset + counted[:, -1], first_slot=prefix + length)
        return logits, out.cache, context

    def step(self, params):
        def step(cache: KVCache, context: CausalContext, tokens: Array, t: Array) -> tuple[Array, KVCache]:
            slot = context.first_slot + t
            cache = cache.replace(mask=jax.lax.dynamic_update_slice_in_dim(
                cache.mask, jnp.ones(cache.mask.shape[:2] + (1,), bool), slot, axis=2), index=slot)
            embeds = self.module.apply({"params": params}, tokens[:, None], method="embed_tokens")
            out = self.module.apply({"params": params}, inputs_embeds=embeds,
                                    position_ids=(context.next_position + t)[:, None], cache=cache,
                                    compute_logits=False)
            return _logits(self.module, params, out.last_hidden_state[:, 0], self.weights_first), out.cache
        return step

    @staticmethod
    def reorder(cache: KVCache, context: CausalContext, rows: Array):
        return cache.take_rows(rows), context.replace(next_position=context.next_position[rows])


class Seq2SeqLM(_Decoder):
    """Decoding functions for T5 (module: T5Model)."""

    def prefill(self, params, bank: PromptBank, batch: Batch, max_new_tokens: int
                ) -> tuple[Array, KVCache, Seq2SeqContext]:
        """Encode, then feed the decoder start token; -> (logits [batch, vocab], cache, context)."""
        rows = batch.input_ids.shape[0]
        prefix = None
        if bank.prefix_keys is not None:
            keys, values, mask = gather_prefix(bank.prefix_keys, bank.prefix_values, bank.prefix_mask,
                                               batch.prompt_id)
            # PrefixKV has one layer range for the batch: the bank's prompts must share it here.
            prefix = PrefixKV(keys=keys, values=values, mask=jnp.any(mask, axis=0),
                              layer_mask=jnp.any(mask, axis=(1, 2)))
        encoded = self.module.apply(
            {"params": params}, attention_mask=batch.attention_mask,
            inputs_embeds=_input_embeddings(self.module, params, bank, batch), prefix=prefix, method="encode",
        ).last_hidden_state
        decoder_prefix = bank.decoder_prefix_slots
        layers, kv_heads, head_dim = _cache_dims(self.config, decoder=True)
        cache = KVCache.empty(layers, rows, decoder_prefix + 1 + max_new_tokens, kv_heads, head_dim,
                              self.module.dtype, per_layer=self.per_layer_cache)
        slot_mask = jnp.zeros((layers, rows, cache.slots), bool).at[:, :, decoder_prefix].set(True)
        if decoder_prefix:
            keys, values, mask = gather_prefix(bank.decoder_prefix_keys, bank.decoder_prefix_values,
                                               bank.decoder_prefix_mask, batch.prompt_id)
            cache = cache.written_at(0, keys, values)
            slot_mask = slot_mask.at[:, :, :decoder_prefix].set(mask)
        start = jnp.full((rows, 1), self.config.decoder_start_token_id, jnp.int32)
        out = self.module.apply(
            {"params": params}, start, encoded, batch.attention_mask,
            cache=cache.replace(mask=slot_mask, index=jnp.asarray(decoder_prefix, jnp.int32)),
            compute_logits=False, method="decode",
        )
        logits = _logits(self.module, params, out.last_hidden_state[:, 0], self.weights_first)
        return logits, out.cache, Seq2SeqContext(encoded, batch.attention_mask, first_slot=decoder_prefix + 1)

    def step(self, params):
        def step(cache: KVCache, context: Seq2SeqContext, tokens: Array, t: Array) -> tuple[Array, KVCache]:
            slot = context.first_slot + t
            cache = cache.replace(mask=jax.lax.dynamic_update_slice_in_dim(
                cache.mask, jnp.ones(cache.mask.shape[:2] + (1,), bool), slot, axis=2), index=slot)
            out = self.module.apply({"params": params}, tokens[:, None], context.encoder_hidden, context.encoder_mask,
                                    cache=cache, compute_logits=False, method="decode")
            return _logits(self.module, params, out.last_hidden_state[:, 0], self.weights_first), out.cache
        return step

    @staticmethod
    def reorder(cache: KVCache, context: Seq2SeqContext, rows: Array):
        # Beams of one example share its encoder output; only the self-attention cache moves.
        return cache.take_rows(rows), context


def decoder_for(backbone, per_layer_params: bool = False, weights_first: bool = False):
    """CausalLM or Seq2SeqLM for a loaded ptjax Backbone (ptjax.models.loading). per_layer_params:
    its module takes decoding_params(backbone, ...) instead of backbone.params; weights_first: the LM
    head's table goes first in the logits product (with decoding_params(..., weights_first=True))."""
    from ptjax.errors import InputError

    module = backbone.module.clone(per_layer_params=True) if per_layer_params else backbone.module
    if backbone.kind == "causal_lm":
        return CausalLM(module, backbone.config, weights_first)
    if backbone.kind == "seq2seq":
        return Seq2SeqLM(module, backbone.config, weights_first)
    raise InputError(f"{backbone.name} is a {backbone.kind} backbone; generation needs a causal LM or T5")


_DECODING_PARAMS: dict[tuple[int, bool], tuple[dict, dict]] = {}  # (id(backbone), weights_first) -> (params, copy)


def decoding_params(backbone, weights_first: bool = False) -> dict:
    """backbone.params with each layer's weights in arrays of their own (layer_stack(per_layer_params=
    True)), made once per backbone and kept while it lives: a second copy of the layer weights.
    weights_first: every Dense kernel stored transposed, [*features, *in] under WEIGHTS_FIRST_KERNEL,
    so that its products with a step's few rows run weights-first (ptjax.models.layers)."""
    key = (id(backbone), bool(weights_first))
    if key not in _DECODING_PARAMS or _DECODING_PARAMS[key][0] is not backbone.params:
        if key not in _DECODING_PARAMS:
            weakref.finalize(backbone, _DECODING_PARAMS.pop, key, None)
        params = unstack_layer_params(backbone.params)
        if weights_first:
            _transpose_kernels(backbone, params)
        _DECODING_PARAMS[key] = (backbone.params, params)
    return _DECODING_PARAMS[key][1]


def _transpose_kernels(backbone, params: dict) -> None:
    """In `params` (unstack_layer_params' layout, its own copies), replace each Dense layer's
    "kernel" [*in, *features] by its transpose [*features, *in], one array at a time. Which axes
    are inputs: recorded from the Dense modules themselves while the backbone's init is traced
    abstractly; a stacked module's path through "layers" stands for each layer's own path."""
    ranks = {}

    def record(call, args, kwargs, context):
        if isinstance(context.module, Dense) and context.method_name == "__call__":
            ranks[context.module.path] = len(context.module.in_axes)
        return call(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: backbone.module.init(jax.random.PRNGKey(0), **backbone.family.example_inputs(backbone.config)))
    for path, n_in in ranks.items():
        nodes = [params]
        for name in path:
            nodes = [node[name] for node in nodes]
            if name == "layers":  # {"0": layer 0's tree, ...}
                nodes = [layer for node in nodes for layer in node.values()]
        for node in nodes:
            kernel = node.pop("kernel")
            order = list(range(n_in, kernel.ndim)) + list(range(n_in))
            node[WEIGHTS_FIRST_KERNEL] = jnp.transpose(kernel, order)
