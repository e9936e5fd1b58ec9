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


# --------------------------------------------------------------------------------------------
# The batched sweep job (config.sweep.batched) against the same sweep run one by one.


def _sst2_sweep(tiny_model_dir, root, **overrides):
    folder = root / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in SENTENCES]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    config = base.get_config()
    config.mode = "sweep"
    config.model.name, config.data_dir = str(tiny_model_dir("bert")), str(root)
    config.task.name, config.method.name, config.task.max_length = "sst2", "lester", 32
    config.task.length_buckets, config.prompt.length = (32,), 4
    config.optimizer.name, config.optimizer.clip_norm = "adam", 0.5  # clipping on: each entry by its own norm
    config.train.batch_size, config.train.num_steps, config.train.eval_every, config.train.log_every = 4, 4, 2, 2
    config.train.dropout = False  # on for Lester below (METHODS)
    config.checkpoint.keep_best = 1  # the export is each run's best evaluation
    config.logging.tensorboard = config.logging.progress = False
    config.sweep.variants = ("few: optimizer.learning_rate=0.03; task.max_train_examples=4",
                             "all: optimizer.learning_rate=0.1")
    config.sweep.seeds = (0, 1)
    for key, value in overrides.items():
        set_nested(config, key, value)
    return config


def set_nested(config, key, value):
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


@pytest.fixture(scope="module")
def amplified_build(tiny_model_dir):
    """experiment.build on one tiny BERT whose weights are scaled up (a prompt can move its loss)."""
    from ptjax.experiment import open_configured_backbone

    shared = {}

    def make(config):
        if "backbone" not in shared:
            shared["backbone"] = open_configured_backbone(config)
            amplify_weights(shared["backbone"], 5.0)
        return build(config, backbone=shared["backbone"])

    return make


def _exports(root, runs):
    from flax import traverse_util

    from ptjax.training.checkpoints import read_export_arrays

    return {run: traverse_util.flatten_dict(read_export_arrays(root / run / "export")[0]) for run in runs}


RUNS = ("few/seed_0", "few/seed_1", "all/seed_0", "all/seed_1")


# Lester (verbalizer head, nothing but the prompt trains) with the backbone's dropout on and one
# length bucket: each variant's block draws the masks of its own run (same key, same block shape).
# P-tuning v2 (deep prefixes and a trained [CLS] linear head, per variant), dropout off, buckets of
# 9-16 tokens: the job pads each step's blocks to their longest bucket, longer than a run's own batch.
METHODS = {"lester": {"train.dropout": True},
           "ptuning_v2": {"method.name": "ptuning_v2", "head.type": "cls", "prompt.deep.length": 2,
                          "task.length_buckets": (9, 10, 11, 12, 16)}}


@pytest.fixture(scope="module", params=sorted(METHODS))
def both_ways(request, tiny_model_dir, amplified_build, tmp_path_factory):
    from ptjax.sweep import run_sweep

    root = tmp_path_factory.mktemp("batched")
    outputs = {}
    for batched in (False, True):
        config = _sst2_sweep(tiny_model_dir, root, **METHODS[request.param])
        config.sweep.batched = batched
        workdir = root / ("batched" if batched else "separate")
        outputs[batched] = run_sweep(config, workdir, build=amplified_build, devices=ONE_DEVICE)
    return root, request.param


