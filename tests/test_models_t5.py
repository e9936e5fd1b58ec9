"""T5 v1.0 / T5.1.1 / mT5: numerical parity with transformers, deep prompts, bf16, tracing.

Forwards run jitted, one compiled program per family and call structure, to keep the file fast.
"""

import functools
import json
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models
import torch
import transformers
from safetensors.numpy import load_file, save_file
from transformers.models.t5.modeling_t5 import T5Attention as TorchT5Attention

from ptjax.errors import InputError
from ptjax.models.layers import PrefixKV
from ptjax.models.loading import Backbone, load_backbone
from ptjax.models.relative_positions import relative_position_bucket
from ptjax.models.t5 import T5, shift_right

TOLERANCE = 1e-4
PREFIX_LENGTH = 3
FAMILIES = ("t5", "t5v1_1", "mt5")


class Tiny(NamedTuple):
    family: str
    backbone: Backbone
    reference: Any  # the transformers PyTorch model
    apply: Callable  # jitted backbone.module.apply, variables bound


def _untied_copy(path, out):
    """A hub-style checkpoint (mT5, T5.1.1): lm_head.weight stored apart from shared.weight.
    transformers 5 saves tiny models tied, so the separate head is added here."""
    shutil.copytree(path, out)
    tensors = load_file(str(out / "model.safetensors"))
    tensors["lm_head.weight"] = np.random.default_rng(1).normal(size=tensors["shared.weight"].shape).astype(np.float32)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def tiny_models_by_family(tiny_model_dir, tmp_path_factory):
    """family -> Tiny, each loaded once. "mt5" is made hub-style (untied lm_head)."""

    @functools.cache
    def get(family: str) -> Tiny:
        path = tiny_model_dir(family)
        if family == "mt5":
            path = _untied_copy(path, tmp_path_factory.mktemp("mt5_untied") / "mt5")
        backbone = load_backbone(path)
        jitted = jax.jit(backbone.module.apply, static_argnames=("method", "output_hidden_states", "compute_logits"))
        apply = functools.partial(jitted, {"params": backbone.params})
        return Tiny(family, backbone, tiny_models.reference_model(family, path), apply)

    return get


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tiny_models_by_family) -> Tiny:
    return tiny_models_by_family(request.param)


def _batch(cfg):
    """Right-padded encoder batch [3, 24] (longer than max_distance=20, so every bucket is used)
    and decoder inputs [3, 6] shifted from padded labels."""
    rng = np.random.default_rng(0)
    source_lengths, target_lengths = (24, 17, 6), (6, 4, 2)
    ids = rng.integers(2, cfg.vocab_size, (3, 24)).astype(np.int32)
    mask = (np.arange(24)[None] < np.array(source_lengths)[:, None]).astype(np.int32)
    labels = rng.integers(2, cfg.vocab_size, (3, 6)).astype(np.int32)
    decoder_mask = (np.arange(6)[None] < np.array(target_lengths)[:, None]).astype(np.int32)
    labels = np.where(decoder_mask == 1, labels, -100)
    decoder_ids = np.asarray(shift_right(labels, cfg.decoder_start_token_id, cfg.pad_token_id))
    return ids * mask, mask, decoder_ids, decoder_mask


def _torch(*arrays):
    return [torch.tensor(np.asarray(a)).long() for a in arrays]


def _max_diff(ours, theirs) -> float:
    return float(np.abs(np.asarray(ours, np.float32) - theirs.detach().numpy()).max())


