"""What a run does when something goes wrong (issue 20's fault table): one line, a distinct exit
status (ptjax/errors.py), nothing saved damaged, and a rerun that resumes bit-equal.

Runs use the toy experiment (tests/toy_experiment.py: a tiny random BERT, a soft prompt and a
linear head), in this process where the fault allows it; signals go to a fresh process."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toy_experiment

import main  # the repository's main.py
from ptjax import errors
from ptjax.errors import InputError
from ptjax.training import checkpoints as ckpt
from ptjax.training import loop

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# Three checkpoints (steps 1-3, the last two kept), no evaluation: the run the damage tests start from.
BASE = {"train.num_steps": 3, "checkpoint.every_steps": 1, "checkpoint.keep": 2, "checkpoint.keep_best": 0,
        "task.eval_splits": ()}
SIZES = {"train": 28, "validation": 12}


@pytest.fixture(scope="module")
def bert(tiny_model_dir):
    return tiny_model_dir("bert")


class Experiment:
    """main.run's `build`: the toy experiment; counts the builds (options are checked before any)."""

    built = 0

    def __init__(self, config):
        Experiment.built += 1
        self.model, self.data = toy_experiment.build(config, sizes=SIZES)


def configured(bert, **overrides):
    """The toy config with BASE and `overrides`; the data folder (the toy task reads none) is fixed,
    so that reruns differ only where a test says."""
    return toy_experiment.toy_config(bert, Path(bert).parent, **(BASE | overrides))


def train(config, workdir, **kwargs):
    model, data = toy_experiment.build(config, sizes=SIZES)
    return loop.train(config, workdir, model, data, **kwargs)


def records(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def steps_logged_once(workdir):
    seen = [(r["kind"], r["step"]) for r in records(workdir)]
    return len(seen) == len(set(seen))


@pytest.fixture(scope="module")
def finished(bert, tmp_path_factory):
    """A finished 3-step run; each test damages its own copy."""
    workdir = tmp_path_factory.mktemp("finished")
    train(configured(bert), workdir)
    return workdir


@pytest.fixture
def copy(finished, tmp_path):
    def make(name="run"):
        target = tmp_path / name
        shutil.copytree(finished, target)
        return target
    return make


def truncate_all(folder: Path, size: int = 10):
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_size > size:
            with open(path, "r+b") as f:
                f.truncate(size)


def exit_of(call):
    """(exit status, stderr lines) of a main.run_reporting_errors call that must exit."""
    with pytest.raises(SystemExit) as exited:
        call()
    return exited.value.code


# ------------------------------------------------------------------------------ bad input


def test_config_file_that_does_not_import_is_one_line(tmp_path):
    bad = tmp_path / "bad_config.py"
    bad.write_text("from configs import base\n\ndef get_config():\n    config = base.get_config(\n    return config\n")
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--config", str(bad), "--workdir", str(tmp_path / "w")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == errors.EXIT_INPUT_ERROR, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {bad}:4: SyntaxError: '(' was never closed (bad_config.py, line 4)"]
    assert not (tmp_path / "w").exists()


def test_named_options_are_checked_before_the_backbone_loads(bert, tmp_path):
    """restore in mode train, a best_metric or split the task does not have, a missing prompt
    source: refused before `build` opens the backbone."""
    Experiment.built = 0
    cases = [
        ({"restore": "/nonexistent"}, "config.restore='/nonexistent' is read only in mode 'eval'"),
        ({"task.name": "rte", "train.best_metric": "f1"}, "config.train.best_metric='f1': task rte reports accuracy"),
        ({"task.name": "rte", "task.eval_splits": ("validaton",)}, "config.task.eval_splits: task rte has no split 'validaton'"),
        ({"prompt.init": "pretrained", "prompt.init_from": str(tmp_path / "nothing")}, "config.prompt.init_from="),
        ({"prompt.init_from": str(tmp_path)}, "is read only with config.prompt.init='pretrained'"),
    ]
    for overrides, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            main.run(configured(bert, **overrides), str(tmp_path / "w"), build=Experiment)
    assert Experiment.built == 0 and not (tmp_path / "w").exists()
    # The names a task does have pass: rte's metric family and its split aliases.
    from ptjax.training.config import check_names
    check_names(configured(bert, **{"task.name": "rte", "train.best_metric": "accuracy",
                                              "task.eval_splits": ("validation", "dev32")}))
    check_names(configured(bert, **{"task.name": "conll03", "train.best_metric": "entity_precision"}))


