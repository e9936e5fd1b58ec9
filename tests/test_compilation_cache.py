"""The persistent compilation cache: where config.compilation_cache_dir puts it, and that a
second run of main.run with the same config loads every compiled step from it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptjax.errors import InputError
from ptjax.training.compilation_cache import enable, resolve

TESTS = Path(__file__).resolve().parent

# Runs main.run on the toy experiment (tests/toy_experiment.py) in a fresh process and prints
# the compilation cache's files afterwards.
RUN = """
import json, sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/.."]
import main, toy_experiment

class Experiment:
    def __init__(self, config):
        self.model, self.data = toy_experiment.build(config)

data_dir = str(__import__("pathlib").Path(sys.argv[1]).parent)
config = toy_experiment.toy_config(sys.argv[2], data_dir, compilation_cache_dir=sys.argv[3])
main.run(config, sys.argv[1], build=Experiment)
print(json.dumps(sorted(p.name for p in __import__("pathlib").Path(sys.argv[3]).iterdir())))
"""


def test_auto_is_on_for_accelerators_and_off_on_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PTJAX_COMPILATION_CACHE", str(tmp_path / "cache"))
    assert resolve("auto", "cpu") is None
    assert resolve("auto", "gpu") == resolve("auto", "tpu") == tmp_path / "cache"
    monkeypatch.delenv("PTJAX_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve("auto", "tpu") == tmp_path / "xdg" / "ptjax" / "xla"
    assert resolve("", "gpu") is None
    assert resolve("~/jax_cache", "cpu") == Path.home() / "jax_cache"


def test_a_folder_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"config.compilation_cache_dir='.*file/cache': cannot create"):
        enable(str(tmp_path / "file" / "cache"))


@pytest.mark.slow
def test_a_second_run_compiles_nothing_new(tiny_model_dir, tmp_path):
    model, cache = tiny_model_dir("bert"), tmp_path / "cache"
    env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def run(workdir):
        proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / workdir), str(model), str(cache),
                               str(TESTS)], capture_output=True, text=True, env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first = run("first")
    steps = [name for name in first if name.startswith(("jit_step-", "jit_predict-"))]
    assert steps, first  # the train and eval steps were stored
    assert run("second") == first  # every executable of the second run came from the cache
