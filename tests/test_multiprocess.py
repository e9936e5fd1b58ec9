"""Two local processes (jax.distributed, CPU collectives over gloo) train one model in lockstep:
each feeds its own rows of every batch, and both end with the prompt a single process gets."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import toy_experiment

from ptjax.training import loop

RUNNER = Path(__file__).resolve().parent / "toy_run.py"
OVERRIDES = {"train.num_steps": 4, "train.eval_every": 2, "checkpoint.every_steps": 2,
             "checkpoint.keep_best": 1, "train.dropout": True}
SIZES = {"train": 32, "validation": 13}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_in_lockstep_and_agree(tiny_model_dir, tmp_path):
    bert = tiny_model_dir("bert")
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs = []
    for pid in range(2):
        options = {"overrides": OVERRIDES, "sizes": SIZES, "data_dir": str(tmp_path), "port": port,
                   "num_processes": 2, "process_id": pid, "dump": str(tmp_path / f"prompt{pid}.npy")}
        procs.append(subprocess.Popen(
            [sys.executable, str(RUNNER), str(tmp_path / "run"), str(bert), json.dumps(options)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=300)[0])
        finally:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]

    prompts = [np.load(tmp_path / f"prompt{pid}.npy") for pid in range(2)]
    np.testing.assert_array_equal(prompts[0], prompts[1])
    results = [json.loads((tmp_path / f"prompt{pid}.npy.json").read_text()) for pid in range(2)]
    assert results[0]["metrics"] == results[1]["metrics"]  # both evaluated the gathered predictions
    assert results[0]["processes"] == 2 and results[0]["devices"] == 4
    assert results[0]["metrics"]["validation"]["count"] == 13
    assert results[0]["metrics"]["validation"]["indices_in_order"] == 1
    run = tmp_path / "run"
    assert json.loads((run / "results.json").read_text())["processes"] == 2  # written once, by process 0
    assert sorted(p.name for p in (run / "checkpoints" / "latest").iterdir() if p.name.isdigit()) == ["2", "4"]

    # One process on 4 devices, same global batches: same prompt.
    config = toy_experiment.toy_config(bert, tmp_path, **OVERRIDES)
    model, data = toy_experiment.build(config, sizes=SIZES)
    single = loop.train(config, tmp_path / "single", model, data, devices=jax.devices()[:4])
    from ptjax.training import checkpoints
    from ptjax.training.engine import Engine

    trainable, _ = checkpoints.read_export(tmp_path / "single" / "export",
                                           Engine(config, model, devices=jax.devices()[:4]).trainable_target(),
                                           fingerprint=model.fingerprint)
    np.testing.assert_allclose(np.asarray(trainable["prompt"]["embedding"]), prompts[0], atol=1e-5, rtol=0)
    assert single["metrics"] == results[0]["metrics"]