# ------------------------------------------------------------------------------ damaged checkpoints


@pytest.mark.parametrize("damage", ["arrays", "metadata"])
def test_unreadable_step_is_skipped_with_one_warning(bert, copy, damage, capsys):
    workdir = copy()
    step3 = workdir / "checkpoints" / "latest" / "3"
    truncate_all(step3 / "state" if damage == "arrays" else step3 / "meta")
    capsys.readouterr()
    results = train(configured(bert, **{"train.num_steps": 4}), workdir)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: checkpoint {step3.resolve()} cannot be read ("), warnings
    assert results["steps"] == 4
    assert [r["step"] for r in records(workdir) if r["kind"] == "resume"] == [2]
    assert steps_logged_once(workdir)
    assert (workdir / "checkpoints" / "unreadable" / "latest-3").is_dir()  # kept, out of the way
    assert sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir()) == [3, 4]


def test_no_readable_step_is_one_error_naming_the_folder(bert, copy):
    workdir = copy()
    latest = workdir / "checkpoints" / "latest"
    for step in ("2", "3"):
        truncate_all(latest / step / "meta")
    config = configured(bert, **{"train.num_steps": 4})
    with pytest.raises(InputError, match=f"{latest.resolve()}: no checkpoint step can be read \\(tried 3, 2\\)"):
        train(config, workdir)
    assert sorted(p.name for p in latest.iterdir()) == ["2", "3"]  # nothing moved or deleted


def test_damaged_export_is_one_error_line(bert, copy, capsys):
    workdir = copy()
    truncate_all(workdir / "export" / "params")
    config = configured(bert, mode="eval", restore=str(workdir / "export"),
                        **{"task.eval_splits": ("validation",)})
    capsys.readouterr()
    status = exit_of(lambda: main.run_reporting_errors(config, str(workdir / "eval"), Experiment,
                                                       explicit=("task.eval_splits",)))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == errors.EXIT_INPUT_ERROR
    assert err[-1].startswith(f"error: {(workdir / 'export').resolve()}: the prompt export cannot be read (")
    assert "Traceback" not in "\n".join(err)


# ------------------------------------------------------------------------------ changed config


@pytest.mark.parametrize("overrides, named", [
    ({"prompt.length": 6}, "prompt.length (4 -> 6)"),
    ({"optimizer.name": "sgd"}, "optimizer.name ('adamw' -> 'sgd')"),
])
def test_a_change_of_the_saved_state_is_refused_by_name(bert, copy, overrides, named):
    workdir = copy()
    with pytest.raises(InputError, match=named.replace("(", r"\(").replace(")", r"\)")):
        train(configured(bert, **{"train.num_steps": 4, **overrides}), workdir)
    assert sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir()) == ["2", "3"]


def test_a_workdir_recorded_before_a_key_existed_resumes(bert, copy, capsys):
    """A key a newer ptjax added (here method.train_backbone, a state key) is missing from an older
    workdir's record: at its default it is no change. Set otherwise, it is refused by name."""
    workdir = copy()
    recorded = json.loads((workdir / "config.json").read_text())
    assert recorded["method"].pop("train_backbone") is False
    (workdir / "config.json").write_text(json.dumps(recorded))
    capsys.readouterr()
    with pytest.raises(InputError, match=r"method.train_backbone \(null -> true\)"):
        train(configured(bert, **{"train.num_steps": 4, "method.train_backbone": True}), workdir)
    assert train(configured(bert, **{"train.num_steps": 4}), workdir)["steps"] == 4
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "train_backbone" not in warnings[0]  # the one warning: num_steps


