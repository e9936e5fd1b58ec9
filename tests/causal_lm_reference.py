"""PyTorch references for the decoder tests (GPT-2 and the Llama family).

transformers models run the same right-padded batch as ptjax; deep prompts go to them as a
DynamicCache (the prefix K/V a KV cache would hold) with the attention mask extended, or, where
only some layers carry the prompt, through a layer-by-layer loop that gives a cache to those
layers alone.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import transformers
from tiny_models import ptjax_forward as ptjax_forward  # the decoder tests call ref.ptjax_forward

from ptjax.models.layers import PrefixKV

# A right-padded batch: rows of 9, 6 and 3 real tokens (ids avoid the special tokens 0-5).
LENGTHS = (9, 6, 3)
SEQ_LEN = 9
PREFIX_LEN = 3


def padded_batch(vocab_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, vocab_size, size=(len(LENGTHS), SEQ_LEN)).astype(np.int32)
    mask = (np.arange(SEQ_LEN)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, 1).astype(np.int32), mask


def random_prefix(num_layers: int, kv_heads: int, head_dim: int, seed: int = 1):
    """keys, values [layers, batch, PREFIX_LEN, kv_heads, head_dim]; slot mask [batch, PREFIX_LEN]
    with the last slot of row 1 switched off (a prefix can have padding too)."""
    rng = np.random.default_rng(seed)
    shape = (num_layers, len(LENGTHS), PREFIX_LEN, kv_heads, head_dim)
    keys = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    prefix_mask = np.ones((len(LENGTHS), PREFIX_LEN), np.int32)
    prefix_mask[1, -1] = 0
    return keys, values, prefix_mask


def max_diff(ours, theirs, mask: np.ndarray) -> float:
    """Largest |ours - theirs| over real-token positions (axes [..., batch, length, features])."""
    ours, theirs = np.asarray(ours, np.float32), np.asarray(theirs, np.float32)
    return float(np.abs(ours - theirs)[..., mask.astype(bool), :].max())


def to_prefix(keys, values, prefix_mask, layer_mask=None) -> PrefixKV:
    return PrefixKV(
        keys=jnp.asarray(keys), values=jnp.asarray(values), mask=jnp.asarray(prefix_mask),
        layer_mask=None if layer_mask is None else jnp.asarray(layer_mask),
    )


def _cache(keys, values, layers) -> transformers.DynamicCache:
    """A DynamicCache holding the prefix of the given layers ([b, P, kv, hd] -> [b, kv, P, hd])."""
    cache = transformers.DynamicCache()
    for i in layers:
        cache.update(torch.tensor(keys[i]).transpose(1, 2), torch.tensor(values[i]).transpose(1, 2), i)
    return cache


@torch.no_grad()
def torch_forward(model, ids, mask, prefix=None):
    """(hidden states [layers + 1, b, t, d], logits [b, t, vocab]) as numpy.

    prefix: (keys, values, prefix_mask) given as past_key_values, with explicit position ids
    0..t-1 so real tokens keep their positions.
    """
    kwargs = {}
    if prefix is not None:
        keys, values, prefix_mask = prefix
        kwargs = {
            "past_key_values": _cache(keys, values, range(keys.shape[0])),
            "position_ids": torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1),
        }
        mask = np.concatenate([prefix_mask, mask], axis=1)
    out = model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                output_hidden_states=True, use_cache=prefix is not None, **kwargs)
    return np.stack([h.numpy() for h in out.hidden_states]), out.logits.numpy()


@torch.no_grad()
def torch_layerwise_logits(model, ids, mask, keys, values, prefix_mask, layer_mask) -> np.ndarray:
    """Logits with the prefix given only to the layers where layer_mask is True, run one decoder
    layer at a time (a whole-model call shares one cache length across layers)."""
    ids_t = torch.tensor(ids, dtype=torch.long)
    length = ids.shape[1]
    positions = torch.arange(length)[None].expand(ids.shape[0], -1)
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    own_mask = causal[None, None] & torch.tensor(mask, dtype=torch.bool)[:, None, None, :]
    prefix_cols = torch.tensor(prefix_mask, dtype=torch.bool)[:, None, None, :].expand(-1, 1, length, -1)
    with_prefix_mask = torch.cat([prefix_cols, own_mask], dim=-1)

    if isinstance(model, transformers.GPT2LMHeadModel):
        body = model.transformer
        hidden = body.wte(ids_t) + body.wpe(positions)
        layers, final_norm, extra = body.h, body.ln_f, {}
    else:
        body = model.model
        hidden = body.embed_tokens(ids_t)
        extra = {"position_ids": positions, "position_embeddings": body.rotary_emb(hidden, positions)}
        layers, final_norm = body.layers, body.norm
    for i, layer in enumerate(layers):
        if layer_mask[i]:
            hidden = layer(hidden, attention_mask=with_prefix_mask, past_key_values=_cache(keys, values, [i]),
                           use_cache=True, **extra)
        else:
            hidden = layer(hidden, attention_mask=own_mask, **extra)
    return model.lm_head(final_norm(hidden)).numpy()