def _prefixes(cfg, seed, encoder_layers_on, decoder_layers_on):
    """(prefix, decoder_prefix): the encoder's shared by the batch ([layers, 1, P, ...]), the
    decoder's per example with a padding mask. Layer masks are always arrays, so every variant
    shares one compiled program."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    heads = (PREFIX_LENGTH, cfg.num_heads, cfg.d_kv)
    prefix = PrefixKV(normal(cfg.num_layers, 1, *heads), normal(cfg.num_layers, 1, *heads),
                      layer_mask=jnp.asarray(encoder_layers_on, bool))
    decoder_prefix = PrefixKV(
        normal(cfg.num_decoder_layers, 3, *heads), normal(cfg.num_decoder_layers, 3, *heads),
        mask=jnp.asarray([[1, 1, 1], [1, 0, 1], [0, 1, 1]], jnp.int32),
        layer_mask=jnp.asarray(decoder_layers_on, bool))
    return prefix, decoder_prefix


def test_hidden_states_and_logits_match_transformers(tiny):
    family, backbone, reference, apply = tiny
    cfg = backbone.config
    assert backbone.kind == "seq2seq"
    assert cfg.untied_lm_head == (family == "mt5") and cfg.scale_decoder_outputs == (family == "t5")
    if family == "mt5":  # the reference really uses the separate head
        assert not torch.equal(reference.lm_head.weight, reference.shared.weight)
    ids, mask, dec, dec_mask = _batch(cfg)
    out = apply(ids, mask, dec, dec_mask, output_hidden_states=True)
    with torch.no_grad():
        ref = reference(*_torch(ids, mask, dec, dec_mask), output_hidden_states=True)
    assert out.encoder_hidden_states.shape[0] == len(ref.encoder_hidden_states) == cfg.num_layers + 1
    assert out.hidden_states.shape[0] == len(ref.decoder_hidden_states) == cfg.num_decoder_layers + 1
    diffs = [_max_diff(a, b) for a, b in zip(out.encoder_hidden_states, ref.encoder_hidden_states)]
    diffs += [_max_diff(a, b) for a, b in zip(out.hidden_states, ref.decoder_hidden_states)]
    diffs += [_max_diff(out.encoder_last_hidden_state, ref.encoder_last_hidden_state), _max_diff(out.logits, ref.logits)]
    print(f"\n{family}: max abs diff, hidden states and logits: {max(diffs):.2e}")
    assert max(diffs) <= TOLERANCE, (family, diffs)


def _reference_with_prefixes(reference, inputs, prefix: PrefixKV, decoder_prefix: PrefixKV):
    """transformers' model given both prefixes.

    Decoder: its self-attention cache holds the prefix (queries then sit at positions P.., ours at
    0.. with the prefix at -P..-1; the bias sees the same differences), the padding mask extended.
    Encoder (transformers has no hook): in the layers the prefix is on, self-attention is replaced
    by a torch attention over [prefix; keys] whose bias puts the prefix at -P..-1, built with
    transformers' own bucket function and bias table. Norms, feed-forward, cross-attention and the
    head stay theirs.
    """
    encoder, cfg = reference.encoder, reference.config
    ids, mask, dec, dec_mask = inputs
    batch, length, heads, d_kv = *ids.shape, cfg.num_heads, cfg.d_kv
    relative = torch.arange(-PREFIX_LENGTH, length)[None, :] - torch.arange(length)[:, None]
    buckets = TorchT5Attention._relative_position_bucket(
        relative, bidirectional=True, num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance)
    bias = encoder.block[0].layer[0].SelfAttention.relative_attention_bias(buckets).permute(2, 0, 1)[None]
    visible = torch.cat([torch.ones(batch, PREFIX_LENGTH, dtype=torch.long), mask], 1).bool()[:, None, None, :]
    # [layers, batch, heads, P, head_dim], transformers' layout
    keys, values = (torch.tensor(np.asarray(x)).transpose(2, 3).expand(-1, batch, -1, -1, -1)
                    for x in (prefix.keys, prefix.values))

    def attention_with_prefix(attention, layer):
        def forward(hidden_states, *args, **kwargs):
            split = lambda x: x.view(batch, length, heads, d_kv).transpose(1, 2)
            q = split(attention.q(hidden_states))
            k = torch.cat([keys[layer], split(attention.k(hidden_states))], 2)
            v = torch.cat([values[layer], split(attention.v(hidden_states))], 2)
            scores = (q @ k.transpose(2, 3) + bias).masked_fill(~visible, torch.finfo(torch.float32).min)
            out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, heads * d_kv)
            # Later layers reuse what block 0 returns: transformers' own bias over real keys.
            return attention.o(out), bias[..., PREFIX_LENGTH:], None
        return forward

    self_cache = transformers.DynamicCache()
    for layer in range(cfg.num_decoder_layers):
        self_cache.update(torch.tensor(np.asarray(decoder_prefix.keys[layer])).transpose(1, 2),
                          torch.tensor(np.asarray(decoder_prefix.values[layer])).transpose(1, 2), layer)
    cache = transformers.EncoderDecoderCache(self_cache, transformers.DynamicCache())
    full_dec_mask = torch.cat([torch.tensor(np.asarray(decoder_prefix.mask)).long(), dec_mask], 1)

    patched = [encoder.block[i].layer[0].SelfAttention for i in np.flatnonzero(np.asarray(prefix.layer_mask))]
    try:
        for layer, attention in zip(np.flatnonzero(np.asarray(prefix.layer_mask)), patched):
            attention.forward = attention_with_prefix(attention, layer)
        with torch.no_grad():
            return reference(ids, mask, dec, full_dec_mask, past_key_values=cache, use_cache=True,
                             output_hidden_states=True)
    finally:
        for attention in patched:
            del attention.forward


@pytest.mark.slow
@pytest.mark.parametrize("encoder_layers_on", [(True, True), (True, False)], ids=["all_layers", "first_layer"])
def test_deep_prompts_match_transformers(tiny, encoder_layers_on):
    family, backbone, reference, apply = tiny
    cfg = backbone.config
    ids, mask, dec, dec_mask = _batch(cfg)
    prefix, decoder_prefix = _prefixes(cfg, 1, encoder_layers_on, (True,) * cfg.num_decoder_layers)
    out = apply(ids, mask, dec, dec_mask, prefix=prefix, decoder_prefix=decoder_prefix)
    ref = _reference_with_prefixes(reference, _torch(ids, mask, dec, dec_mask), prefix, decoder_prefix)
    diffs = (_max_diff(out.encoder_last_hidden_state, ref.encoder_last_hidden_state),
             _max_diff(out.last_hidden_state, ref.decoder_hidden_states[-1]), _max_diff(out.logits, ref.logits))
    print(f"\n{family}: deep prompts ({encoder_layers_on}) max abs diff encoder/decoder/logits "
          + " ".join(f"{d:.2e}" for d in diffs))
    assert max(diffs) <= TOLERANCE
    plain = apply(ids, mask, dec, dec_mask, output_hidden_states=True)
    assert float(jnp.abs(out.logits - plain.logits).max()) > 1e-2  # the prompts do matter


@pytest.mark.slow
def test_prefix_switched_off_everywhere_is_no_prefix(tiny):
    _, backbone, _, apply = tiny
    cfg = backbone.config
    ids, mask, dec, dec_mask = _batch(cfg)
    prefix, decoder_prefix = _prefixes(cfg, 2, (False,) * cfg.num_layers, (False,) * cfg.num_decoder_layers)
    switched_off = apply(ids, mask, dec, dec_mask, prefix=prefix, decoder_prefix=decoder_prefix)
    plain = apply(ids, mask, dec, dec_mask, output_hidden_states=True)
    # Masked prefix slots get probability exactly 0; only the longer key axis may reorder float sums.
    for ours, expected in ((switched_off.encoder_last_hidden_state, plain.encoder_last_hidden_state),
                           (switched_off.last_hidden_state, plain.last_hidden_state)):
        np.testing.assert_allclose(ours, expected, rtol=0, atol=5e-6)
    np.testing.assert_allclose(switched_off.logits, plain.logits, rtol=1e-5, atol=5e-6)


@pytest.mark.slow
def test_inputs_embeds_and_encode_decode_equal_call(tiny_models_by_family):
    _, backbone, _, apply = tiny_models_by_family("mt5")
    cfg = backbone.config
    ids, mask, dec, dec_mask = _batch(cfg)
    prefix, decoder_prefix = _prefixes(cfg, 3, (True, False), (False, True))
    whole = apply(ids, mask, dec, dec_mask, prefix=prefix, decoder_prefix=decoder_prefix)

    embed = functools.partial(apply, method="embed_tokens")
    from_embeds = apply(attention_mask=mask, decoder_attention_mask=dec_mask, inputs_embeds=embed(ids),
                        decoder_inputs_embeds=embed(dec), prefix=prefix, decoder_prefix=decoder_prefix)
    np.testing.assert_allclose(from_embeds.logits, whole.logits, rtol=1e-6, atol=1e-6)

    encoded = apply(ids, mask, prefix=prefix, method="encode")
    decoded = apply(dec, encoded.last_hidden_state, mask, dec_mask, decoder_prefix=decoder_prefix, method="decode")
    np.testing.assert_allclose(decoded.logits, whole.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(decoded.encoder_last_hidden_state, whole.encoder_last_hidden_state, atol=1e-6)
    logits = apply(decoded.last_hidden_state, method="lm_logits")
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, whole.logits, rtol=1e-6, atol=1e-6)


def test_shift_right_matches_transformers(tiny):
    _, backbone, reference, _ = tiny
    labels = np.array([[5, 6, 7, 1], [8, 1, -100, -100]])
    ours = shift_right(labels, backbone.config.decoder_start_token_id, backbone.config.pad_token_id)
    np.testing.assert_array_equal(ours, reference._shift_right(torch.tensor(labels)).numpy())


def test_relative_position_buckets_match_transformers():
    relative = np.arange(-3000, 3000)
    buckets = jax.jit(relative_position_bucket, static_argnames=("bidirectional", "num_buckets", "max_distance"))
    for num_buckets, max_distance in ((32, 128), (8, 20), (64, 256), (32, 64), (128, 512)):
        for bidirectional in (True, False):
            ours = buckets(relative, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
            theirs = TorchT5Attention._relative_position_bucket(
                torch.tensor(relative), bidirectional=bidirectional, num_buckets=num_buckets,
                max_distance=max_distance)
            np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=f"{num_buckets}/{max_distance}")


def test_logical_axes_name_every_parameter(tiny):
    backbone = tiny.backbone
    flat_axes = jax.tree_util.tree_flatten_with_path(backbone.logical_axes, is_leaf=lambda x: isinstance(
        x, jax.sharding.PartitionSpec))[0]
    shapes = dict(jax.tree_util.tree_flatten_with_path(backbone.params)[0])
    for path, spec in flat_axes:
        name = jax.tree_util.keystr(path)
        assert len(spec) == shapes[path].ndim, name
        assert (spec[0] == "layers") == ("'layers'" in name), name
    # The bias tables live once per stack, outside the scanned layers.
    assert backbone.params["encoder"]["relative_attention_bias"].shape == (
        backbone.config.relative_attention_num_buckets, backbone.config.num_heads)


def test_unsupported_feed_forward_is_a_clear_error():
    hf = transformers.T5Config(feed_forward_proj="gated-relu")
    with pytest.raises(InputError, match="feed_forward_proj='gated-relu'"):
        T5.config_from_hf(hf, frozenset())


@pytest.mark.slow
def test_bfloat16_close_to_float32(tiny_models_by_family, tiny_model_dir):
    f32 = tiny_models_by_family("t5v1_1")
    bf16 = load_backbone(tiny_model_dir("t5v1_1"), dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(bf16.params))
    inputs = _batch(bf16.config)
    a = f32.apply(*inputs)
    b = jax.jit(lambda params, *x: bf16.module.apply({"params": params}, *x))(bf16.params, *inputs)
    assert b.last_hidden_state.dtype == jnp.bfloat16 and b.logits.dtype == jnp.float32
    relative = float(jnp.abs(a.logits - b.logits).max() / jnp.abs(a.logits).max())
    encoder = float(jnp.abs(a.encoder_last_hidden_state - b.encoder_last_hidden_state.astype(jnp.float32)).max())
    decoder = float(jnp.abs(a.last_hidden_state - b.last_hidden_state.astype(jnp.float32)).max())
    print(f"\nbf16 vs float32: max |logit diff| / max |logit| {relative:.3f}; max abs diff of the encoder "
          f"output {encoder:.3f}, decoder output {decoder:.3f}")
    # Measured 0.013, 0.02-0.04, 0.04 (unit-scale RMS-normed outputs; bf16 keeps 8 mantissa bits).
    assert relative < 0.04 and encoder < 0.12 and decoder < 0.12


@pytest.mark.slow
def test_jitted_forward_does_not_retrace(tiny_models_by_family):
    backbone = tiny_models_by_family("t5").backbone
    cfg = backbone.config
    traces = []

    @jax.jit
    def forward(params, ids, mask, dec, dec_mask, prefix, decoder_prefix):
        traces.append(1)
        return backbone.module.apply({"params": params}, ids, mask, dec, dec_mask, prefix=prefix,
                                     decoder_prefix=decoder_prefix).logits

    ids, mask, dec, dec_mask = _batch(cfg)
    layers_on = (True,) * cfg.num_layers, (True,) * cfg.num_decoder_layers
    forward(backbone.params, ids, mask, dec, dec_mask, *_prefixes(cfg, 7, *layers_on))
    forward(backbone.params, np.roll(ids, 1, axis=1), np.ones_like(mask), np.roll(dec, 1, axis=1),
            np.ones_like(dec_mask), *_prefixes(cfg, 8, (False, True), (True, False)))
    assert len(traces) == 1


@pytest.mark.slow
def test_unrolled_layers_and_remat_give_the_same_output(tiny_models_by_family, tiny_model_dir):
    scanned = tiny_models_by_family("t5")
    unrolled = load_backbone(tiny_model_dir("t5"), scan_layers=False, remat_policy="full")
    inputs = _batch(unrolled.config)
    b = jax.jit(lambda params, *x: unrolled.module.apply({"params": params}, *x))(unrolled.params, *inputs)
    np.testing.assert_allclose(b.logits, scanned.apply(*inputs).logits, atol=1e-6)


@pytest.mark.slow
def test_sharded_forward_matches_single_device(tiny_models_by_family, tiny_model_dir):
    """Weights loaded straight into shards of a (2 x 4) mesh by their logical names, activations
    constrained the same way: same logits as one device."""
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (simulated) devices")
    single = tiny_models_by_family("mt5")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("fsdp", "tensor"))
    rules = (("embed", "fsdp"), ("heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor"))
    sharded = load_backbone(single.backbone.name,
                            shardings=lambda shapes, logical: nn.logical_to_mesh_sharding(logical, mesh, rules))
    wo = sharded.params["decoder"]["layers"]["feed_forward"]["wo"]["kernel"]  # [layers, mlp, embed]
    assert wo.sharding.spec == jax.sharding.PartitionSpec(None, "tensor", "fsdp")
    inputs = _batch(sharded.config)
    prefixes = _prefixes(sharded.config, 9, (True, True), (True, True))
    with mesh, nn.logical_axis_rules(rules):
        out = jax.jit(lambda params, *x: sharded.module.apply(
            {"params": params}, *x, prefix=prefixes[0], decoder_prefix=prefixes[1]))(sharded.params, *inputs)
    expected = single.apply(*inputs, prefix=prefixes[0], decoder_prefix=prefixes[1])
    np.testing.assert_allclose(out.logits, expected.logits, rtol=1e-5, atol=1e-5)
