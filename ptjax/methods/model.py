"""PromptModel: a backbone, the prompts a method adds to it, and a head (train.interfaces.Model).

    params = {"backbone": frozen weights, "prompt": {"soft": ..., "deep": ...}, "head": ...}

Forward pass, one jitted function for every method:
  1. token embeddings of the input ids (the backbone's own lookup);
  2. soft prompt vectors (P-tuning / Lester), produced by `soft_prompt`, replace the embeddings
     at the template's soft slots (`insert_soft_prompts`);
  3. deep prompts (P-tuning v2) become per-layer prefix keys/values (`deep_prompt`); with
     `shift_positions` the real tokens' position ids start after the prefix, as transformers
     numbers tokens that follow past_key_values (PEFT prefix tuning, the P-tuning v2 code);
  4. the backbone runs on the embeddings; the head scores its outputs.
Multiple-choice batches ([batch, options, length] fields) are flattened to
[batch * options, length] for the backbone. Which top-level groups train is the method's
choice (`trainable`); the engine differentiates only those.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import PartitionSpec

from ptjax.errors import InputError
from ptjax.models.loading import Backbone
from ptjax.prompts.banks import BANK_AXIS, BankTraining
from ptjax.prompts.insertion import insert_soft_prompts

# Batch fields that carry the backbone input (flattened for multiple choice).
SEQUENCE_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "soft_index", "decoder_input_ids",
                   "decoder_attention_mask")
PER_EXAMPLE_FIELDS = ("prompt_id", "task_id")


@dataclasses.dataclass
class PromptModel:
    """backbone: opened with open_backbone (weights are read in init_params).
    head: a ptjax.heads head. soft_prompt: a PromptEncoder (or None); deep_prompt: a DeepPrompt
    for the (encoder) stack, decoder_deep_prompt for a T5 decoder (or None).
    trainable: top-level groups that train ("prompt", "head", "backbone").
    metadata: JSON-able method description for prompt exports.
    """

    backbone: Backbone
    head: Any
    soft_prompt: nn.Module | None = None
    deep_prompt: nn.Module | None = None
    decoder_deep_prompt: nn.Module | None = None
    trainable: frozenset = frozenset({"prompt", "head"})
    metadata: dict = dataclasses.field(default_factory=dict)
    # (loaded backbone) -> (make, arrays): make(*arrays) is the soft prompt's initializer
    # (vocabulary / text init read the embeddings); None: the encoder's own random init.
    soft_prompt_init: Callable[[Backbone], tuple[Callable, tuple]] | None = None
    # Deep prompts shift the position ids of the real tokens by the prefix length.
    shift_positions: bool = False
    # The backbone's last layer computes only the positions the head reads, where both allow it
    # (config.model.prune_last_layer; `read_positions`).
    prune_last_layer: bool = True

    # ------------------------------------------------------------------------------------
    # Parameters.

    @property
    def fingerprint(self) -> str:
        if self.backbone.fingerprint is None:
            raise RuntimeError("the backbone weights are not loaded yet (init_params reads them)")
        return self.backbone.fingerprint

    def _prompt_modules(self) -> dict[str, nn.Module]:
        modules = {"soft": self.soft_prompt, "deep": self.deep_prompt, "decoder_deep": self.decoder_deep_prompt}
        return {name: module for name, module in modules.items() if module is not None}

    def _init_own(self, rng, soft_prompt: nn.Module | None = None) -> tuple[dict, dict]:
        """(params, logical axes) of the prompt modules and the head (small; replicated).
        soft_prompt: the soft prompt module to initialize, when its initializer differs."""
        params, axes = {}, {}
        prompt_rng, head_rng = jax.random.split(rng)
        prompt_params, prompt_axes = {}, {}
        modules = self._prompt_modules()
        if soft_prompt is not None:
            modules["soft"] = soft_prompt
        for i, (name, module) in enumerate(sorted(modules.items())):
            variables = module.init({"params": jax.random.fold_in(prompt_rng, i)})
            prompt_params[name] = nn.meta.unbox(variables["params"])
            prompt_axes[name] = nn.get_partition_spec(variables)["params"]
        if prompt_params:
            params["prompt"], axes["prompt"] = prompt_params, prompt_axes
        head_params, head_axes = self.head.init(head_rng, self.hidden_size)
        if head_params:
            params["head"], axes["head"] = head_params, head_axes
        return params, axes

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states heads read: the embedding width but where embeddings are
        factorized and projected up (ALBERT)."""
        return getattr(self.backbone.config, "hidden_size", None) or embedding_width(self.backbone)

    def abstract_params(self) -> tuple[dict, dict]:
        axes = {}

        def init():  # logical axes are static metadata: keep them while tracing abstractly
            params, axes["own"] = self._init_own(jax.random.PRNGKey(0))
            return params

        own_shapes = jax.eval_shape(init)
        return ({"backbone": self.backbone.shapes, **own_shapes},
                {"backbone": self.backbone.logical_axes, **axes["own"]})

    def init_params(self, rng, shardings: dict) -> dict:
        if self.backbone.params is None:
            self.backbone.load_weights(shardings["backbone"])
        own_shardings = {k: v for k, v in shardings.items() if k != "backbone"}
        make_init, arrays = (None, ()) if self.soft_prompt_init is None else self.soft_prompt_init(self.backbone)

        def init(key, arrays):  # the initializer's arrays are arguments, not compiled-in constants
            soft_prompt = None if make_init is None else self.soft_prompt.clone(table_init=make_init(*arrays))
            return self._init_own(key, soft_prompt)[0]

        own = jax.jit(init, out_shardings=own_shardings)(rng, tuple(arrays))
        return {"backbone": self.backbone.params, **own}

    def is_trainable(self, path: tuple[str, ...]) -> bool:
        return path[0] in self.trainable

    @functools.cached_property
    def bank(self) -> BankTraining | None:
        """How the train step and optimizer treat a bank of prompts (num_prompts > 0, one picked per
        example by prompt_id): each entry trains as if alone (ptjax.prompts.banks). None without one."""
        sizes = {getattr(module, "num_prompts", 0) for module in self._prompt_modules().values()} - {0}
        if not sizes or "prompt" not in self.trainable:
            return None
        if len(sizes) > 1:
            raise ValueError(f"prompt banks of different sizes {sorted(sizes)} in one model")
        _, axes = self.abstract_params()
        flat = traverse_util.flatten_dict(axes["prompt"], is_leaf=lambda _, x: isinstance(x, PartitionSpec))
        banked = frozenset(("prompt",) + path for path, spec in flat.items() if len(spec) and spec[0] == BANK_AXIS)
        return BankTraining(num_entries=sizes.pop(), is_bank_leaf=banked.__contains__)

    def export_metadata(self) -> dict:
        return dict(self.metadata)

    # ------------------------------------------------------------------------------------
    # Forward.

    def _forward(self, params: dict, batch: dict, *, train: bool, rng):
        """-> (BackboneOutput, lm_logits function, batch with flattened options)."""
        batch = flatten_options(batch)
        module, variables = self.backbone.module, {"params": params["backbone"]}
        prompt_params = params.get("prompt", {})
        dropout_rng, prompt_rng = (jax.random.split(rng) if rng is not None else (None, None))
        deterministic = not train
        ids = batch["input_ids"]
        embeds = module.apply(variables, ids, method="embed_tokens")
        if self.soft_prompt is not None:
            vectors = self.soft_prompt.apply({"params": prompt_params["soft"]})
            embeds = insert_soft_prompts(embeds, batch["soft_index"], vectors, batch.get("prompt_id"))
        kwargs = {}
        for name, key in (("deep", "prefix"), ("decoder_deep", "decoder_prefix")):
            module_ = self._prompt_modules().get(name)
            if module_ is not None:
                # Only prefix dropout needs a prefix per example; otherwise one prefix is shared by the
                # batch (a per-example copy would be materialized and summed back in the backward pass).
                dropout = train and prompt_rng is not None and getattr(module_, "dropout_rate", 0.0) > 0
                rngs = {"dropout": jax.random.fold_in(prompt_rng, len(key))} if dropout else {}
                kwargs[key] = module_.apply(
                    {"params": prompt_params[name]}, prompt_id=batch.get("prompt_id"),
                    batch_size=ids.shape[0] if rngs else None, deterministic=deterministic, rngs=rngs,
                )
        if self.shift_positions and "prefix" in kwargs:
            kwargs["position_ids"] = shifted_position_ids(self.backbone, batch["attention_mask"],
                                                          kwargs["prefix"].length)
        if "token_type_ids" in batch and self.backbone.family.name in ("bert", "albert"):
            kwargs["token_type_ids"] = batch["token_type_ids"]
        if self.backbone.kind == "seq2seq":
            kwargs["decoder_input_ids"] = batch["decoder_input_ids"]
            kwargs["decoder_attention_mask"] = batch.get("decoder_attention_mask")
        positions = self.read_positions(batch)
        if positions is not None:
            kwargs["query_positions"] = positions
        rngs = {"dropout": dropout_rng} if train and dropout_rng is not None else {}
        outputs = module.apply(
            variables, attention_mask=batch["attention_mask"], inputs_embeds=embeds, compute_logits=False,
            deterministic=deterministic, rngs=rngs, **kwargs,
        )

        def lm_logits(hidden):
            return module.apply(variables, hidden, method="lm_logits")

        return outputs, lm_logits, batch

    def read_positions(self, batch: dict) -> jax.Array | None:
        """int32 [batch, n]: the positions of the backbone's output the head reads, when the last
        layer may compute only those (the head says so, the family supports it, the model asks
        for no hidden states); None: every position."""
        read = getattr(self.head, "read_positions", None)
        if not (self.prune_last_layer and read is not None and self.backbone.family.query_positions):
            return None
        return read(batch)

    def loss(self, params, batch, rng, *, train: bool):
        head_rng = None if rng is None else jax.random.fold_in(rng, 1)
        outputs, lm_logits, batch = self._forward(params, batch, train=train, rng=rng)
        return self.head.loss(params.get("head", {}), outputs, lm_logits, batch, train=train, rng=head_rng)

    def predict(self, params, batch):
        outputs, lm_logits, batch = self._forward(params, batch, train=False, rng=None)
        return self.head.predict(params.get("head", {}), outputs, lm_logits, batch)