def test_batched_sweep_equals_separate_runs(both_ways):
    """Four runs (seeds 0/1 x rate 0.03 with 4 training examples / rate 0.1 with all 8; Adam,
    clipping 0.5, the better of two evaluations exported) trained as one job end with the exports,
    metrics and predictions of the same sweep run one by one. Each entry runs its own run's
    computation under a vmap over the variant axis, so only the order of float sums can differ:
    a block padded to a longer bucket than its run's batch sums attention's softmax normaliser
    and values over more (zero) terms, grouped otherwise; XLA may tile the batched matmuls
    otherwise; the per-entry clip norm is a sum under vmap. Each such sum lands within a few
    ulps of its magnitude; through the backward pass into Adam's normalised step (about the
    rate in size), over 4 steps, a parameter moves by at most some tens of ulps of its tensor's
    scale (max |leaf|, or the rate when larger): bound 64 ulps. Observed on the 2-core host:
    Lester bit-equal (one bucket: the same sums), P-tuning v2 with padded blocks up to 29 ulps.
    Lester trains with dropout on: a variant's masks come from its own run's key at each step,
    drawn for a block of its run's shape, so they are its run's masks and the equality holds."""
    import json

    separate, batched = both_ways[0] / "separate", both_ways[0] / "batched"
    plan = (batched / "batched_plan.txt").read_text()
    assert plan.startswith("batched job 1: ") and all(run in plan for run in RUNS) and "alone" not in plan
    alone, together = _exports(separate, RUNS), _exports(batched, RUNS)
    worst = 0.0
    for run in RUNS:
        rate = 0.03 if run.startswith("few") else 0.1
        results = {w: json.loads((root / run / "results.json").read_text()) for w, root in
                   (("alone", separate), ("together", batched))}
        assert results["alone"]["status"] == results["together"]["status"] == "completed"
        assert results["together"]["metrics"] == results["alone"]["metrics"], run
        assert results["together"]["best"] == results["alone"]["best"], run
        assert results["together"]["num_train_examples"] == (4 if run.startswith("few") else 8)
        assert sorted(results["together"]["batched"]["trained_with"]) == sorted(
            str(batched / r) for r in RUNS if r != run)
        for path, leaf in alone[run].items():
            joint = together[run][path]
            assert joint.shape == leaf.shape
            ulp = np.spacing(np.float32(max(np.abs(leaf).max(), rate)))
            worst = max(worst, float(np.max(np.abs(joint - leaf)) / ulp))
            assert np.all(np.abs(joint - leaf) <= 64 * ulp), (run, path, np.abs(joint - leaf).max() / ulp)
    print(f"largest difference: {worst:.1f} ulps")
    # metrics.jsonl: the same records (train losses within float noise, evaluations equal).
    for run in RUNS:
        records = [[json.loads(line) for line in (root / run / "metrics.jsonl").read_text().splitlines()]
                   for root in (separate, batched)]
        evals = [[(r["step"], {k: v for k, v in r.items() if k not in ("time", "kind", "step")})
                  for r in rs if r["kind"] == "eval"] for rs in records]
        assert evals[0] == evals[1]
        losses = [[r["loss"] for r in rs if r["kind"] == "train"] for rs in records]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
        trains = [[r for r in rs if r["kind"] == "train"] for rs in records]
        assert [sorted(r) for r in trains[1]] == [sorted(r) for r in trains[0]]  # grad_norm included
        np.testing.assert_allclose([r["grad_norm"] for r in trains[1]], [r["grad_norm"] for r in trains[0]],
                                   rtol=1e-5)
        # The evaluation's forward pass runs batched too (each eval batch once per variant): scores
        # (log-probabilities of order 1) differ by float noise (observed 1.5e-7), predictions not at all.
        predictions = [[json.loads(line) for line in (root / run / "predictions" / "validation.jsonl").open()]
                       for root in (separate, batched)]
        assert [p["prediction"] for p in predictions[0]] == [p["prediction"] for p in predictions[1]]
        for one, other in zip(*predictions):
            np.testing.assert_allclose(list(other["scores"].values()), list(one["scores"].values()), atol=1e-5)
    # The tables of both sweeps agree; a non-batched rerun of the batched folder finds every run finished.
    assert (batched / "results.md").read_text().split("\n", 1)[1] == (separate / "results.md").read_text().split("\n", 1)[1]


def test_killed_batched_job_resumes_where_it_stopped(both_ways, tiny_model_dir, amplified_build, monkeypatch):
    """A batched job killed after step 3 (a checkpoint every step) resumes on rerun and ends with the
    exports, metrics and logged records of the job that was never stopped."""
    import functools
    import json

    from ptjax.sweep import run_sweep
    from ptjax.training import batched

    root, method = both_ways
    if method != "ptuning_v2":
        pytest.skip("resume is checked once, on P-tuning v2 (prefixes and head)")

    class Killed(Exception):
        pass

    def kill(step):
        if step == 3:
            raise Killed

    config = _sst2_sweep(tiny_model_dir, root, **METHODS[method])
    config.sweep.batched, config.checkpoint.every_steps = True, 1
    workdir = root / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(batched, "run_job", functools.partial(batched.run_job, hooks=[kill]))
        with pytest.raises(Killed):
            run_sweep(config, workdir, build=amplified_build, devices=ONE_DEVICE)
    assert not any((workdir / run / "results.json").exists() for run in RUNS)
    run_sweep(config, workdir, build=amplified_build, devices=ONE_DEVICE)
    reference = root / "batched"
    exports, resumed = _exports(reference, RUNS), _exports(workdir, RUNS)
    for run in RUNS:
        for path, leaf in exports[run].items():
            np.testing.assert_array_equal(resumed[run][path], leaf, err_msg=f"{run} {path}")
        results = [json.loads((w / run / "results.json").read_text()) for w in (reference, workdir)]
        assert results[1]["metrics"] == results[0]["metrics"] and results[1]["steps"] == 4
        logged = [[{k: v for k, v in json.loads(line).items() if k not in ("time", "examples_per_s", "tokens_per_s")}
                   for line in (w / run / "metrics.jsonl").read_text().splitlines()] for w in (reference, workdir)]
        assert logged[1] == logged[0], run


