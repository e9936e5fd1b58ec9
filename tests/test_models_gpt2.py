"""GPT-2 against transformers' GPT2LMHeadModel: layers, logits, deep prompts, bf16."""

import causal_lm_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models

from ptjax.models.loading import load_backbone

TOLERANCE = 1e-4
# Largest |bf16 - f32| logit difference allowed over real tokens; measured 2.7e-3 on this 2-layer
# model (logits up to ~0.4).
BF16_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def gpt2(tiny_model_dir):
    path = tiny_model_dir("gpt2")
    return load_backbone(path), tiny_models.reference_model("gpt2", path), path


def test_fused_attention_is_split_into_query_key_value(gpt2):
    backbone, torch_model, _ = gpt2
    layers = backbone.params["layers"]
    fused = torch_model.transformer.h[1].attn.c_attn.weight.detach().numpy()  # [in, 3 * out]
    d = backbone.config.hidden_size
    for index, name in enumerate(("query", "key", "value")):
        kernel = np.asarray(layers[name]["kernel"][1])  # [embed, heads, head_dim]
        np.testing.assert_array_equal(kernel.reshape(d, d), fused[:, index * d:(index + 1) * d])
    assert backbone.kind == "causal_lm" and "lm_head" not in backbone.params


def test_hidden_states_and_logits_match_transformers(gpt2):
    backbone, torch_model, _ = gpt2
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    hidden, logits = ref.torch_forward(torch_model, ids, mask)
    assert out.hidden_states.shape == hidden.shape == (3, 3, ref.SEQ_LEN, 32)
    assert ref.max_diff(out.hidden_states, hidden, mask) <= TOLERANCE
    assert ref.max_diff(out.logits, logits, mask) <= TOLERANCE


def test_deep_prompt_matches_a_transformers_kv_cache(gpt2):
    backbone, torch_model, _ = gpt2
    cfg = backbone.config
    ids, mask = ref.padded_batch(cfg.vocab_size)
    keys, values, prefix_mask = ref.random_prefix(cfg.num_layers, cfg.num_heads, cfg.head_dim)
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                            prefix=ref.to_prefix(keys, values, prefix_mask))
    hidden, logits = ref.torch_forward(torch_model, ids, mask, prefix=(keys, values, prefix_mask))
    assert ref.max_diff(out.hidden_states, hidden, mask) <= TOLERANCE
    assert ref.max_diff(out.logits, logits, mask) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("layer_mask", [(False, True), (True, False)])
def test_layer_mask_matches_prefix_on_those_layers_only(gpt2, layer_mask):
    backbone, torch_model, _ = gpt2
    cfg = backbone.config
    ids, mask = ref.padded_batch(cfg.vocab_size)
    keys, values, prefix_mask = ref.random_prefix(cfg.num_layers, cfg.num_heads, cfg.head_dim)
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                            prefix=ref.to_prefix(keys, values, prefix_mask, np.array(layer_mask)))
    expected = ref.torch_layerwise_logits(torch_model, ids, mask, keys, values, prefix_mask, layer_mask)
    assert ref.max_diff(out.logits, expected, mask) <= TOLERANCE


@pytest.mark.slow
def test_inputs_embeds_equal_ids(gpt2):
    backbone, _, _ = gpt2
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    embeds = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens")
    from_ids = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    from_embeds = ref.ptjax_forward(backbone, inputs_embeds=embeds, attention_mask=mask)
    np.testing.assert_allclose(from_embeds.logits, from_ids.logits, atol=1e-6)


@pytest.mark.slow
def test_bf16_forward_stays_close_to_float32(gpt2):
    backbone, _, path = gpt2
    bf16 = load_backbone(path, dtype=jnp.bfloat16, with_tokenizer=False)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(bf16.params))
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    low = ref.ptjax_forward(bf16, input_ids=ids, attention_mask=mask)
    full = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    assert low.logits.dtype == jnp.float32 and np.isfinite(np.asarray(low.logits)).all()
    assert ref.max_diff(low.logits, full.logits, mask) <= BF16_TOLERANCE


@pytest.mark.slow
def test_jitted_forward_does_not_retrace(gpt2):
    backbone, _, _ = gpt2
    traces = []

    @jax.jit
    def logits(params, ids, mask):
        traces.append(ids.shape)
        return backbone.module.apply({"params": params}, ids, mask).logits

    a = logits(backbone.params, *ref.padded_batch(backbone.config.vocab_size, seed=0))
    b = logits(backbone.params, *ref.padded_batch(backbone.config.vocab_size, seed=1))
    assert len(traces) == 1 and not np.allclose(a, b)