def test_other_changes_are_warned_and_recorded(bert, copy, capsys):
    workdir = copy()
    capsys.readouterr()
    config = configured(bert, **{"train.num_steps": 4, "optimizer.learning_rate": 0.02, "seed": 5})
    assert train(config, workdir)["steps"] == 4
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "optimizer.learning_rate 0.01 -> 0.02" in warnings[0] and "seed 0 -> 5" in warnings[0]
    change = [r for r in records(workdir) if r["kind"] == "config_change"]
    assert [(c["step"], sorted(c["changed"])) for c in change] == [
        (3, ["optimizer.learning_rate", "seed", "train.num_steps"])]
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0  # the record stays the first run's


# ------------------------------------------------------------------------------ the file system


def test_unwritable_workdir_exits_73(bert, tmp_path, monkeypatch, capsys):
    """Unprivileged: the checkpoint folder cannot be made (the error a read-only disk gives)."""
    def read_only(self, workdir, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(workdir) / "checkpoints"))

    monkeypatch.setattr(ckpt.Checkpoints, "__init__", read_only)
    config = configured(bert)
    status = exit_of(lambda: main.run_reporting_errors(config, str(tmp_path / "w"), Experiment))
    assert status == errors.EXIT_WORKDIR_NOT_WRITABLE
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: cannot write {tmp_path / 'w' / 'checkpoints'}: Read-only file system (errno 30); "
        f"choose a --workdir that can be written")


def test_full_disk_exits_75_and_the_rerun_logs_each_step_once(bert, copy, monkeypatch, capsys):
    """Unprivileged: the save of step 5 fails with ENOSPC after step 4's went through."""
    workdir = copy()
    save = ckpt.Checkpoints.save

    def save_until_full(self, step, *args):
        if step == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, step, *args)

    monkeypatch.setattr(ckpt.Checkpoints, "save", save_until_full)
    config = configured(bert, **{"train.num_steps": 6})
    status = exit_of(lambda: main.run_reporting_errors(config, str(workdir), Experiment))
    assert status == errors.EXIT_DISK_FULL
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: cannot write {workdir}: No space left on device (errno 28); free space and rerun the "
        f"same command (it resumes from step 4, the last checkpoint)")
    monkeypatch.setattr(ckpt.Checkpoints, "save", save)
    assert main.run(config, str(workdir), build=Experiment)["steps"] == 6
    assert [r["step"] for r in records(workdir) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert steps_logged_once(workdir)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the monkeypatched tests cover it")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_and_read_only_disks_for_real(bert, small_disk, tmp_path, capsys):
    """A real full disk (orbax's background writers fail) and a real read-only one."""
    workdir = small_disk / "run"
    config = configured(bert, **{"train.num_steps": 12})
    main.run(configured(bert), str(workdir), build=Experiment)
    free_kib = shutil.disk_usage(small_disk).free // 1024
    (small_disk / "filler").write_bytes(b"\0" * ((free_kib - 40) * 1024))
    capsys.readouterr()
    assert exit_of(lambda: main.run_reporting_errors(config, str(workdir), Experiment)) == errors.EXIT_DISK_FULL
    err = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].startswith(f"error: cannot write {workdir}")
    (small_disk / "filler").unlink()
    assert main.run(config, str(workdir), build=Experiment)["steps"] == 12
    assert steps_logged_once(workdir)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    config.train.num_steps = 13
    assert exit_of(lambda: main.run_reporting_errors(config, str(workdir), Experiment)) == errors.EXIT_WORKDIR_NOT_WRITABLE
    assert "Read-only file system" in capsys.readouterr().err.splitlines()[-1]


# ------------------------------------------------------------------------------ signals and bit-equal resume

# A run in a fresh process: main.run_reporting_errors on the toy experiment, signalling itself
# (SIGINT, SIGTERM or SIGKILL) right after the step named by the third argument.
RUNNER = """
import json, os, signal, sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/.."]
import main, toy_experiment
from ptjax.training import loop

options = json.loads(sys.argv[3])
class Experiment:
    def __init__(self, config):
        self.model, self.data = toy_experiment.build(config, sizes=options["sizes"])
config = toy_experiment.toy_config(sys.argv[2], options["data_dir"], **options["overrides"])
name, at = options["signal_at"]
plain_train = loop.train
def train(*args, **kwargs):
    send = lambda step: step == at and os.kill(os.getpid(), getattr(signal, name))
    return plain_train(*args, hooks=[send], **kwargs)
loop.train = train
main.run_reporting_errors(config, sys.argv[1], Experiment)
"""

