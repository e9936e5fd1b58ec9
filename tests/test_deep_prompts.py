"""Deep prompts (P-tuning v2): PrefixKV shapes, reparameterization, layer ranges, dropout, export,
and their effect on a real (tiny) backbone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.errors import InputError
from ptjax.models.loading import load_backbone
from ptjax.prompts import DeepPrompt, materialize_deep_prompt

LAYERS, HEADS, DIM, LENGTH = 4, 2, 8, 5


def init_params(deep):
    return jax.device_get(nn.unbox(jax.jit(deep.init)(jax.random.key(0))["params"]))


def init_and_apply(deep, **apply_kwargs):
    """(params, PrefixKV) from one compiled function, as numpy arrays (eager ops, even indexing,
    compile one by one: seconds apiece on a small CPU)."""

    @jax.jit
    def run(key):
        params = nn.unbox(deep.init(key)["params"])
        return params, deep.apply({"params": params}, **apply_kwargs)

    return jax.device_get(run(jax.random.key(0)))


def count(params):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


@pytest.fixture(scope="module")
def mlp_deep():
    deep = DeepPrompt(LAYERS, HEADS, DIM, LENGTH, reparam="mlp", embed_dim=12, hidden_dim=6)
    return deep, init_params(deep)


def test_direct_prefix_shapes_and_axes():
    deep = DeepPrompt(LAYERS, HEADS, DIM, LENGTH)
    variables = jax.eval_shape(deep.init, jax.random.key(0))
    params, prefix = init_and_apply(deep)
    assert prefix.keys.shape == prefix.values.shape == (LAYERS, 1, LENGTH, HEADS, DIM)
    assert prefix.length == LENGTH and prefix.mask is None and prefix.layer_mask is None
    table = params["prefix"]
    assert table.shape == (LENGTH, LAYERS, 2, HEADS, DIM)
    np.testing.assert_array_equal(prefix.keys[2, 0], table[:, 2, 0])
    np.testing.assert_array_equal(prefix.values[3, 0], table[:, 3, 1])
    spec = nn.get_partition_spec(variables)["params"]["prefix"]
    assert tuple(spec) == ("prompt", "layers", None, "kv_heads", "kv")
    assert not np.allclose(prefix.keys, prefix.values)


def test_mlp_reparameterization(mlp_deep):
    deep, params = mlp_deep
    per_position = LAYERS * 2 * HEADS * DIM
    assert count(params) == LENGTH * 12 + (12 * 6 + 6) + (6 * per_position + per_position)
    h, o = params["hidden"], params["output"]
    hidden = np.tanh(params["embedding"] @ h["kernel"] + h["bias"])
    flat = hidden @ o["kernel"].reshape(6, -1) + o["bias"].reshape(-1)
    expected = flat.reshape(LENGTH, LAYERS, 2, HEADS, DIM)  # per position: layer-major, then key/value
    prefix = jax.device_get(jax.jit(deep.apply)({"params": params}))
    np.testing.assert_allclose(prefix.keys[:, 0], expected[:, :, 0].transpose(1, 0, 2, 3), atol=1e-5)
    np.testing.assert_allclose(prefix.values[:, 0], expected[:, :, 1].transpose(1, 0, 2, 3), atol=1e-5)


def test_materialize_needs_no_mlp(mlp_deep):
    deep, params = mlp_deep
    plain, plain_params = materialize_deep_prompt(deep, params)
    assert plain.reparam == "none" and plain_params["prefix"].shape == (LENGTH, LAYERS, 2, HEADS, DIM)
    ours, theirs = jax.jit(plain.apply)({"params": plain_params}), jax.jit(deep.apply)({"params": params})
    np.testing.assert_allclose(ours.keys, theirs.keys, atol=1e-6)
    np.testing.assert_allclose(ours.values, theirs.values, atol=1e-6)


@pytest.mark.parametrize("layer_range, from_top, active", [
    ((0, 2), False, [True, True, False, False]),
    ((0, 2), True, [False, False, True, True]),
    ((1, 3), False, [False, True, True, False]),
    ((0, 1), True, [False, False, False, True]),
])
def test_layer_range_masks_and_parameters(layer_range, from_top, active):
    deep = DeepPrompt(LAYERS, HEADS, DIM, LENGTH, layer_range=layer_range, count_from_top=from_top)
    params, prefix = init_and_apply(deep)
    prompted = sum(active)
    assert params["prefix"].shape == (LENGTH, prompted, 2, HEADS, DIM)  # parameters only for prompted layers
    assert prefix.keys.shape == (LAYERS, 1, LENGTH, HEADS, DIM)
    assert prefix.layer_mask.tolist() == active
    for layer, on in enumerate(active):
        assert bool(np.any(prefix.keys[layer] != 0)) == on
    _, _, mask = prefix.for_layers()
    assert mask[:, 0, 0].tolist() == active


def test_bad_layer_range():
    with pytest.raises(InputError, match="layer_range"):
        DeepPrompt(LAYERS, HEADS, DIM, LENGTH, layer_range=(2, 9)).init(jax.random.key(0))
    with pytest.raises(InputError, match="layer_range"):
        DeepPrompt(LAYERS, HEADS, DIM, LENGTH, layer_range=(2, 2)).init(jax.random.key(0))


def test_bank_batch_broadcast_and_dropout():
    deep = DeepPrompt(LAYERS, HEADS, DIM, LENGTH, num_prompts=3, dropout_rate=0.5)
    params, prefix = init_and_apply(deep, prompt_id=jnp.array([2, 0, 2, 1]))
    assert params["prefix"].shape == (3, LENGTH, LAYERS, 2, HEADS, DIM)
    assert prefix.keys.shape == (LAYERS, 4, LENGTH, HEADS, DIM)
    np.testing.assert_array_equal(prefix.keys[:, 0], prefix.keys[:, 2])
    np.testing.assert_array_equal(prefix.keys[1, 1], params["prefix"][0, :, 1, 0])
    with pytest.raises(InputError, match="prompt_id"):
        deep.apply({"params": params})

    single = DeepPrompt(LAYERS, HEADS, DIM, LENGTH, dropout_rate=0.5)

    @jax.jit
    def clean_and_dropped(key):
        params = nn.unbox(single.init(key)["params"])
        return (single.apply({"params": params}, batch_size=3),
                single.apply({"params": params}, batch_size=3, deterministic=False, rngs={"dropout": key}))

    clean, dropped = jax.device_get(clean_and_dropped(jax.random.key(1)))
    assert clean.keys.shape == (LAYERS, 3, LENGTH, HEADS, DIM)
    zeros = np.asarray(dropped.keys == 0)
    assert 0.3 < zeros.mean() < 0.7 and not np.array_equal(zeros[:, 0], zeros[:, 1])  # per-example masks
    kept = ~zeros
    np.testing.assert_allclose(np.asarray(dropped.keys)[kept], 2 * np.asarray(clean.keys)[kept], rtol=1e-6)


@pytest.mark.slow
def test_prefix_on_a_tiny_bert_respects_the_layer_range(tiny_model_dir):
    backbone = load_backbone(tiny_model_dir("bert"))
    cfg = backbone.config
    encoded = backbone.tokenizer(["the capital of france is paris ."], return_tensors="np")
    ids = jnp.asarray(encoded["input_ids"], jnp.int32)
    deep = DeepPrompt(cfg.num_layers, cfg.num_heads, cfg.head_dim, 3, layer_range=(0, 1), count_from_top=True)
    params = init_params(deep)

    @jax.jit
    def forward(params, prefix_mask):
        prefix = deep.apply({"params": params}).replace(mask=prefix_mask)
        return backbone.module.apply({"params": backbone.params}, ids, jnp.ones_like(ids), prefix=prefix,
                                     output_hidden_states=True)

    base = forward(params, jnp.zeros((1, 3), bool))  # every prefix slot masked out: the plain model
    with_prefix = forward(params, jnp.ones((1, 3), bool))
    # Only the top layer carries the prefix: the layers below are untouched, the output changes.
    np.testing.assert_allclose(with_prefix.hidden_states[1], base.hidden_states[1], atol=1e-6)
    assert float(jnp.abs(with_prefix.last_hidden_state - base.last_hidden_state).max()) > 1e-3
    grads = jax.grad(lambda p: jnp.sum(forward(p, jnp.ones((1, 3), bool)).last_hidden_state ** 2))(params)
    assert float(jnp.abs(grads["prefix"]).max()) > 0


def _ptuning_v2_config(**deep):
    from ptjax.configs import base

    config = base.get_config()
    config.method.name = "ptuning_v2"
    config.prompt.deep.length = 3
    for key, value in deep.items():
        config.prompt.deep[key] = value
    return config


def test_prefix_dropout_key_reaches_the_module_and_acts_only_in_training(tiny_model_dir):
    from ptjax.heads.linear import SequenceClassifier
    from ptjax.methods.methods import build_prompt_model
    from ptjax.prompts.templates import parse_template

    backbone = load_backbone(tiny_model_dir("bert"))
    head = SequenceClassifier((2,), dropout=0.0)
    template = parse_template("{text}")
    models = {rate: build_prompt_model(_ptuning_v2_config(dropout=rate), backbone, head, template, {})
              for rate in (0.0, 0.5)}
    assert models[0.5].deep_prompt.dropout_rate == 0.5 and models[0.0].deep_prompt.dropout_rate == 0.0
    with pytest.raises(InputError, match="deep.dropout"):
        build_prompt_model(_ptuning_v2_config(dropout=1.0), backbone, head, template, {})
    own, _ = models[0.5]._init_own(jax.random.key(0))
    params = {"backbone": backbone.params, **own}
    encoded = backbone.tokenizer(["the capital of france is paris .", "a tiny test"], padding=True,
                                 return_tensors="np")
    batch = {k: jnp.asarray(encoded[k], jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch.update(label=jnp.array([0, 1]), valid=jnp.array([True, True]))

    @jax.jit
    def losses(params, key):
        out = {}
        for rate, model in models.items():  # same key: the backbone's own dropout masks agree
            out[rate] = (model.loss(params, batch, key, train=True)[0], model.loss(params, batch, None, train=False)[0])
        return out

    out = jax.device_get(losses(params, jax.random.key(1)))
    assert out[0.5][1] == out[0.0][1]  # evaluation: no prefix dropout
    assert abs(out[0.5][0] - out[0.0][0]) > 1e-6  # training: the prefix dropout changes the loss


def test_positions_shift_after_the_prefix_by_default_where_transformers_shifts(tiny_model_dir):
    from ptjax.methods.methods import build_prompt_model
    from ptjax.models.loading import open_backbone
    from ptjax.prompts.templates import parse_template

    template = parse_template("{text}")
    for family, shifts in (("bert", True), ("gpt2", True), ("t5", False)):
        backbone = open_backbone(str(tiny_model_dir(family)))
        model = build_prompt_model(_ptuning_v2_config(), backbone, None, template, {})
        assert model.shift_positions is shifts, family
        assert model.metadata["prompt_layout"]["shift_positions"] is shifts
        off = build_prompt_model(_ptuning_v2_config(shift_positions=False), backbone, None, template, {})
        assert off.shift_positions is False
    with pytest.raises(InputError, match="nothing to shift"):
        build_prompt_model(_ptuning_v2_config(shift_positions=True), backbone, None, template, {})
