"""Every method trained end to end through main.run on tiny random backbones (an encoder, two
decoders, T5): a few steps on one batch, the loss falls, and the prompt export, evaluated again
in mode "eval", gives the training run's metrics exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import pytest
from test_lama import RELATIONS, write_lama

import main
from configs import base

# Six positive, two negative: a random tiny encoder's [CLS] hardly depends on its input, but a
# linear head can still learn the label prior, so every method's loss can fall in a few steps.
SENTENCES = [("a good movie", 1), ("a dull and bad plot", 0), ("great acting and a fine story", 1),
             ("it was fine", 1), ("the best film of the year", 1), ("a great day", 1),
             ("bad and boring", 0), ("good fun", 1)]


def write_sst2(root: Path) -> Path:
    """Eight SST-2 sentences as train and dev (the task's layout: sst2/train.tsv, dev.tsv)."""
    folder = root / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in SENTENCES]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(model_dir, data_dir, task: str, method: str, steps: int = 6, **overrides):
    """One batch of 8, one length bucket (one compiled shape), no dropout, one evaluation at the end."""
    config = base.get_config()
    config.model.name = str(model_dir)
    config.data_dir = str(data_dir)
    config.task.name = task
    config.task.max_length = 32
    config.task.length_buckets = (32,)
    config.method.name = method
    config.prompt.length = 4
    config.train.batch_size = config.train.eval_batch_size = 8
    config.train.num_steps = config.train.eval_every = steps
    config.train.log_every = 1
    config.train.dropout = False
    config.checkpoint.every_steps = 0
    config.checkpoint.async_save = False
    config.logging.tensorboard = config.logging.progress = False
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def train_and_reevaluate(config, root: Path):
    """main.run in mode "train", then mode "eval" on its export: (train losses, both results)."""
    trained = main.run(config, str(root / "train"))
    records = [json.loads(line) for line in (root / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    config.mode, config.restore = "eval", str(root / "train" / "export")
    evaluated = main.run(config, str(root / "eval"))
    return losses, trained, evaluated


@pytest.fixture(scope="module")
def sst2_root(tmp_path_factory):
    return write_sst2(tmp_path_factory.mktemp("sst2"))


@pytest.mark.parametrize("family, method, lr, overrides", [
    ("bert", "ptuning_v2", 2e-2, {"prompt.deep.length": 4}),
    ("bert", "fine_tune", 3e-3, {}),
    ("llama", "lester", 0.3, {}),
    ("gpt2", "manual", 3e-3, {"method.train_backbone": True}),
    ("t5v1_1", "ptuning", 0.1, {"prompt.encoder": "mlp", "head.type": "choice"}),
])
def test_method_trains_and_its_export_reevaluates(tiny_model_dir, sst2_root, tmp_path, family, method, lr,
                                                   overrides):
    config = tiny_config(tiny_model_dir(family), sst2_root, "sst2", method, **{
        "optimizer.learning_rate": lr, **overrides})
    losses, trained, evaluated = train_and_reevaluate(config, tmp_path)
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.02, losses
    assert trained["status"] == "completed" and trained["steps"] == 6
    assert evaluated["metrics"] == trained["metrics"] and set(trained["metrics"]["validation"]) >= {"accuracy"}


def test_plan_of_a_small_config(tiny_model_dir, sst2_root, tmp_path):
    """Mode "plan" through main.run on this process's 8 devices (2 x 4 data x fsdp): memory and
    FLOPs per device from the compiled step, and a verdict."""
    config = tiny_config(tiny_model_dir("bert"), sst2_root, "sst2", "lester", **{
        "mode": "plan", "model.scan_layers": False, "mesh.data": 2, "mesh.fsdp": 4, "plan.device_memory_gib": 1.0})
    report = main.run(config, str(tmp_path))
    assert report["devices"] == 8 and report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert report["flops_source"] == "cost_analysis" and report["flops_per_step"] > 0
    memory = report["memory_per_device"]
    assert 0 < memory["arguments"] <= memory["peak"] < 2 ** 30 and report["fits"]
    assert json.loads((tmp_path / "plan.json").read_text())["flops_per_step"] == report["flops_per_step"]


def test_lama_ptuning_trains_every_relation_in_one_batched_step(tiny_model_dir, tmp_path):
    """LAMA P-tuning on a causal LM: the facts of two relations share each batch, each relation has
    its own prompt encoder (a leading bank axis), and the export re-evaluates to the same P@1."""
    from ptjax.training import checkpoints

    facts = {"P36": [("Germany", "Berlin"), ("Italy", "Rome"), ("France", "Berlin"), ("Prussia", "Berlin"),
                     ("Vatican", "Rome")],
             "P17": [("Berlin", "Germany"), ("Paris", "France"), ("Munich", "Germany"), ("Lyon", "France"),
                     ("Hamburg", "Germany")]}
    data_dir = write_lama(tmp_path / "lama", RELATIONS[:2], facts)
    config = tiny_config(tiny_model_dir("gpt2"), data_dir, "lama", "ptuning", **{
        "prompt.encoder": "mlp", "optimizer.learning_rate": 3e-2, "task.length_buckets": (16,)})
    losses, trained, evaluated = train_and_reevaluate(config, tmp_path)
    assert losses[-1] < losses[0] - 0.02, losses
    metrics = trained["metrics"]["validation"]
    assert {"p_at_1", "p_at_1/P36", "p_at_1/P17"} <= set(metrics) and "p_at_1/P1923" not in metrics
    assert evaluated["metrics"] == trained["metrics"]
    params, _ = checkpoints.read_export_arrays(tmp_path / "train" / "export")
    bank = params["prompt"]["soft"]["encoder"]
    assert {leaf.shape[0] for leaf in jax.tree.leaves(bank)} == {2}  # one encoder per relation


def write_rte(root: Path) -> Path:
    folder = root / "RTE"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [("The cat sat on the mat.", "A cat sat.", "entailment"), ("It rained all day.", "It was dry.", "not_entailment"),
             ("Mary lives in London.", "Mary lives in a city.", "entailment"), ("The shop is closed.", "It is open.",
                                                                                  "not_entailment")] * 2
    lines = "".join(json.dumps({"premise": p, "hypothesis": h, "label": label, "idx": i}) + "\n"
                    for i, (p, h, label) in enumerate(pairs))
    for split in ("train", "val"):
        (folder / f"{split}.jsonl").write_text(lines)
    return root


def test_ppt_pretrains_a_prompt_and_a_task_starts_from_it(tiny_model_dir, tmp_path):
    """PPT on tiny T5.1.1 through main.run: next-sentence prompt pre-training on a local corpus,
    then RTE (the same format) starts from that prompt, trains and re-evaluates its export."""
    from test_ppt import _config, _corpus, _soft_prompt

    from ptjax.training import checkpoints

    t5 = tiny_model_dir("t5v1_1")
    pretrain = _config(t5, _corpus(tmp_path / "corpus"), "ppt_nsp", source="text", paths=["corpus.txt"],
                       num_examples=8, dev_every=0, seed=0)  # one batch, seen every step
    pretrain.train.num_steps, pretrain.train.dropout = 6, False
    main.run(pretrain, str(tmp_path / "pretrained" / "ppt_nsp"))
    records = [json.loads(line) for line in (tmp_path / "pretrained" / "ppt_nsp" / "metrics.jsonl").read_text().splitlines()]
    pretrain_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(pretrain_losses) == 6 and pretrain_losses[-1] < pretrain_losses[0], pretrain_losses
    pretrained, _ = checkpoints.read_export_arrays(tmp_path / "pretrained" / "ppt_nsp" / "export")

    config = _config(t5, write_rte(tmp_path / "data"), "rte")
    config.prompt.init, config.prompt.init_from = "pretrained", str(tmp_path / "pretrained")  # picked by format
    config.task.eval_splits = ("validation",)
    config.train.num_steps = config.train.eval_every = 6
    config.train.eval_batch_size, config.train.dropout = 8, False
    start = _soft_prompt(config, None)
    assert (start == pretrained["prompt"]["soft"]["embedding"]).all()
    losses, trained, evaluated = train_and_reevaluate(config, tmp_path / "transfer")
    assert losses[-1] < losses[0] - 0.02, losses
    assert evaluated["metrics"] == trained["metrics"]
    shutil.rmtree(tmp_path / "pretrained")  # the export alone: its starting prompt is not read
    assert main.run(config, str(tmp_path / "eval_alone"))["metrics"] == trained["metrics"]
