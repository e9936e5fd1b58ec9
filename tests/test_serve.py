"""Serving many prompts: a batch mixing examples of several tasks, each with its own prompt export
on one frozen backbone, gives every example exactly the predictions its own prompt gives alone."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from configs import base
from ptjax import serve
from ptjax.data import pipeline
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.models.loading import load_backbone
from ptjax.tasks.glue import sentence_pair_task
from ptjax.training import checkpoints as ckpt
from ptjax.training.engine import Engine

PAIRS = [
    ("The capital of France is Paris.", "Paris is in France."),
    ("A man is playing a guitar.", "A woman is reading a book."),
    ("The food was terrible.", "The service was bad."),
    ("It rained all day.", "The match was cancelled."),
    ("Berlin is a city in Germany.", "Germany has a capital."),
    ("The river flows into the sea.", "Mountains rise above the clouds."),
    ("She opened the window.", "The room was hot."),
]
BUCKETS = (48,)


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_model_dir):
    """Two sentence-pair tasks (2 and 3 labels, 7 and 5 dev examples) and a tiny BERT."""
    root = tmp_path_factory.mktemp("serve_data")
    for name, labels, count in (("serve_two", ("yes", "no"), 7), ("serve_three", ("a", "b", "c"), 5)):
        sentence_pair_task(name, labels)
        (root / name).mkdir()
        rows = [f"{p}\t{h}\t{labels[i % len(labels)]}" for i, (p, h) in enumerate(PAIRS[:count])]
        (root / name / "dev.tsv").write_text("premise\thypothesis\tlabel\n" + "\n".join(rows) + "\n")
    model_dir = tiny_model_dir("bert")
    return root, model_dir, load_backbone(model_dir)


def task_config(root, model_dir, task: str, method: str, **prompt):
    config = base.get_config()
    config.model.name = str(model_dir)
    config.data_dir = str(root)
    config.task.name = task
    config.task.eval_splits = ("dev",)
    config.task.max_length = 48
    config.task.length_buckets = (48,)  # one batch shape: one compilation per server
    config.method.name = method
    config.train.eval_batch_size = 4
    two = task == "serve_two"
    if method == "lester":
        config.prompt.template = ("[P*3] {premise} ? [MASK] , {hypothesis}" if two
                                  else "[P*5] {hypothesis} [MASK] {premise}")
        config.head.verbalizer = ("yes", "no") if two else ("good", "bad", "maybe")
        config.prompt.soft_prefix_first = two
    else:
        config.prompt.template = "{premise} [SEP] {hypothesis}"
        config.head.verbalizer = ("yes", "no") if two else ("good", "bad", "maybe")
        config.head.type = "cls"
        config.prompt.deep.length = 4
        config.prompt.deep.reparam = not two
        config.prompt.deep.reparam_hidden = 16
        config.prompt.deep.shift_positions = True
    for key, value in prompt.items():
        config.prompt[key] = value
    return config


def make_export(config, backbone, path, seed: int):
    """A prompt export of freshly initialized (untrained) prompt and head parameters."""
    model = build(config, backbone=backbone).model
    trainable, _ = Engine(config, model).init_params(jax.random.PRNGKey(seed))
    ckpt.write_export(path, trainable, metadata=model.export_metadata(), fingerprint=backbone.fingerprint,
                      backbone=config.model.name)
    return path


def served(setting, tmp_path, method: str):
    root, model_dir, backbone = setting
    pairs = []
    for seed, task in enumerate(("serve_two", "serve_three")):
        config = task_config(root, model_dir, task, method)
        pairs.append((config, make_export(config, backbone, tmp_path / task, seed + 1)))
    return pairs, backbone


@pytest.mark.parametrize("method", ["lester", pytest.param("ptuning_v2", marks=pytest.mark.slow)])
def test_mixed_batches_give_each_example_its_own_prompts_predictions(setting, tmp_path, method):
    pairs, backbone = served(setting, tmp_path, method)
    tasks = serve.load_tasks(pairs[0][0], pairs, backbone=backbone)
    merged, owners, local = serve.mixed_split(tasks, "dev", BUCKETS)
    # Batches of 4 drawn from the interleaved stream hold both tasks.
    first_rows = pipeline.eval_plan(merged, 4)[0][0]
    assert len(set(owners[first_rows])) == 2
    server = serve.MixedServer(tasks)
    mixed = server.predict_split(merged, owners, local, 4)
    splits = [pipeline.prepare_split("dev", t.data.features("dev"), t.data.pad_values, t.data.length_groups,
                                     BUCKETS) for t in tasks]
    alone = serve.SequentialServer(tasks).predict_split(splits, 4)
    assert [len(p) for p in mixed] == [7, 5]
    for task_mixed, task_alone in zip(mixed, alone):
        for ours, theirs in zip(task_mixed, task_alone):
            assert set(ours) == set(theirs)
            np.testing.assert_array_equal(ours["prediction"], theirs["prediction"])
            for key in ours:
                np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, rtol=1e-5)
    # The prompt_id matters: the same examples with the other task's prompt score differently.
    flipped = pipeline.prepare_split("dev", [{**f, "prompt_id": np.int32(1 - f["prompt_id"])}
                                             for f in merged.features], merged.pad_values, merged.groups, BUCKETS)
    other = server.predict_split(flipped, owners, local, 4)[0]
    key = "scores" if "scores" in other[0] else "logits"
    assert max(np.abs(a[key] - b[key]).max() for a, b in zip(other, mixed[0])) > 1e-4


@pytest.mark.slow
def test_serve_reports_metrics_and_throughput(setting, tmp_path):
    pairs, backbone = served(setting, tmp_path, "lester")
    result = serve.serve(pairs[0][0], pairs, compare=True, repeats=1, backbone=backbone)
    json.dumps(result)
    assert set(result["tasks"]) == {"serve_two", "serve_three"}
    assert result["examples"] == 12 and result["tasks"]["serve_three"]["examples"] == 5
    assert "accuracy" in result["tasks"]["serve_two"]["metrics"]
    assert result["mixed_examples_per_s"] > 0 and result["sequential_examples_per_s"] > 0


def test_incompatible_exports_are_refused(setting, tmp_path):
    root, model_dir, backbone = setting
    soft = task_config(root, model_dir, "serve_two", "lester")
    deep = task_config(root, model_dir, "serve_three", "ptuning_v2")
    pairs = [(soft, make_export(soft, backbone, tmp_path / "soft", 1)),
             (deep, make_export(deep, backbone, tmp_path / "deep", 2))]
    tasks = serve.load_tasks(soft, pairs, backbone=backbone)
    with pytest.raises(InputError, match="mix prompt kinds"):
        serve.MixedServer(tasks)
    with pytest.raises(InputError, match="TASK=EXPORT_DIR"):
        serve._parse_exports(["no-equals-sign"])
