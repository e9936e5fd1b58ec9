"""Launch scripts and the multi-process start-up they share (ptjax.training.distributed).

tests/test_multiprocess.py trains two processes started through ptjax.training.distributed with the
three JAX_* variables; here launch/local_processes.sh sets the same variables around
`main.py --distributed`, the command the SLURM script runs on a cluster.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_plan import sst2_dir

from ptjax.errors import InputError
from ptjax.training import distributed

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "launch").iterdir())


def test_distributed_arguments_from_the_environment(monkeypatch):
    for name in (distributed.ADDRESS, distributed.COUNT, distributed.PROCESS):
        monkeypatch.delenv(name, raising=False)
    assert distributed.distributed_arguments() == {}  # a cluster JAX detects by itself

    monkeypatch.setenv(distributed.ADDRESS, "node0:12355")
    monkeypatch.setenv(distributed.COUNT, "4")
    monkeypatch.setenv(distributed.PROCESS, "3")
    assert distributed.distributed_arguments() == {
        "coordinator_address": "node0:12355", "num_processes": 4, "process_id": 3,
        "cluster_detection_method": "deactivate"}

    monkeypatch.setenv(distributed.PROCESS, "4")
    with pytest.raises(InputError, match="JAX_PROCESS_ID=4"):
        distributed.distributed_arguments()
    monkeypatch.delenv(distributed.PROCESS)
    with pytest.raises(InputError, match="set both"):
        distributed.distributed_arguments()
    monkeypatch.setenv(distributed.PROCESS, "x")
    with pytest.raises(InputError, match="not an integer"):
        distributed.distributed_arguments()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launch_scripts_are_valid_bash_that_run_main(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "main.py" in text
    if script.name != "gpu_host.sh":  # one process drives every GPU of a host: nothing to join
        assert "main.py --distributed" in text


# The default run's two-process check (~30 s of CPU); tests/test_multiprocess.py's comparison with
# one process is --slow.
def test_local_processes_script_trains_through_main_distributed(tiny_model_dir, tmp_path):
    workdir = tmp_path / "run"
    args = ["--config", "configs/base.py", "--workdir", str(workdir),
            f"--config.model.name={tiny_model_dir('bert')}", f"--config.data_dir={sst2_dir(tmp_path)}",
            "--config.task.name=sst2", "--config.method.name=lester", "--config.prompt.length=4",
            "--config.task.max_length=32", "--config.train.batch_size=4", "--config.train.eval_batch_size=4",
            "--config.train.num_steps=2", "--config.logging.progress=False",
            "--config.logging.tensorboard=False"]
    proc = subprocess.run(["bash", str(REPO / "launch" / "local_processes.sh"), "2", "2", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "PTJAX_LOG_PREFIX": str(tmp_path / "log")})
    logs = "".join(p.read_text() for p in tmp_path.glob("log.process*.log"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + logs[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["processes"] == 2 and results["devices"] == 4
    assert results["status"] == "completed" and results["steps"] == 2
    assert (workdir / "export").is_dir()
