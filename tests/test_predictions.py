"""Predictions files (issue 23 item 4): an evaluation writes DIR/predictions/<split>.jsonl (id,
prediction, gold label, scores) whose lines reproduce the run's metrics; SuperGLUE submission
lines in the leaderboard's format; per-word tag probabilities; and a LAMA export evaluated on a
subset of its relations and on new facts of them (item 3)."""

import json

import numpy as np
import pytest
import transformers

from configs import base
from ptjax.errors import InputError
from ptjax.eval.predictions import check_submission, superglue_submission
from ptjax.experiment import build
from ptjax.formulations.tagging import TokenTagging
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import Example
from ptjax.tasks.tagging import CONLL03_LABELS
from ptjax.training import loop
from test_lama import lama_config, write_lama


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def setting(config, **overrides):
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


# ------------------------------------------------------------------------ submission format


def test_superglue_submission_lines_follow_the_leaderboard_format():
    def rows(task, labels_and_meta):
        examples = [Example(f"{task}-{i}", {}, None, meta) for i, (_, meta) in enumerate(labels_and_meta)]
        return examples, [{"id": e.guid, "prediction": p} for e, (p, _) in zip(examples, labels_and_meta)]

    examples, records = rows("boolq", [("True", {"idx": 3}), ("False", {"idx": 4})])
    assert superglue_submission("boolq", examples, records) == [{"idx": 3, "label": "true"},
                                                                {"idx": 4, "label": "false"}]
    examples, records = rows("wsc", [("True", {"idx": 0})])
    assert superglue_submission("wsc", examples, records) == [{"idx": 0, "label": "True"}]
    examples, records = rows("copa", [("1", {"idx": 7})])
    assert superglue_submission("copa", examples, records) == [{"idx": 7, "label": 1}]
    examples, records = rows("rte", [("not_entailment", {"idx": 2})])
    assert superglue_submission("rte", examples, records) == [{"idx": 2, "label": "not_entailment"}]
    examples, records = rows("record", [("Obama", {"idx": 11, "passage_id": 5})])
    assert superglue_submission("record", examples, records) == [{"idx": 11, "label": "Obama"}]
    # MultiRC: one line per passage, its questions' answer options nested in file order.
    meta = lambda p, q, a: {"passage_id": p, "question_idx": q, "answer_idx": a}  # noqa: E731
    examples, records = rows("multirc", [("1", meta(0, 0, 0)), ("0", meta(0, 0, 1)), ("1", meta(0, 1, 2)),
                                         ("0", meta(1, 0, 0))])
    assert superglue_submission("multirc", examples, records) == [
        {"idx": 0, "passage": {"questions": [
            {"idx": 0, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 0}]},
            {"idx": 1, "answers": [{"idx": 2, "label": 1}]}]}},
        {"idx": 1, "passage": {"questions": [{"idx": 0, "answers": [{"idx": 0, "label": 0}]}]}}]

    config = base.get_config()
    config.predictions.submission = "superglue"
    check_submission(config, "rte")
    with pytest.raises(InputError, match="not a SuperGLUE task"):
        check_submission(config, "conll03")
    config.predictions.submission = "glue"
    with pytest.raises(InputError, match="known formats"):
        check_submission(config, "rte")


