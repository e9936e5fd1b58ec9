"""ReCoRD: every passage entity fills the query's @placeholder, multi-token entities whole, the
best-scoring one is the answer; trained and evaluated end to end on FewGLUE's train and dev32."""

from __future__ import annotations

import numpy as np
import pytest

from ptjax.configs import superglue_paper
from ptjax.experiment import build
from ptjax.formulations.record import gold_index, record_fields
from ptjax.training.loop import train

ONE_DEVICE = __import__("jax").devices()[:1]


def record_config(model_dir, data_dir, method="manual"):
    config = superglue_paper.paper("record", method, "fewshot")
    config.mode = "train"
    config.model.name = str(model_dir)
    config.data_dir = str(data_dir / "superglue") if (data_dir / "superglue").is_dir() else str(data_dir)
    config.method.train_backbone = method == "manual"  # PET: the pattern with the backbone tuned
    config.task.eval_splits = ("dev32",)
    config.task.max_length = 128  # the tiny GPT-2's positions
    config.task.length_buckets = (128,)
    config.task.max_train_examples = 8  # featurizing 25 candidates x a long passage is the cost
    config.task.max_eval_examples = 8
    config.train.batch_size = 2
    config.train.eval_batch_size = 8
    config.train.num_steps = 2
    config.train.eval_every = 2
    config.optimizer.learning_rate = 1e-3
    config.checkpoint.async_save = False
    config.checkpoint.export = False
    config.logging.tensorboard = False
    config.logging.progress = False
    return config


def test_candidates_fill_the_placeholder_and_record_trains_end_to_end(tiny_model_dir, data_dir, tmp_path):
    config = record_config(tiny_model_dir("gpt2"), data_dir)
    experiment = build(config)
    data, formulation = experiment.data, experiment.data.formulation
    example, feature = data.examples("train")[0], data.features("train")[0]
    fields = record_fields(example)
    assert "@placeholder" not in fields["before"] + fields["after"] and "@highlight" not in fields["passage"]
    entities = example.meta["entities"]
    assert entities[gold_index(example)] in example.label
    assert formulation.num_options >= len(entities) and feature["option_mask"].sum() == len(entities)
    tokenizer = experiment.backbone.tokenizer
    for i, entity in enumerate(entities):  # each option scores exactly the entity's tokens
        targets = feature["score_targets"][i][feature["score_mask"][i] > 0]
        assert tokenizer.decode(targets).strip() == entity
    assert any((feature["score_mask"][i] > 0).sum() > 1 for i in range(len(entities)))  # multi-token ones
    predictions = [{"prediction": np.int32(gold_index(e)), "scores": np.zeros(formulation.num_options)}
                   for e in data.examples("train")]
    assert data.evaluate("train", predictions)["record_em"] == 1.0

    results = train(config, tmp_path, experiment.model, data, devices=ONE_DEVICE)
    metrics = results["metrics"]["dev32"]
    assert results["status"] == "completed" and results["steps"] == 2
    assert 0.0 <= metrics["record_em"] <= metrics["record_f1"] <= 1.0
    assert metrics["score"] == pytest.approx((metrics["record_em"] + metrics["record_f1"]) / 2)
