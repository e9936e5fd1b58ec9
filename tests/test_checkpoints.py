"""Resuming: a run SIGKILLed midway and rerun in the same workdir ends with the same prompt as
an uninterrupted run (optimizer state, rng and data position restored)."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toy_experiment

from ptjax.training import loop

RUNNER = Path(__file__).resolve().parent / "toy_run.py"
OVERRIDES = {
    "train.num_steps": 10, "checkpoint.every_steps": 3, "checkpoint.keep": 2, "checkpoint.keep_best": 0,
    "task.eval_splits": [], "train.dropout": True, "optimizer.name": "adamw", "schedule.name": "linear",
    "schedule.warmup_steps": 2,
}
SIZES = {"train": 28}  # 3 steps per epoch: the kill lands mid-epoch, resumes mid-epoch


def export_prompt(workdir, config, model):
    from ptjax.training import checkpoints
    from ptjax.training.engine import Engine

    trainable, _ = checkpoints.read_export(workdir / "export", Engine(config, model).trainable_target(),
                                           fingerprint=model.fingerprint)
    return np.asarray(trainable["prompt"]["embedding"]), np.asarray(trainable["head"]["kernel"])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_prompt(tiny_model_dir, tmp_path):
    bert = tiny_model_dir("bert")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    config = toy_experiment.toy_config(bert, tmp_path, **OVERRIDES)
    config.task.eval_splits = ()
    model, data = toy_experiment.build(config, sizes=SIZES)
    loop.train(config, straight, model, data)

    # Synchronous saves in the killed run, so the step-3 checkpoint is surely committed when
    # the kill comes (an async save may still be in flight two steps later; then the rerun
    # starts over, which test_half_written_checkpoints_are_ignored covers).
    options = {"overrides": OVERRIDES | {"checkpoint.async_save": False}, "sizes": SIZES,
               "data_dir": str(tmp_path), "kill_at_step": 5}
    proc = subprocess.run([sys.executable, str(RUNNER), str(killed), str(bert), json.dumps(options)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    steps = sorted(int(p.name) for p in (killed / "checkpoints" / "latest").iterdir() if p.name.isdigit())
    assert steps == [3]  # killed after step 5: the step-3 checkpoint is the latest
    assert not (killed / "export").exists() and not (killed / "results.json").exists()

    model, data = toy_experiment.build(config, sizes=SIZES)
    results = loop.train(config, killed, model, data)
    assert results["steps"] == 10
    resumed = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert {"kind": "resume", "step": 3}.items() <= next(r for r in resumed if r["kind"] == "resume").items()
    for a, b in zip(export_prompt(straight, config, model), export_prompt(killed, config, model)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    straight_losses = [r["loss"] for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines())
                       if r["kind"] == "train"]
    resumed_losses = {r["step"]: r["loss"] for r in resumed if r["kind"] == "train"}
    np.testing.assert_allclose([resumed_losses[s] for s in range(1, 11)], straight_losses, atol=1e-6)


@pytest.mark.slow
def test_resume_refuses_a_changed_train_split(tiny_model_dir, tmp_path):
    config = toy_experiment.toy_config(tiny_model_dir("bert"), tmp_path, **{
        "train.num_steps": 2, "checkpoint.every_steps": 1, "task.eval_splits": (), "checkpoint.export": False})
    model, data = toy_experiment.build(config, sizes={"train": 16})
    loop.train(config, tmp_path, model, data)
    config.train.num_steps = 4
    model, data = toy_experiment.build(config, sizes={"train": 24})
    (tmp_path / "cache").rename(tmp_path / "old-cache")  # the task really changed
    with pytest.raises(loop.InputError, match="train split had 16 examples; it now has 24"):
        loop.train(config, tmp_path, model, data)


def test_half_written_checkpoints_are_ignored(tiny_model_dir, tmp_path):
    """A save interrupted before orbax's final rename leaves a temporary folder; the rerun
    resumes from the last committed step and clears it."""
    config = toy_experiment.toy_config(tiny_model_dir("bert"), tmp_path, **{
        "train.num_steps": 2, "checkpoint.every_steps": 1, "task.eval_splits": (), "checkpoint.export": False})
    model, data = toy_experiment.build(config, sizes={"train": 16})
    loop.train(config, tmp_path, model, data)
    latest = tmp_path / "checkpoints" / "latest"
    interrupted = latest / "3.orbax-checkpoint-tmp-1234"
    (interrupted / "state").mkdir(parents=True)
    (interrupted / "state" / "junk").write_text("half")
    config.train.num_steps = 3
    model, data = toy_experiment.build(config, sizes={"train": 16})
    results = loop.train(config, tmp_path, model, data)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "resume"] == [2]
    assert results["steps"] == 3 and not interrupted.exists()


def test_best_checkpoint_of_a_replayed_step_is_replaced(tmp_path):
    """A run killed between a best-on-dev save and the next `latest` save evaluates that step
    again on resume: the second best save of the step replaces the first instead of failing."""
    import jax.numpy as jnp

    from ptjax.training.checkpoints import Checkpoints

    first = Checkpoints(tmp_path, keep=1, keep_best=1, best_mode="max", async_save=False)
    first.save_best(30, {"prompt": jnp.zeros(3)}, 0.5, {"step": 30})
    first.close()
    again = Checkpoints(tmp_path, keep=1, keep_best=1, best_mode="max", async_save=False)
    again.save_best(30, {"prompt": jnp.ones(3)}, 0.6, {"step": 30})
    trainable, meta = again.restore_best({"prompt": jnp.zeros(3)})
    again.close()
    assert meta == {"step": 30} and np.asarray(trainable["prompt"]).tolist() == [1.0, 1.0, 1.0]