# Dropout on, a linear schedule, Adam, evaluations, logging windows of 3 steps that checkpoints
# (every 4 steps) cut, and an epoch boundary (28 examples, batch 8: 3 steps an epoch) mid-run.
RESUMABLE = {"train.num_steps": 9, "train.dropout": True, "train.log_every": 3, "train.eval_every": 4,
             "checkpoint.every_steps": 4, "checkpoint.keep": 2, "checkpoint.keep_best": 0,
             "task.eval_splits": ("validation",), "schedule.name": "linear", "schedule.warmup_steps": 2}


def run_in_process(workdir, bert, data_dir, signal_at):
    options = {"overrides": RESUMABLE, "sizes": SIZES, "data_dir": str(data_dir), "signal_at": signal_at}
    return subprocess.run([sys.executable, "-c", RUNNER, str(workdir), str(bert), json.dumps(options), str(TESTS)],
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def uninterrupted(bert, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    main.run(toy_experiment.toy_config(bert, workdir, **RESUMABLE), str(workdir), build=Experiment)
    return workdir


def exported(workdir):
    """The export's float32 arrays, read back as they were written."""
    arrays, _ = ckpt.read_export_arrays(Path(workdir) / "export")
    return {name: np.asarray(value) for name, value in sorted(
        (("/".join(k), v) for k, v in _flat(arrays)))}


def _flat(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def comparable_metrics(workdir):
    """{(kind, step): values} of the train and eval records, without wall-clock figures."""
    clock = {"time", "examples_per_s", "tokens_per_s"}
    return {(r["kind"], r["step"]): {k: v for k, v in r.items() if k not in clock}
            for r in records(workdir) if r["kind"] in ("train", "eval")}


def assert_bit_equal(resumed, uninterrupted, context):
    a, b = exported(resumed), exported(uninterrupted)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == np.float32 and a[name].tobytes() == b[name].tobytes(), f"{name} differs ({context})"
    assert comparable_metrics(resumed) == comparable_metrics(uninterrupted), context
    assert steps_logged_once(resumed), context


def test_sigkill_at_a_random_step_resumes_bit_equal(bert, uninterrupted, tmp_path):
    step = random.Random().randint(1, RESUMABLE["train.num_steps"] - 1)
    workdir = tmp_path / "killed"
    proc = run_in_process(workdir, bert, uninterrupted, ["SIGKILL", step])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    main.run(toy_experiment.toy_config(bert, uninterrupted, **RESUMABLE), str(workdir), build=Experiment)
    assert_bit_equal(workdir, uninterrupted, f"killed after step {step}")


def test_ctrl_c_and_sigterm_stop_with_a_checkpoint_and_exit_130(bert, uninterrupted, tmp_path):
    workdir = tmp_path / "interrupted"
    for name, step, last_checkpoint in (("SIGINT", 2, 2), ("SIGTERM", 4, 4)):
        proc = run_in_process(workdir, bert, uninterrupted, [name, step])
        assert proc.returncode == errors.EXIT_INTERRUPTED, proc.stderr[-3000:]
        assert proc.stderr.splitlines()[-1] == (
            f"interrupted at step {step}, last checkpoint at step {last_checkpoint}; rerun to resume"), proc.stderr
        assert "Traceback" not in proc.stderr
    # Step 2's checkpoint was made by the interrupt (every_steps is 4), cutting a logging window.
    main.run(toy_experiment.toy_config(bert, uninterrupted, **RESUMABLE), str(workdir), build=Experiment)
    assert [r["step"] for r in records(workdir) if r["kind"] == "resume"] == [2, 4]
    assert_bit_equal(workdir, uninterrupted, "SIGINT after step 2, SIGTERM after step 4")
