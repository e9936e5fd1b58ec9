"""Batched sweep variants (issue 25): bank entries with their own learning rate train exactly as
separate runs with that rate would, and the sweep planner groups the variants that can share a job."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_lama import ONE_DEVICE, amplify_weights, batch_of, lama_config, lama_dir  # noqa: F401

from configs import base
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.prompts.banks import BankTraining
from ptjax.training.engine import Engine
from ptjax.training.optimizer import build_optimizer
from ptjax.training.variants import plan_groups


def _optimizer_config(name, learning_rate, clip_norm, schedule="linear"):
    config = base.get_config()
    config.optimizer.name = name
    config.optimizer.learning_rate = learning_rate
    config.optimizer.clip_norm = clip_norm
    config.schedule.name = schedule
    config.schedule.warmup_steps = 2
    return config


@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
@pytest.mark.parametrize("name", ["adam", "adamw", "adafactor"])
def test_per_entry_learning_rates_equal_separate_optimizers(name, clip_norm):
    """Three entries with rates 1e-2, 3e-2, 0.3 (linear schedule with warm-up, entry 1 without
    examples in steps 2 and 4) end where the optimizer built with each rate alone ends. The rate
    enters as the same float32 scalar in the same product: without clipping the parameters are
    bit-equal. With clipping, the squared-gradient sum of the global norm is reduced over a
    [3, 4, 8] array per entry under vmap and over [4, 8] alone: another summation order, so the
    clip factor may differ in its last bit, which moves each step's update by about one ulp of the
    parameter or of the step (the bound below)."""
    rates = (1e-2, 3e-2, 0.3)
    rng = np.random.default_rng(0)
    params = {"prompt": {"table": jnp.asarray(rng.normal(size=(3, 4, 8)), jnp.float32)}}
    grads = [{"prompt": {"table": jnp.asarray(rng.normal(size=(3, 4, 8)), jnp.float32)}} for _ in range(4)]
    present = [np.array([True, True, True]), np.array([True, False, True])] * 2
    bank = BankTraining(num_entries=3, is_bank_leaf=lambda path: path[0] == "prompt", learning_rates=rates)
    joint = build_optimizer(_optimizer_config(name, 1.0, clip_norm), params, lambda path: True, total_steps=4,
                            steps_per_epoch=2, bank=bank).transform

    @jax.jit
    def joint_step(p, state, g, has):
        updates, state = joint.update(g, state, p, entry_has_examples=has)
        return jax.tree.map(jnp.add, p, updates), state

    together, state = params, joint.init(params)
    for g, has in zip(grads, present):
        together, state = joint_step(together, state, g, jnp.asarray(has))

    for entry, rate in enumerate(rates):
        alone_params = {"prompt": {"table": params["prompt"]["table"][entry]}}
        alone = build_optimizer(_optimizer_config(name, rate, clip_norm), alone_params, lambda path: True,
                                total_steps=4, steps_per_epoch=2).transform

        @jax.jit
        def alone_step(p, s, g, alone=alone):
            updates, s = alone.update(g, s, p)
            return jax.tree.map(jnp.add, p, updates), s

        p, s = alone_params, alone.init(alone_params)
        for g, has in zip(grads, present):
            if has[entry]:
                p, s = alone_step(p, s, {"prompt": {"table": g["prompt"]["table"][entry]}})
        joint_entry, alone_entry = np.asarray(together["prompt"]["table"][entry]), np.asarray(p["prompt"]["table"])
        if not clip_norm:
            np.testing.assert_array_equal(joint_entry, alone_entry, err_msg=f"entry {entry}")
        # Per step: the update (|Adam step| <= about the rate) may differ in its last bit, and the
        # sum's rounding may too: 2 ulps of max(|param|, rate), 4 steps (observed: up to 4 ulps of the rate).
        bound = 8 * np.spacing(np.maximum(np.abs(alone_entry), np.float32(rate)))
        assert np.all(np.abs(joint_entry - alone_entry) <= bound), f"entry {entry}"
        assert not np.array_equal(alone_entry, np.asarray(alone_params["prompt"]["table"]))  # it trained


# The default run's check of per-entry rates through the real step is the Lester test below (cheaper).
@pytest.mark.slow
def test_variants_with_own_rates_train_as_separate_runs(lama_dir, tiny_model_dir):  # noqa: F811
    """Through the real model, train step and optimizer on a tiny BERT: a bank of two prompt
    encoders with learning rates 1e-3 and 3e-2 (Adam, clipping active) ends bit-for-bit where
    each encoder ends when the same batches train it alone with its rate as config.optimizer
    .learning_rate (the other entry's rows masked out, so shapes and compiled step are the same)."""
    rates = (1e-3, 3e-2)

    def config_with(rate):
        return lama_config(tiny_model_dir("bert"), lama_dir, **{
            "prompt.encoder": "mlp", "task.options.relations": ("P36", "P17"), "optimizer.clip_norm": 0.05,
            "optimizer.name": "adam", "optimizer.learning_rate": rate})

    experiment = build(config_with(rates[0]))
    amplify_weights(experiment.backbone, 5.0)
    model, data = experiment.model, experiment.data
    engine = Engine(config_with(rates[0]), model, devices=ONE_DEVICE)
    trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    examples, features = data.examples("train"), data.features("train")
    relation = np.asarray([e.meta["relation"] for e in examples])
    p36, p17 = np.flatnonzero(relation == "P36"), np.flatnonzero(relation == "P17")
    rows = [[p36[0], p17[0], p36[1], p17[1]], [p36[2], p36[3], p36[0], p36[1]], [p17[2], p17[3], p36[2], p17[0]]]
    batches = [batch_of([features[i] for i in r], data.pad_values) for r in rows]

    def run(bank, rate, only=None):
        optimizer = build_optimizer(config_with(rate), engine.trainable_shapes, model.is_trainable,
                                    total_steps=3, steps_per_epoch=3, bank=bank)
        shardings = engine.opt_state_shardings(optimizer.transform)
        state = engine.init_opt_state(optimizer.transform, trainable, shardings)
        step = engine.compile_train_step(optimizer.transform, shardings)
        params = jax.tree.map(jnp.copy, trainable)  # the step donates its inputs
        for batch, r in zip(batches, rows):
            if only is not None:
                batch = dict(batch, valid=jnp.asarray(relation[r] == only))
            params, state, _ = step(params, frozen, state, batch, jax.random.PRNGKey(1))
        return jax.device_get(params["prompt"]["soft"]["encoder"])

    together = run(dataclasses.replace(model.bank, learning_rates=rates), 1.0)
    for index, name in enumerate(("P36", "P17")):
        alone = run(model.bank, rates[index], only=name)
        for (path, joint_leaf), alone_leaf in zip(jax.tree_util.tree_leaves_with_path(together),
                                                  jax.tree.leaves(alone)):
            np.testing.assert_array_equal(joint_leaf[index], alone_leaf[index], err_msg=f"{name} {path}")


def _sweep_config(**sweep):
    config = base.get_config()
    config.mode = "sweep"
    for key, value in sweep.items():
        config.sweep[key] = value
    return config


def test_planner_groups_variants_by_shape_and_reports_the_others(tmp_path):
    from ptjax.sweep import plan_runs, run_config

    config = _sweep_config(
        variants=("short: prompt.length=4", "long: prompt.length=8", "eval: mode=eval"),
        grid=("optimizer.learning_rate=(1e-3, 3e-3)",), seeds=(0, 1))
    runs = plan_runs(config, tmp_path)
    groups, alone = plan_groups(runs, [run_config(config, r) for r in runs])
    assert [sorted({r.variant for r in g}) for g in groups] == [["short"], ["long"]]
    assert [len(g) for g in groups] == [4, 4]  # 2 rates x 2 seeds share a job per prompt length
    assert {r.variant for r, _ in alone} == {"eval"}
    assert all("mode" in reason for _, reason in alone)


def test_planner_refuses_unknown_batched_keys_by_reporting_them(tmp_path):
    from ptjax.sweep import plan_runs, run_config

    config = _sweep_config(grid=("optimizer.b1=(0.9, 0.8)",), seeds=(0,))
    runs = plan_runs(config, tmp_path)
    groups, alone = plan_groups(runs, [run_config(config, r) for r in runs])
    # optimizer.b1 is not a per-entry hyperparameter: each run is alone, and says why.
    assert groups == [] and len(alone) == 2 and all("differs from it only in seed" in reason for _, reason in alone)
    with pytest.raises(InputError):
        plan_groups(runs, [])


def test_variant_batch_holds_each_variants_own_rows():
    """Variant k's block of a batched step is the batch its own run takes at that step (its seed,
    its number of examples), padded to the batch's longest bucket; a finished variant's block is
    padding (valid False)."""
    from ptjax.data import pipeline

    rng = np.random.default_rng(0)
    features = [{"input_ids": rng.integers(1, 50, size=int(n)), "label": np.int32(i % 2)}
                for i, n in enumerate(rng.integers(3, 40, size=24))]
    split = pipeline.prepare_split("train", features, {"input_ids": 0}, {}, ())
    orders = [pipeline.TrainOrder(24, 4, seed=0), pipeline.TrainOrder(8, 4, seed=1), pipeline.TrainOrder(24, 4, seed=2)]
    stops = [6, 2, 6]
    for step in range(4):
        arrays = pipeline.variant_train_batch(split, orders, stops, step)
        assert arrays["input_ids"].shape[0] == 12
        for k, (order, stop) in enumerate(zip(orders, stops)):
            block = slice(4 * k, 4 * k + 4)
            np.testing.assert_array_equal(arrays["prompt_id"][block], k)
            rows = order.rows(min(step, stop - 1))
            assert order.num_examples == 24 or rows.max() < order.num_examples
            alone = pipeline.collate(split, rows, split.batch_lengths(rows))
            width = alone["input_ids"].shape[1]
            np.testing.assert_array_equal(arrays["input_ids"][block, :width], alone["input_ids"])
            assert not arrays["input_ids"][block, width:].any()  # only padding beyond its own bucket
            np.testing.assert_array_equal(arrays["label"][block], alone["label"])
            np.testing.assert_array_equal(arrays["valid"][block], step < stop)


SENTENCES = [("a good movie", 1), ("terrible acting", 0), ("i loved it", 1), ("a waste of time", 0),
             ("great fun", 1), ("dull and slow", 0), ("so bad", 0), ("the best film", 1)]


def test_seed_and_rate_variants_in_one_job_equal_separate_runs(tiny_model_dir, tmp_path):
    """Two Lester prompt-tuning variants on a tiny BERT (seeds 0 / 1, rates 1e-2 / 3e-2, 4 and 8
    training examples) trained as one job, a bank of two prompts, each initialised with its own
    seed and fed its own batches (pipeline.variant_train_batch), end where each variant's
    single-prompt model trained alone on the same batches ends. Clipping and dropout off (one job
    draws one dropout mask), one length bucket. What remains is the order of float sums: the bank
    weighs each row 1/4 where the single run takes the mean of 4 rows (the same power-of-two
    scale, exact), but the rows' gradients reach the prompt through a gather by prompt_id, summed
    in another order; each step may then differ in the last bits of the update (observed: 1-2
    ulps after 3 steps; bound: 4 ulps of max(|param|, rate) per step)."""
    from ptjax.data import pipeline
    from ptjax.training.variants import stack_entries

    folder = tmp_path / "sst2"
    folder.mkdir()
    lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in SENTENCES]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    variants = [(0, 1e-2, 4), (1, 3e-2, 8)]  # (seed, rate, training examples)

    def config_with(seed, rate):
        config = base.get_config()
        config.model.name, config.data_dir = str(tiny_model_dir("bert")), str(tmp_path)
        config.task.name, config.method.name, config.task.max_length = "sst2", "lester", 32
        config.task.length_buckets, config.prompt.length = (32,), 4
        config.optimizer.name, config.optimizer.clip_norm, config.optimizer.learning_rate = "adam", 0.0, rate
        config.train.batch_size, config.seed = 4, seed
        config.train.dropout = False  # one job draws one dropout mask for all variants (see report)
        return config

    single = build(config_with(0, 1.0))
    amplify_weights(single.backbone, 5.0)
    joint = build(config_with(0, 1.0), backbone=single.backbone, num_prompts=len(variants))
    split = pipeline.prepare_split("train", single.data.features("train"), single.data.pad_values, {}, (32,))
    orders = [pipeline.TrainOrder(n, 4, seed) for seed, _, n in variants]
    stops = [3, 3]
    single_engine = Engine(config_with(0, 1.0), single.model, devices=ONE_DEVICE)
    starts = [single_engine.init_params(jax.random.PRNGKey(seed)) for seed, _, _ in variants]
    frozen = starts[0][1]

    def train(engine, model, config, bank, params, batches):
        optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable,
                                    total_steps=3, steps_per_epoch=1, bank=bank)
        shardings = engine.opt_state_shardings(optimizer.transform)
        state = engine.init_opt_state(optimizer.transform, params, shardings)
        step = engine.compile_train_step(optimizer.transform, shardings)
        for batch in batches:
            params, state, _ = step(params, frozen, state, jax.tree.map(jnp.asarray, batch), jax.random.PRNGKey(1))
        return jax.device_get(params)

    joint_engine = Engine(config_with(0, 1.0), joint.model, devices=ONE_DEVICE)
    bank_start = jax.tree.map(jnp.asarray, stack_entries([t for t, _ in starts], joint.model.bank.is_bank_leaf))
    together = train(joint_engine, joint.model, config_with(0, 1.0),
                     dataclasses.replace(joint.model.bank, learning_rates=tuple(r for _, r, _ in variants)),
                     bank_start, [pipeline.variant_train_batch(split, orders, stops, s) for s in range(3)])
    for k, (seed, rate, _) in enumerate(variants):
        batches = [pipeline.collate(split, orders[k].rows(s), split.batch_lengths(orders[k].rows(s))) for s in range(3)]
        alone = train(single_engine, single.model, config_with(seed, rate), None, starts[k][0], batches)
        for (path, leaf), joint_leaf in zip(jax.tree_util.tree_leaves_with_path(alone), jax.tree.leaves(together)):
            first = jax.tree.leaves(starts[k][0])[0]
            assert not np.array_equal(leaf, first), path  # it trained
            # A few ulps of max(|param|, rate) per step (sum order of the rows' gradients).
            bound = 3 * 4 * np.spacing(np.maximum(np.abs(leaf), np.float32(rate)))
            assert np.all(np.abs(joint_leaf[k] - leaf) <= bound), (path, np.abs(joint_leaf[k] - leaf).max())
