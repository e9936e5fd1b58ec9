"""The train step: trainable-only gradients, the optimizer guard, clipping, schedules,
gradient accumulation, reproducible dropout, mixed precision."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import toy_experiment

from configs import base
from ptjax.training.optimizer import FROZEN, build_optimizer, label_tree, make_schedule
from ptjax.training.step import CPU_BF16_COMPILER_OPTIONS, merge_params, microbatches, split_params, step_rng


@pytest.fixture(scope="module")
def bert_dir(tiny_model_dir):
    return tiny_model_dir("bert")


def one_device():
    return jax.devices()[:1]


def run_steps(config, count, *, devices=None, trace_counter=None):
    """Loss history, final trainable and frozen trees after `count` steps."""
    model, data = toy_experiment.build(config, trace_counter=trace_counter)
    _, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(
        config, model, data, devices=devices or one_device(), total_steps=count)
    losses, metrics = [], None
    for i in range(count):
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, batches[i],
                                             step_rng(jax.random.PRNGKey(7), i))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(trainable), frozen, opt_state, metrics


def test_split_and_merge_are_inverse():
    params = {"backbone": {"a": {"w": 1}, "b": 2}, "prompt": {"e": 3}, "head": {"k": 4}}
    trainable, frozen = split_params(params, lambda p: p[0] != "backbone")
    assert trainable == {"prompt": {"e": 3}, "head": {"k": 4}}
    assert frozen == {"backbone": {"a": {"w": 1}, "b": 2}}
    assert merge_params(trainable, frozen) == params


def test_guard_and_clipping_read_trainable_leaves_only():
    config = base.get_config()
    config.optimizer.name, config.optimizer.learning_rate, config.optimizer.clip_norm = "sgd", 1.0, 1.0
    params = {"prompt": {"e": jnp.zeros(3)}, "backbone": {"w": jnp.zeros(2)}}
    # A leaf the label function calls frozen that slipped into the optimizer's tree gets no
    # update and does not count towards the clipped norm.
    is_trainable = lambda p: p[0] == "prompt"
    assert label_tree(params, is_trainable) == {"prompt": {"e": "prompt"}, "backbone": {"w": FROZEN}}
    opt = build_optimizer(config, params, is_trainable, total_steps=10, steps_per_epoch=10).transform
    update = jax.jit(opt.update)  # one compile, as in the train step (eager: one per op)
    grads = {"prompt": {"e": jnp.array([0.3, 0.0, 0.4])}, "backbone": {"w": jnp.array([100.0, 100.0])}}
    updates, _ = update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates["prompt"]["e"], [-0.3, 0.0, -0.4], rtol=1e-6)  # norm 0.5 < 1
    np.testing.assert_array_equal(updates["backbone"]["w"], [0.0, 0.0])
    grads["prompt"]["e"] = jnp.array([3.0, 0.0, 4.0])
    updates, _ = update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates["prompt"]["e"], [-0.6, 0.0, -0.8], rtol=1e-6)  # clipped to 1


def test_per_group_learning_rates():
    config = base.get_config()
    config.optimizer.name, config.optimizer.clip_norm = "sgd", 0.0
    config.optimizer.learning_rate, config.optimizer.head_learning_rate = 0.1, 0.5
    params = {"prompt": {"e": jnp.zeros(2)}, "head": {"k": jnp.zeros(2)}}
    opt = build_optimizer(config, params, lambda p: True, total_steps=10, steps_per_epoch=10).transform
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates["prompt"]["e"], [-0.1, -0.1], rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["k"], [-0.5, -0.5], rtol=1e-6)


def test_schedules():
    config = base.get_config()
    config.schedule.warmup_steps = 4
    lr = lambda name, count, **kw: float(
        make_schedule(_with(config, name, **kw), 1.0, total_steps=12, steps_per_epoch=3)(count))
    assert [lr("constant", c) for c in (0, 1, 3, 10)] == [0.25, 0.5, 1.0, 1.0]
    # linear: warm-up 4 updates, then 8 updates decaying 1, 7/8, ..., 1/8
    assert [lr("linear", c) for c in (3, 4, 5, 11)] == pytest.approx([1.0, 1.0, 7 / 8, 1 / 8])
    # exponential, per epoch (3 updates): 1, 1, 1, 0.5, 0.5, 0.5, 0.25
    assert [lr("exponential", c) for c in (4, 6, 7, 10)] == pytest.approx([1.0, 1.0, 0.5, 0.25])
    assert lr("exponential", 6, decay_every_steps=1) == pytest.approx(0.25)
    # noam: peak at the end of warm-up, then sqrt(warmup / step)
    assert [lr("inverse_sqrt", c) for c in (1, 3, 15)] == pytest.approx([0.5, 1.0, 0.5])


def _with(config, name, **schedule):
    config = config.copy_and_resolve_references()
    config.schedule.name = name
    for key, value in schedule.items():
        config.schedule[key] = value
    return config


def test_microbatches_interleave_rows():
    batch = {"x": jnp.arange(8)}
    np.testing.assert_array_equal(microbatches(batch, 2)["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])


class TokenMeanModel:
    """A loss averaged over a varying number of tokens per batch: aux["weight"] makes
    accumulated microbatches weigh like the full batch."""

    def loss(self, params, batch, rng, *, train):
        err = (batch["x"] * params["prompt"]["w"] - batch["y"]) ** 2 * batch["mask"]
        tokens = batch["mask"].sum()
        return err.sum() / tokens, {"weight": tokens, "tokens": tokens}


def test_accumulation_weights_microbatches_by_aux_weight():
    from ptjax.training.step import make_train_step

    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
             "mask": jnp.asarray(np.arange(5)[None] < rng.integers(1, 6, size=(8, 1)), jnp.float32)}
    params = {"prompt": {"w": jnp.float32(0.5)}}
    opt = optax.sgd(1.0)
    results = []
    for count in (1, 4):
        step = jax.jit(make_train_step(TokenMeanModel(), opt, grad_accum_steps=count))
        new, _, metrics = step(params, {}, opt.init(params), batch, jax.random.PRNGKey(0))
        results.append((float(metrics["loss"]), float(new["prompt"]["w"])))
    assert results[0] == pytest.approx(results[1], rel=1e-6)


def test_frozen_params_never_change_and_have_no_optimizer_state(bert_dir, tmp_path):
    config = toy_experiment.toy_config(bert_dir, tmp_path)
    model, data = toy_experiment.build(config)
    _, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(
        config, model, data, devices=one_device(), total_steps=2)
    # Copies: on CPU, device_get and np.asarray can return views of the arrays' own buffers, and a
    # step that wrote into a donated frozen buffer would then compare the new values with themselves.
    before = jax.tree.map(np.array, frozen)
    prompt_before = np.array(trainable["prompt"]["embedding"])
    assert set(trainable) == {"prompt", "head"} and set(frozen) == {"backbone"}
    state_sizes = sum(x.size for x in jax.tree.leaves(opt_state))
    trainable_sizes = sum(x.size for x in jax.tree.leaves(trainable))
    assert state_sizes <= 2 * trainable_sizes + 8  # Adam moments of the trainable leaves only
    trainable, opt_state, metrics = step(trainable, frozen, opt_state, batches[0], jax.random.PRNGKey(0))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(frozen))  # never donated to the step
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, frozen))
    assert not np.allclose(prompt_before, np.asarray(trainable["prompt"]["embedding"]))
    assert metrics["loss"].dtype == jnp.float32 and metrics["nonfinite"] == 0


def test_gradient_accumulation_equals_the_full_batch(bert_dir, tmp_path):
    config = toy_experiment.toy_config(bert_dir, tmp_path, **{"optimizer.name": "sgd"})
    full_losses, full, _, _, full_metrics = run_steps(config, 2)
    config.optimizer.grad_accum_steps = 4
    micro_losses, micro, _, _, micro_metrics = run_steps(config, 2)
    np.testing.assert_allclose(micro_losses, full_losses, rtol=1e-5)
    np.testing.assert_allclose(micro_metrics["grad_norm"], full_metrics["grad_norm"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), micro, full)


@pytest.mark.slow
def test_dropout_is_reproducible_and_varies_by_step(bert_dir, tmp_path):
    config = toy_experiment.toy_config(bert_dir, tmp_path, **{"train.dropout": True})
    model, data = toy_experiment.build(config)
    _, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(
        config, model, data, devices=one_device(), total_steps=1)
    base_rng = jax.random.PRNGKey(3)

    def loss_and_prompt(rng):
        copies = jax.tree.map(jnp.copy, (trainable, opt_state))  # the step donates its inputs
        new, _, metrics = step(copies[0], frozen, copies[1], batches[0], rng)
        return float(metrics["loss"]), np.asarray(new["prompt"]["embedding"])

    loss_a, prompt_a = loss_and_prompt(step_rng(base_rng, 0))
    loss_b, prompt_b = loss_and_prompt(step_rng(base_rng, 0))
    loss_c, _ = loss_and_prompt(step_rng(base_rng, 1))
    assert loss_a == loss_b
    np.testing.assert_array_equal(prompt_a, prompt_b)
    assert loss_c != loss_a  # dropout is really on, and a new step gets a new mask
    assert not np.array_equal(step_rng(base_rng, 1), step_rng(base_rng, 2))


@pytest.mark.slow
def test_mixed_precision_keeps_trainable_state_float32(bert_dir, tmp_path):
    config = toy_experiment.toy_config(bert_dir, tmp_path, **{"model.dtype": "bfloat16"})
    losses, trainable, frozen, opt_state, metrics = run_steps(config, 2)
    assert {x.dtype for x in jax.tree.leaves(frozen)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(trainable)} == {jnp.dtype(jnp.float32)}
    floats = {x.dtype for x in jax.tree.leaves(opt_state) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(losses).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamw", "adam", "adafactor", "sgd"])
def test_every_optimizer_lowers_the_loss_on_one_batch(name):
    config = base.get_config()
    config.optimizer.name, config.optimizer.learning_rate = name, 0.1
    config.optimizer.weight_decay = 0.01 if name != "adam" else 0.0
    params = {"prompt": {"e": jnp.ones((4, 3))}}
    opt = build_optimizer(config, params, lambda p: True, total_steps=10, steps_per_epoch=10).transform
    loss = lambda p: jnp.sum((p["prompt"]["e"] - 0.3) ** 2)
    state = opt.init(params)
    start = loss(params)
    for _ in range(5):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < start


def _library_kernel_ops(step, trainable, frozen, opt_state, batch, engine) -> set:
    """The HLO ops inside the compiled step's YNNPACK kernels (XLA:CPU's "__ynn_fusion")."""
    with engine.activate():
        text = step.jitted.lower(trainable, frozen, opt_state, batch, jax.random.PRNGKey(0)).compile().as_text()
    computations = {m.group(1): c for c in re.split(r"\n(?=\S)", text) if (m := re.match(r"%([\w.\-]+) ", c))}
    ops = set()
    for called in re.findall(r'calls=%([\w.\-]+), .*"__ynn_fusion"', text):
        ops.update(re.findall(r"= \S+ ([a-z][\w\-]*)\(", computations[called]))
    return ops


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU option")
def test_bf16_steps_keep_elementwise_work_out_of_the_product_kernels(bert_dir, tmp_path):
    """A bf16 backbone's step compiles with XLA:CPU's library kernels limited to the products
    (step_compiler_options: faster around bf16 products, BENCHMARKS.md "bf16 compute"); a float32
    step keeps XLA's default, which also moves reductions and arithmetic into them."""
    for dtype in ("bfloat16", "float32"):
        config = toy_experiment.toy_config(bert_dir, tmp_path / dtype, **{"model.dtype": dtype})
        model, data = toy_experiment.build(config)
        engine, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(
            config, model, data, devices=one_device(), total_steps=1)
        ops = _library_kernel_ops(step, trainable, frozen, opt_state, batches[0], engine)
        if dtype == "bfloat16":
            assert engine.train_compiler_options == CPU_BF16_COMPILER_OPTIONS
            assert ops == {"parameter", "dot"}, ops
        else:
            assert engine.train_compiler_options is None
            assert "dot" in ops and {"reduce", "multiply"} <= ops, ops