def test_tagging_scores_give_each_word_its_tag_probability(tiny_model_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    formulation = TokenTagging("{tokens}", CONLL03_LABELS, Renderer(tokenizer, "encoder", 32))
    examples = [Example("s-0", {"tokens": ("John", "lives", "in", "Paris")}, ("B-PER", "O", "O", "B-LOC"))]
    features = formulation.featurize(examples)
    word_index = features[0]["word_index"]
    first = [int(np.flatnonzero(word_index == w)[0]) for w in range(4)]  # each word's first sub-token
    predicted = np.zeros(len(word_index), np.int32)
    predicted[first] = [CONLL03_LABELS.index(t) for t in ("B-PER", "O", "O", "B-ORG")]
    probability = np.linspace(0.1, 0.9, len(word_index)).astype(np.float32)
    predictions = [{"prediction": predicted, "probability": probability}]
    assert formulation.decode(examples, features, predictions) == [("B-PER", "O", "O", "B-ORG")]
    scores = formulation.scores(examples, features, predictions)
    assert scores == [{"tag_probability": pytest.approx([float(probability[p]) for p in first])}]


def test_choice_scores_name_each_candidate_answer(tiny_model_dir):
    """Multi-token label words scored as candidates: a score per label, over the options each
    example has (option_mask), and the decoded answer is the best-scored one."""
    from ptjax.formulations.choice import label_word_choice

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir("gpt2"))
    labels = ("entailment", "neutral", "not_entailment")
    words = {"entailment": "Yes indeed", "neutral": "Maybe so", "not_entailment": "No way"}
    formulation = label_word_choice("{premise} Question: {hypothesis}? Answer: [MASK]",
                                    Renderer(tokenizer, "causal_lm", 48), labels, words)
    examples = [Example("x-0", {"premise": "Rome is big", "hypothesis": "Rome is small"}, "not_entailment")]
    features = formulation.featurize(examples)
    predictions = [{"scores": np.asarray([-3.0, -2.5, -0.5], np.float32), "prediction": np.int32(2)}]
    assert formulation.decode(examples, features, predictions) == ["not_entailment"]
    assert formulation.scores(examples, features, predictions) == [
        {"entailment": -3.0, "neutral": -2.5, "not_entailment": -0.5}]
    features[0]["option_mask"] = np.asarray([1, 0, 1], np.int32)  # an example without "neutral"
    assert set(formulation.scores(examples, features, predictions)[0]) == {"entailment", "not_entailment"}


def test_qa_scores_give_the_best_span_and_its_null_score_difference(tiny_model_dir):
    from ptjax.formulations.qa import ExtractiveQA

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    context = "The largest planet is Jupiter . Saturn has rings ."
    examples = [Example(qid, {"question": "Which planet?", "context": context}, ("Jupiter",),
                        {"answers": (("Jupiter", 22),), "is_impossible": False}) for qid in ("a", "b")]
    qa = ExtractiveQA("{question} [SEP] {context}", Renderer(tokenizer, "encoder", 48), allow_no_answer=True)
    features = qa.featurize(examples)
    predictions = []
    for feature in features:
        start, end = np.full(len(feature["input_ids"]), -1.0), np.full(len(feature["input_ids"]), -1.0)
        start[0] = end[0] = 2.0  # null score 4.0
        start[feature["start_position"]], end[feature["end_position"]] = 3.0, 2.0  # Jupiter: 5.0
        if feature["example"] == 1:
            start[0] = end[0] = 3.0  # null score 6.0 beats it
        predictions.append({"start_logits": start, "end_logits": end})
    assert qa.decode(examples, features, predictions) == ["Jupiter", ""]
    assert qa.scores(examples, features, predictions) == [{"best_span": "Jupiter", "null_score_diff": -1.0},
                                                          {"best_span": "Jupiter", "null_score_diff": 1.0}]


# ------------------------------------------------------------------------ through the engine


RTE_ROWS = [("A man is playing a guitar.", "A man plays music.", "entailment"),
            ("The cat sleeps on the sofa.", "The dog is barking.", "not_entailment"),
            ("Paris is the capital of France.", "Paris is in France.", "entailment"),
            ("She bought three apples.", "She bought no fruit.", "not_entailment"),
            ("It rained all day in Oslo.", "Oslo was wet.", "entailment")]