def flatten_options(batch: dict) -> dict:
    """[batch, options, length] sequence fields -> [batch * options, length]; per-example fields
    (prompt_id, task_id) repeat per option. Batches without "option_mask" pass unchanged."""
    if "option_mask" not in batch:
        return batch
    options = batch["option_mask"].shape[1]
    flat = dict(batch)
    for name in SEQUENCE_FIELDS:
        if name in batch:
            flat[name] = batch[name].reshape((-1,) + batch[name].shape[2:])
    for name in PER_EXAMPLE_FIELDS:
        if name in batch:
            flat[name] = jnp.repeat(batch[name], options, axis=0)
    return flat


def shifted_position_ids(backbone: Backbone, attention_mask: jax.Array, offset: int) -> jax.Array:
    """int32 [batch, length] position ids of real tokens that follow `offset` prefix positions,
    as transformers numbers them after past_key_values of that length: offset, offset + 1, ...
    (RoBERTa: counted over real tokens from padding_idx + 1 + offset, padding at padding_idx)."""
    if backbone.kind == "seq2seq":
        raise ValueError("shifted positions are defined for absolute or rotary positions, not T5's relative ones")
    batch, length = attention_mask.shape
    table = getattr(backbone.config, "max_position_embeddings", None)
    if getattr(backbone.config, "position_offset_from_padding", False) and table:
        table -= backbone.config.pad_token_id + 1  # RoBERTa numbers real tokens from padding_idx + 1
    if table and offset + length > table:  # checked while tracing: a lookup past the table would clamp
        raise InputError(f"a prefix of {offset} and inputs padded to {length} tokens need {offset + length} "
                         f"positions; {backbone.name} has {table} (shorten config.task.max_length or the prefix, "
                         "or set config.prompt.deep.shift_positions=False)")
    if getattr(backbone.config, "position_offset_from_padding", False):
        mask = attention_mask.astype(jnp.int32)
        return (jnp.cumsum(mask, axis=1) + offset) * mask + backbone.config.pad_token_id
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32) + offset, (batch, length))


def embedding_width(backbone: Backbone) -> int:
    """Width of the token embeddings (what soft prompts must match), without running anything."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    out = jax.eval_shape(lambda p, i: backbone.module.apply({"params": p}, i, method="embed_tokens"),
                         backbone.shapes, ids)
    return int(out.shape[-1])


def embedding_rows(backbone: Backbone, token_ids) -> np.ndarray:
    """float32 [len(token_ids), embed]: the loaded backbone's input embeddings of these tokens."""
    ids = jnp.asarray(np.asarray(token_ids, np.int32)[None])
    rows = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens")[0]
    return np.asarray(jax.device_get(rows), np.float32)
