"""SuperGLUE methods on real features (issue 5): each method trains a tiny random backbone through
the engine and its loss falls; the WSC referent head learns only from right candidates; evaluation
predicts every example exactly once, also when the split size does not divide the batch."""

import jax
import numpy as np
import pytest

from configs import superglue_paper
from ptjax.data import pipeline
from ptjax.experiment import build
from ptjax.heads.referent import ReferentHead
from ptjax.models.layers import BackboneOutput
from ptjax.training.engine import Engine
from ptjax.training.optimizer import build_optimizer
from ptjax.training.step import step_rng

BUCKETS = (32, 64, 96)


def make_config(model_dir, task, method, **overrides):
    config = superglue_paper.paper(task, method, "fewshot")
    config.model.name = str(model_dir)
    config.task.max_length = 96
    config.task.length_buckets = BUCKETS
    config.task.max_train_examples = 8
    config.prompt.length = 4
    config.prompt.deep.length = 4
    config.prompt.deep.reparam_hidden = 16
    config.train.batch_size = 8
    config.train.dropout = False
    config.mode = "train"
    for key, value in overrides.items():
        section, name = key.split("__")
        if section == "deep":
            config.prompt.deep[name] = value
        else:
            config[section][name] = value
    return config


# Tiny models compile in most of a test's time; XLA's backend optimizations would double it.
FAST_COMPILE = {"xla_backend_optimization_level": "0"}


def losses_on_one_batch(config, steps: int):
    """Train `steps` times on the first batch of the train split with the engine's train step
    (its shardings, donation and optimizer); returns the loss before each update."""
    experiment = build(config)
    engine = Engine(config, experiment.model, devices=jax.devices()[:1])
    trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    optimizer = build_optimizer(config, engine.trainable_shapes, experiment.model.is_trainable,
                                total_steps=10 * steps, steps_per_epoch=steps)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    opt_state = engine.init_opt_state(optimizer.transform, trainable, opt_shardings)
    step = engine.compile_train_step(optimizer.transform, opt_shardings)
    data = experiment.data
    split = pipeline.prepare_split("train", data.features(config.task.train_split), data.pad_values,
                                   data.length_groups, tuple(config.task.length_buckets))
    rows = np.arange(config.train.batch_size)
    local = pipeline.collate(split, rows, split.batch_lengths(rows))
    put = engine.to_device(config.train.batch_size)
    with engine.activate():
        compiled = step.jitted.lower(trainable, frozen, opt_state, put(local), jax.random.PRNGKey(0)).compile(
            compiler_options=FAST_COMPILE)
    losses = []
    for number in range(steps):
        with engine.activate():
            trainable, opt_state, metrics = compiled(trainable, frozen, opt_state, put(local),
                                                     step_rng(jax.random.PRNGKey(1), number))
        losses.append(float(metrics["loss"]))
    return experiment, losses


@pytest.mark.slow
@pytest.mark.parametrize("method, lr, overrides", [
    ("fine_tune", 3e-3, {}),
    ("manual", 3e-3, {"method__train_backbone": True}),  # PET: manual pattern + fine-tuning
    ("lester", 0.3, {}),
    ("ptuning", 0.3, {"prompt__encoder": "lstm"}),
    ("ptuning", 0.3, {"prompt__encoder": "mlp"}),
    ("ptuning", 0.3, {"prompt__encoder": "none"}),
    ("ptuning_v2", 1e-2, {"deep__reparam": False}),
    ("ptuning_v2", 1e-2, {"deep__reparam": True}),
])
def test_every_method_lowers_the_loss(tiny_model_dir, data_dir, method, lr, overrides):
    """SST-2 on a tiny random causal LM: its label words are several tokens in the tiny
    vocabulary, so the LM-head methods score them as choices; the others use the linear head."""
    config = make_config(tiny_model_dir("llama"), "sst2", method, optimizer__learning_rate=lr,
                         task__train_split="dev", task__max_length=64, task__length_buckets=(64,), **overrides)
    experiment, losses = losses_on_one_batch(config, steps=6)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.02, losses  # no dropout, one batch: the fall is the updates'
    expected = {"fine_tune": "linear", "ptuning_v2": "linear"}.get(method, "choice")
    assert experiment.description["formulation"] == expected