def write_rte(root):
    folder = root / "superglue" / "RTE"
    folder.mkdir(parents=True)
    val = [{"premise": p, "hypothesis": h, "label": label, "idx": 10 + i}
           for i, (p, h, label) in enumerate(RTE_ROWS)]
    test = [{"premise": p, "hypothesis": h, "idx": i} for i, (p, h, _) in enumerate(RTE_ROWS[:3])]
    for name, rows in (("val", val), ("test", test), ("train", val)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_eval_writes_predictions_that_reproduce_its_metrics_and_a_submission(tiny_model_dir, tmp_path):
    import jax

    config = setting(base.get_config(), **{
        "model.name": str(tiny_model_dir("bert")), "data_dir": str(write_rte(tmp_path / "data")),
        "mode": "eval",
        "task.name": "rte", "task.eval_splits": ("validation", "test"), "task.length_buckets": (32, 64),
        "method.name": "manual", "predictions.submission": "superglue", "logging.progress": False,
        "logging.tensorboard": False})
    experiment = build(config)
    one_device = jax.devices()[:1]
    results = loop.evaluate(config, tmp_path / "run", experiment.model, experiment.data, devices=one_device)
    folder = tmp_path / "run" / "predictions"
    rows = read_jsonl(folder / "validation.jsonl")
    assert [r["id"] for r in rows] == [f"rte-val-{10 + i}" for i in range(len(RTE_ROWS))]
    assert [r["label"] for r in rows] == [label for _, _, label in RTE_ROWS]
    for row in rows:  # the prediction is the best-scored label word
        assert set(row["scores"]) == {"entailment", "not_entailment"}
        assert row["prediction"] == max(row["scores"], key=row["scores"].get)
    accuracy = np.mean([r["prediction"] == r["label"] for r in rows])
    assert accuracy == pytest.approx(results["metrics"]["validation"]["accuracy"])
    test_rows = read_jsonl(folder / "test.jsonl")
    assert len(test_rows) == 3 and all("label" not in r for r in test_rows)
    # The leaderboard file: RTE.jsonl for the test split, RTE_<split>.jsonl for the others.
    assert read_jsonl(folder / "RTE.jsonl") == [{"idx": i, "label": r["prediction"]}
                                                for i, r in enumerate(test_rows)]
    validation_idx = [r["idx"] for r in read_jsonl(folder / "RTE_validation.jsonl")]
    assert validation_idx == [10 + i for i in range(len(RTE_ROWS))]

    config.predictions.write = False
    loop.evaluate(config, tmp_path / "quiet", experiment.model, experiment.data, devices=one_device)
    assert not (tmp_path / "quiet" / "predictions").exists()


def test_lama_export_evaluates_on_a_subset_of_its_relations_and_new_facts(tiny_model_dir, tmp_path):
    """P-tuning prompts for P36 and P17 (tiny GPT-2), trained and exported; evaluated on P17
    alone, P17's prompt answers as it did in training; new P17 facts evaluate too; a relation
    the export never trained is refused."""
    import jax

    devices = jax.devices()[:1]
    data_dir = write_lama(tmp_path / "facts")
    model_dir = tiny_model_dir("gpt2")
    train_config = lama_config(model_dir, data_dir, **{
        "prompt.encoder": "none", "train.num_steps": 2, "checkpoint.every_steps": 0,
        "task.length_buckets": (16,)})
    experiment = build(train_config)
    trained = loop.train(train_config, tmp_path / "run", experiment.model, experiment.data, devices=devices)
    rows = read_jsonl(tmp_path / "run" / "predictions" / "validation.jsonl")
    assert all(len(r["scores"]["top"]) == 10 and r["scores"]["gold_rank"] >= 0 for r in rows)
    assert all((r["scores"]["gold_rank"] == 0) == (r["prediction"] == r["label"]) for r in rows)

    def evaluate(workdir, facts_dir, relations):
        config = lama_config(model_dir, facts_dir, **{
            "mode": "eval", "restore": str(tmp_path / "run" / "export"), "prompt.encoder": "none",
            "task.length_buckets": (16,)})
        config.task.options.relations = relations
        built = build(config)
        return loop.evaluate(config, workdir, built.model, built.data, devices=devices), built

    subset, built = evaluate(tmp_path / "p17", data_dir, ["P17"])
    assert built.data.formulation.bank == ("P36", "P17")  # the export's bank, P17's prompt at index 1
    assert subset["metrics"]["validation"]["p_at_1/P17"] == trained["metrics"]["validation"]["p_at_1/P17"]
    assert "p_at_1/P36" not in subset["metrics"]["validation"]
    p17 = [r for r in rows if r["id"].startswith("P17")]
    assert read_jsonl(tmp_path / "p17" / "predictions" / "validation.jsonl") == p17

    new_facts = write_lama(tmp_path / "new", [{"relation": "P17", "template": "[X] is a city in [Y] ."}],
                           {"P17": [("Bonn", "Germany"), ("Lyon", "France"), ("Hamburg", "Germany")]})
    fresh, _ = evaluate(tmp_path / "new_run", new_facts, ["P17"])
    assert len(read_jsonl(tmp_path / "new_run" / "predictions" / "validation.jsonl")) == 3
    assert 0.0 <= fresh["metrics"]["validation"]["p_at_1/P17"] <= 1.0
    with pytest.raises(InputError, match="P1923 not trained in the export"):
        evaluate(tmp_path / "bad", data_dir, ["P17", "P1923"])