def test_groups_split_by_prompt_length_and_unbatchable_runs_run_alone(tiny_model_dir, amplified_build, tmp_path,
                                                                      capsys):
    """Two prompt lengths make two jobs; evaluation-only runs cannot batch and run alone, as the
    plan says; every run ends finished and in the tables, and a non-batched rerun skips them all."""
    import json

    from ptjax.sweep import run_sweep

    config = _sst2_sweep(tiny_model_dir, tmp_path, **{"train.num_steps": 2})
    config.sweep.variants = ("short: prompt.length=2", "long: prompt.length=4", "zero: mode=eval")
    config.sweep.batched = True
    workdir = tmp_path / "sweep"
    run_sweep(config, workdir, build=amplified_build, devices=ONE_DEVICE)
    plan = (workdir / "batched_plan.txt").read_text().splitlines()
    assert plan == ["batched job 1: short/seed_0, short/seed_1", "batched job 2: long/seed_0, long/seed_1",
                    "alone: zero/seed_0 (mode=eval (only training runs batch))",
                    "alone: zero/seed_1 (mode=eval (only training runs batch))"]
    for variant in ("short", "long", "zero"):
        for seed in (0, 1):
            results = json.loads((workdir / variant / f"seed_{seed}" / "results.json").read_text())
            assert results["status"] == "completed"
            if variant != "zero":
                assert results["batched"]["trained_with"] == [str(workdir / variant / f"seed_{1 - seed}")]
                assert results["config"]["prompt"]["length"] == (2 if variant == "short" else 4)
    assert len(list((workdir / "batched_jobs").iterdir())) == 2
    table = (workdir / "results.md").read_text()
    assert all(f"| {v} | 2/2 |" in table for v in ("short", "long", "zero"))
    capsys.readouterr()
    config.sweep.batched = False
    run_sweep(config, workdir, build=amplified_build, devices=ONE_DEVICE)
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6


def test_schedule_shapes_that_differ_keep_runs_apart():
    """A linear schedule over different step counts (epochs of different lengths) cannot be one
    optimizer's schedule scaled per entry: the job refuses and the sweep runs those runs alone."""
    from ptjax.training.batched import schedule_reason

    configs = [base.get_config() for _ in range(2)]
    for config in configs:
        config.schedule.name = "linear"
    assert "different step counts" in schedule_reason(configs, [10, 20], [5, 10])
    for config in configs:
        config.schedule.name = "constant"
    assert schedule_reason(configs, [10, 20], [5, 10]) is None
    assert schedule_reason(configs, [10, 10], [5, 5]) is None


def test_sweep_benchmark_times_both_ways_and_puts_the_tables_side_by_side(tiny_model_dir, tmp_path, capsys):
    """python -m ptjax.benchmarks.sweep's measurement on a tiny sweep: both ways run in fresh folders,
    the time split adds up to the wall time, and the tables agree."""
    from ptjax.benchmarks.sweep import run_both

    config = _sst2_sweep(tiny_model_dir, tmp_path, **{"train.num_steps": 2})
    config.sweep.variants = ()
    report = run_both("tiny", config, tmp_path / "bench", devices=ONE_DEVICE)
    for mode in ("one_by_one", "batched"):
        measured = report[mode]
        assert measured["runs"] == 2 and measured["train_examples"] == 2 * 2 * 4
        parts = measured["load_s"] + measured["compile_s"] + measured["eval_s"] + measured["train_other_s"]
        assert parts == pytest.approx(measured["wall_s"]) and measured["compile_s"] > 0
    assert report["speedup"] == pytest.approx(report["one_by_one"]["wall_s"] / report["batched"]["wall_s"])
    row = next(line for line in report["table"].splitlines() if line.startswith("| base |"))
    cells = [cell.strip() for cell in row.strip("| \n").split(" | ")][1:]
    assert cells[0::2] == cells[1::2]  # each metric: one by one, then batched, equal here
    with pytest.raises(SystemExit, match="not empty"):
        run_both("tiny", config, tmp_path / "bench", devices=ONE_DEVICE)


def test_a_job_resumed_from_an_older_checkpoint_logs_the_metrics_its_steps_have():
    """A job checkpointed before the train records held grad_norm and tokens_per_s resumes with
    pending steps that lack them: the window is logged with what every step has."""
    from types import SimpleNamespace

    from ptjax.training.batched import _Job

    logged = []
    config = base.get_config()
    old, new = {"variant_loss": 0.5, "accuracy": 1.0}, {"tokens": 30, "variant_loss": 0.7, "accuracy": 0.0,
                                                        "variant_grad_norm": 2.0}
    job = SimpleNamespace(
        job={"pending": [[[1, dict(old)], [2, dict(new)]]], "total": 10}, configs=[config],
        engine=SimpleNamespace(model=SimpleNamespace(bank=SimpleNamespace(learning_rates=(0.1,)))),
        optimizer=SimpleNamespace(schedules={"prompt": None}), orders=[SimpleNamespace(steps_per_epoch=5)],
        windows=[0.0], reporters=[SimpleNamespace(log=lambda kind, step, record: logged.append((kind, step, record)))])
    _Job._flush(job, 0)
    (kind, step, record), = logged
    assert (kind, step, record["loss"], record["accuracy"]) == ("train", 2, 0.6, 0.5)
    assert "grad_norm" not in record and record["tokens_per_s"] > 0
    _Job._flush(job, 0)  # the window was emptied
    job.job["pending"][0] = [[3, dict(new)]]
    _Job._flush(job, 0)
    assert logged[-1][2]["grad_norm"] == 2.0