@pytest.mark.slow
def test_wsc_referent_training_on_a_causal_lm(tiny_model_dir, data_dir):
    """P-tuning tuned jointly with the backbone (the paper's SuperGLUE mode): a random LM learns
    to write the referents of one batch."""
    config = make_config(tiny_model_dir("llama"), "wsc", "ptuning", optimizer__learning_rate=1e-2,
                         method__train_backbone=True, task__max_length=256, task__length_buckets=(256,))
    experiment, losses = losses_on_one_batch(config, steps=6)
    assert experiment.description["formulation"] == "referent"
    assert losses[-1] < losses[0] - 0.02, losses


def test_referent_head_learns_from_right_candidates_only():
    """Hand-made LM outputs: a 2-token candidate, vocabulary of 3; the second row is a wrong
    candidate (label 0) and must not count."""
    # [2, 3 positions, 3]: position p's logits = one-hot(p) * scale
    hidden = np.eye(3, dtype=np.float32)[None].repeat(2, 0)
    batch = {"option_mask": np.ones((2, 1), np.int32), "label": np.array([1, 0]),
             "score_positions": np.array([[[0, 1]], [[0, 1]]]), "score_targets": np.array([[[0, 2]], [[0, 2]]]),
             "score_mask": np.ones((2, 1, 2), np.int32)}
    head = ReferentHead()
    outputs, lm_logits = BackboneOutput(last_hidden_state=hidden), lambda h: 2.0 * h
    # Jitted as the steps run them (eager, every op compiles on its own: minutes on a small CPU).
    loss_fn = jax.jit(lambda b: head.loss({}, outputs, lm_logits, b, train=True))
    predict = jax.jit(lambda b: head.predict({}, outputs, lm_logits, b))
    loss, aux = loss_fn(batch)
    logits = np.array([2.0, 0.0, 0.0])  # the right token gets logit 2 at position 0
    log_p = logits - np.log(np.exp(logits).sum())
    expected = -(log_p[0] + log_p[1]) / 2  # position 1 predicts token 2, whose logit is 0
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(aux["weight"]) == 1.0 and float(aux["accuracy"]) == 0.0  # position 1's argmax is token 1
    batch["label"] = np.array([0, 0])
    loss, aux = loss_fn(batch)
    assert float(loss) == 0.0 and 0 < float(aux["weight"]) < 1e-3
    prediction = predict(batch)
    np.testing.assert_array_equal(prediction["fill"], [[0, 1], [0, 1]])
    np.testing.assert_allclose(prediction["score"], [expected * -1] * 2, rtol=1e-6)


@pytest.mark.parametrize("task, method, buckets", [
    ("rte", "manual", (32, 64, 96)),  # verbalizer
    ("copa", "ptuning", (16, 24, 32)),  # choices: [examples, options, length] features
    pytest.param("boolq", "ptuning_v2", (64, 96, 128), marks=pytest.mark.slow),  # linear head
])
def test_evaluation_predicts_every_example_once(tiny_model_dir, data_dir, task, method, buckets):
    config = make_config(tiny_model_dir("bert"), task, method, task__max_eval_examples=13,
                         train__eval_batch_size=4, task__max_length=buckets[-1], task__length_buckets=buckets)
    config.mode = "eval"
    experiment = build(config)
    engine = Engine(config, experiment.model, devices=jax.devices()[:1])
    trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    data = experiment.data
    features = data.features("val")
    split = pipeline.prepare_split("val", features, data.pad_values, data.length_groups, buckets)
    assert len(split) == 13 and len({tuple(sorted(split.batch_lengths(np.array([i])).items()))
                                      for i in range(13)}) > 1  # several shapes: partial batches per bucket
    eval_step = engine.compile_eval_step()
    predictions = engine.predict_split(eval_step, trainable, frozen, split, 4)
    assert len(predictions) == 13
    # Each example alone, in a batch of its own: the same scores, so each prediction is its example's.
    params = {**trainable, **frozen}
    single = jax.jit(experiment.model.predict)
    for index, prediction in enumerate(predictions):
        rows = np.array([index])
        alone = single(params, pipeline.collate(split, rows, split.batch_lengths(rows)))
        np.testing.assert_allclose(prediction["scores"], np.asarray(alone["scores"])[0], rtol=1e-4, atol=1e-4)
    metrics = data.evaluate("val", predictions)
    answers = data.formulation.decode(data.examples("val"), features, predictions)
    right = sum(a == e.label for a, e in zip(answers, data.examples("val")))
    assert metrics["accuracy"] == pytest.approx(right / 13)


