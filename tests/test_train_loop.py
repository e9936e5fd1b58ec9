"""A whole training run in a workdir: metrics.jsonl, results.json, TensorBoard, checkpoints,
the prompt export and mode "eval" on it, resuming a finished run, early stopping, divergence."""

import json

import jax
import numpy as np
import pytest
import tiny_models
import toy_experiment

from ptjax.errors import InputError
from ptjax.training import checkpoints as ckpt
from ptjax.training import loop

STEPS = 6


@pytest.fixture(scope="module")
def bert_dir(tiny_model_dir):
    return tiny_model_dir("bert")


@pytest.fixture(scope="module")
def run(bert_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = toy_experiment.toy_config(bert_dir, workdir, **{
        "train.num_steps": STEPS, "train.eval_every": 3, "checkpoint.every_steps": 2,
        "checkpoint.keep": 2, "checkpoint.keep_best": 1, "logging.tensorboard": True,
        "logging.progress": True})
    model, data = toy_experiment.build(config)
    results = loop.train(config, workdir, model, data)
    return workdir, config, results


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_results_and_event_files(run):
    workdir, config, _ = run
    records = read_jsonl(workdir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["loss"]) and r["examples_per_s"] > 0 and "learning_rate" in r for r in train)
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[0]["validation"]["count"] == 20 and evals[0]["validation"]["indices_in_order"] == 1
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["backbone"] == str(config.model.name) and saved["status"] == "completed"
    assert saved["params"]["trainable"] == 4 * 32 + 32 * 2 + 2  # prompt + head
    assert saved["params"]["total"] > 1000 * saved["params"]["trainable"]
    assert saved["config"]["train"]["num_steps"] == STEPS and saved["steps"] == STEPS
    best_step = saved["best"]["step"]
    assert saved["metrics"]["validation"] == next(r["validation"] for r in evals if r["step"] == best_step)
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoints_keep_n_and_best(run):
    workdir, _, results = run
    latest = sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir() if p.name.isdigit())
    assert latest == [4, 6]
    # trainable params + optimizer state only: the 1M-parameter frozen backbone is never saved
    saved_bytes = sum(f.stat().st_size for f in (workdir / "checkpoints" / "latest" / "6").rglob("*") if f.is_file())
    assert saved_bytes < 200_000
    best = [int(p.name) for p in (workdir / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert best == [results["best"]["step"]]
    assert (workdir / "export").is_dir() and not list(workdir.glob("export.*"))


def test_eval_mode_restores_the_export(run, tmp_path):
    workdir, config, results = run
    config = config.copy_and_resolve_references()
    config.mode, config.restore = "eval", str(workdir)  # a workdir is accepted for its export
    model, data = toy_experiment.build(config)
    evaluated = loop.evaluate(config, tmp_path, model, data)
    assert evaluated["metrics"] == results["metrics"]  # the export holds the best prompt
    assert evaluated["export_method"] == model.export_metadata()
    assert json.loads((tmp_path / "results.json").read_text())["mode"] == "eval"


def test_eval_mode_refuses_another_backbone_or_layout(run, tmp_path):
    workdir, config, _ = run
    other = tiny_models.save_tiny("bert", tmp_path / "other", seed=1)
    config = config.copy_and_resolve_references()
    config.mode, config.restore, config.model.name = "eval", str(workdir / "export"), str(other)
    model, data = toy_experiment.build(config)
    with pytest.raises(InputError, match="trained on backbone .* set config.model.name"):
        loop.evaluate(config, tmp_path / "eval", model, data)
    config.model.name, config.prompt.length = run[1].model.name, 5
    model, data = toy_experiment.build(config)
    with pytest.raises(InputError, match=r"do not match .*shape differs for prompt/embedding \[4, 32\] vs \[5, 32\]"):
        loop.evaluate(config, tmp_path / "eval", model, data)
    config.restore = str(tmp_path)
    with pytest.raises(InputError, match="not a prompt export"):
        loop.evaluate(config, tmp_path / "eval", model, data)


def test_rerunning_a_finished_workdir_resumes_without_training(run):
    workdir, config, results = run
    model, data = toy_experiment.build(config)
    again = loop.train(config, workdir, model, data)
    assert again["steps"] == STEPS and again["metrics"] == results["metrics"]
    assert read_jsonl(workdir / "metrics.jsonl")[-1]["kind"] == "resume"


def test_early_stopping(bert_dir, tmp_path):
    config = toy_experiment.toy_config(bert_dir, tmp_path, **{
        "train.num_steps": 20, "train.eval_every": 1, "train.early_stopping_patience": 2,
        "optimizer.learning_rate": 0.0, "checkpoint.keep_best": 0, "checkpoint.export": False})
    model, data = toy_experiment.build(config, sizes={"train": 16, "validation": 8})
    results = loop.train(config, tmp_path, model, data)
    assert results["status"] == "early_stopped" and results["steps"] == 3
    assert results["best"]["step"] == 1


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(bert_dir, tmp_path):
    # 17 train examples, batch 8: each epoch drops one. Poison the one epoch 0 drops, so the
    # first NaN comes in epoch 1 (steps 3-4), after the checkpoint of step 2.
    config = toy_experiment.toy_config(bert_dir, tmp_path, **{
        "train.num_steps": 6, "checkpoint.every_steps": 2, "checkpoint.async_save": False,
        "task.eval_splits": ()})
    rng = lambda epoch: np.random.default_rng([config.seed, epoch]).permutation(17)
    poisoned = int(rng(0)[16])
    position = int(np.flatnonzero(rng(1) == poisoned)[0])
    assert position < 16  # the data is set up so that epoch 1 uses it
    bad_step = 3 + position // 8
    model, data = toy_experiment.build(config, sizes={"train": 17}, poison={"train": poisoned})
    with pytest.raises(loop.Diverged, match=rf"NaN/inf at step {bad_step}; .*last good checkpoint: step 2"):
        loop.train(config, tmp_path, model, data)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "diverged" and f"step {bad_step}" in saved["error"]
    latest = sorted(int(p.name) for p in (tmp_path / "checkpoints" / "latest").iterdir() if p.name.isdigit())
    assert latest == [2]
    from ptjax.training.engine import Engine

    engine = Engine(config, model)
    restored = ckpt.Checkpoints(tmp_path, keep=2, keep_best=0, best_mode="max", async_save=False)
    optimizer = __import__("ptjax.training.optimizer", fromlist=["x"]).build_optimizer(
        config, engine.trainable_shapes, model.is_trainable, total_steps=6, steps_per_epoch=2)
    trainable, _, meta = restored.restore_latest(
        engine.trainable_target(), engine.opt_state_target(optimizer.transform,
                                                           engine.opt_state_shardings(optimizer.transform)))
    restored.close()
    assert meta["step"] == 2 and meta["epoch"] == 1 and meta["batch_in_epoch"] == 0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trainable))