@pytest.mark.slow
def test_deep_prompt_warm_start_from_an_export(tiny_model_dir, data_dir, tmp_path):
    """prompt.init='pretrained' on P-tuning v2: the deep prompt starts as the export's."""
    from flax import traverse_util

    from ptjax.methods.warm_start import WarmStartedModel
    from ptjax.training import checkpoints

    model_dir = tiny_model_dir("bert")
    source = build(make_config(model_dir, "rte", "ptuning_v2")).model
    engine = Engine(make_config(model_dir, "rte", "ptuning_v2"), source, devices=jax.devices()[:1])
    trainable, _ = engine.init_params(jax.random.PRNGKey(3))
    checkpoints.write_export(tmp_path / "export", trainable, metadata=source.export_metadata(),
                             fingerprint=source.fingerprint, backbone=str(model_dir))

    config = make_config(model_dir, "rte", "ptuning_v2")
    config.prompt.init, config.prompt.init_from = "pretrained", str(tmp_path)
    warm = build(config).model
    assert isinstance(warm, WarmStartedModel)
    started, _ = Engine(config, warm, devices=jax.devices()[:1]).init_params(jax.random.PRNGKey(4))
    expected = traverse_util.flatten_dict(trainable["prompt"])
    assert expected
    for path, value in traverse_util.flatten_dict(started["prompt"]).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[path]))


@pytest.mark.slow
@pytest.mark.parametrize("init", ["vocab", "text"])
def test_soft_prompt_init_reads_the_embeddings_as_an_argument(tiny_model_dir, data_dir, init):
    """prompt.init='vocab' / 'text': rows of the backbone's embeddings, which reach the jitted
    init as an argument (captured, a real vocabulary becomes a constant of the compiled program)."""
    import warnings

    from ptjax.methods.model import embedding_rows

    config = make_config(tiny_model_dir("bert"), "rte", "lester")
    config.prompt.init, config.prompt.init_text = init, "it is true"
    model = build(config).model
    engine = Engine(config, model, devices=jax.devices()[:1])
    limit = jax.config.jax_captured_constants_warn_bytes
    try:
        jax.config.update("jax_captured_constants_warn_bytes", 4096)  # the table is ~130 kB
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    finally:
        jax.config.update("jax_captured_constants_warn_bytes", limit)
    assert not [w for w in caught if "constant" in str(w.message).lower()]
    table = np.asarray(trainable["prompt"]["soft"]["embedding"])
    vocab = embedding_rows(model.backbone, np.arange(model.backbone.config.vocab_size))
    if init == "text":
        ids = model.backbone.tokenizer("it is true", add_special_tokens=False)["input_ids"]
        np.testing.assert_allclose(table, vocab[np.resize(ids, len(table))], rtol=1e-6)
    else:
        distances = np.abs(table[:, None, :] - vocab[None]).max(-1)
        assert (distances.min(1) < 1e-6).all() and len(set(distances.argmin(1))) == len(table)
