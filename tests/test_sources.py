"""Any data set (issue 23 item 5): a task reads its rows from a dataset saved with
datasets.save_to_disk, a hub name (datasets.load_dataset mocked: the one call that downloads), or
jsonl/csv/parquet files with a column mapping; ClassLabel ids become names; bad rows name their
file and line; a config-defined classification task trains end to end from a hub-format dataset."""

import json
from unittest import mock

import datasets
import numpy as np
import pytest

from configs import base
from ptjax.errors import InputError
from ptjax.tasks.sources import configured_task

RTE_FEATURES = datasets.Features({
    "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
    "idx": datasets.Value("int32"), "label": datasets.ClassLabel(names=["entailment", "not_entailment"])})
RTE_ROWS = [{"premise": "A man plays a guitar.", "hypothesis": "A man makes music.", "idx": 0, "label": 0},
            {"premise": "The cat sleeps.", "hypothesis": "The dog barks.", "idx": 1, "label": 1},
            {"premise": "It rained in Oslo.", "hypothesis": "Oslo was wet.", "idx": 2, "label": -1}]
NER_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
NER_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")),
    "ner_tags": datasets.Sequence(datasets.ClassLabel(names=NER_NAMES))})
NER_ROWS = [{"id": "0", "tokens": ["John", "Smith", "visits", "Paris"], "ner_tags": [1, 2, 0, 5]},
            {"id": "1", "tokens": ["EU", "rejects", "it"], "ner_tags": [3, 0, 0]}]


def config_for(task, **task_settings):
    config = base.get_config()
    config.task.name = task
    for key, value in task_settings.items():
        config.task[key] = value
    return config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Hub-format DatasetDicts (ClassLabel columns, as the hub builds them) saved to disk."""
    root = tmp_path_factory.mktemp("saved")
    rte = datasets.DatasetDict({"train": datasets.Dataset.from_list(RTE_ROWS[:2], features=RTE_FEATURES),
                                "validation": datasets.Dataset.from_list(RTE_ROWS, features=RTE_FEATURES)})
    rte.save_to_disk(str(root / "rte"))
    ner = datasets.DatasetDict({"train": datasets.Dataset.from_list(NER_ROWS, features=NER_FEATURES)})
    ner.save_to_disk(str(root / "conll2003"))
    ner["train"].to_parquet(str(root / "train-00000.parquet"))
    return root


def test_save_to_disk_folder_gives_the_tasks_examples_with_label_names(saved):
    spec = configured_task(config_for("rte", source=str(saved / "rte")))
    examples = spec.load("unused", "validation")
    assert [e.label for e in examples] == ["entailment", "not_entailment", None]  # -1: unlabeled
    assert examples[0].fields == {"premise": "A man plays a guitar.", "hypothesis": "A man makes music."}
    assert examples[1].guid == "rte-validation-1"
    assert examples[1].meta["where"] == f"{saved / 'rte'}[validation] row 1"
    # "dev" finds the dataset's "validation"; "test" is missing and says how to map one.
    assert len(spec.load("unused", "dev")) == 3
    with pytest.raises(InputError, match=r"no split 'test' .*config.task.splits=\('test=NAME',\)"):
        spec.load("unused", "test")
    mapped = configured_task(config_for("rte", source=str(saved / "rte"), splits=("test=train",)))
    assert len(mapped.load("unused", "test")) == 2


def test_hub_name_goes_through_load_dataset(saved):
    """Only datasets.load_dataset (the download) is replaced: it returns the saved DatasetDict."""
    hub_copy = datasets.load_from_disk(str(saved / "rte"))
    with mock.patch("datasets.load_dataset", return_value=hub_copy) as load:
        examples = configured_task(config_for("rte", source="super_glue:rte")).load("unused", "train")
    load.assert_called_once_with("super_glue", "rte")
    assert [e.label for e in examples] == ["entailment", "not_entailment"]
    with mock.patch("datasets.load_dataset", side_effect=ConnectionError("Couldn't reach the Hub")):
        with pytest.raises(InputError, match=r"'super_glue:rte'.*could not be loaded \(Couldn't reach"):
            configured_task(config_for("rte", source="super_glue:rte")).load("unused", "train")


def test_conll2003_tags_from_disk_and_parquet(saved):
    for source in (str(saved / "conll2003"), str(saved / "{split}-*.parquet")):
        examples = configured_task(config_for("conll03", source=source)).load("unused", "train")
        assert [e.label for e in examples] == [("B-PER", "I-PER", "O", "B-LOC"), ("B-ORG", "O", "O")]
        assert examples[0].fields == {"tokens": ("John", "Smith", "visits", "Paris")}
    assert examples[1].meta["where"].endswith("train-00000.parquet: row 1")


def test_files_with_a_column_mapping_keep_file_and_line_errors(tmp_path):
    rows = [{"sentence1": "A man plays.", "sentence2": "Music.", "gold": "entailment"},
            {"sentence1": "A cat sleeps.", "sentence2": "A dog.", "gold": "not_entailment"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = ("premise=sentence1", "hypothesis=sentence2", "label=gold")
    spec = configured_task(config_for("rte", source=str(tmp_path / "{split}.jsonl"), columns=columns))
    assert [e.label for e in spec.load("unused", "train")] == ["entailment", "not_entailment"]
    bad = {**rows[1], "gold": "maybe"}
    (tmp_path / "dev.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"dev\.jsonl:2: label 'maybe' is not one of"):
        spec.load("unused", "validation")  # "validation" reads dev.jsonl
    (tmp_path / "test.csv").write_text("sentence1,gold\nA man plays.,entailment\n")
    spec = configured_task(config_for("rte", source=str(tmp_path / "{split}.csv"), columns=columns))
    with pytest.raises(InputError, match=r"test\.csv:2: no column 'sentence2' \(for field 'hypothesis'"):
        spec.load("unused", "test")


def test_multirc_and_record_rows_in_the_hub_layout(tmp_path):
    """The hub flattens MultiRC to one answer option per row and ReCoRD to one query per row."""
    multirc = [{"paragraph": "Tom has a dog.", "question": "What does Tom have?", "answer": "a dog",
                "idx": {"paragraph": 4, "question": 1, "answer": 0}, "label": 1}]
    record = [{"passage": "Obama met Merkel in Berlin.", "query": "@placeholder met Obama",
               "entities": ["Obama", "Merkel", "Berlin"], "answers": ["Merkel"],
               "idx": {"passage": 3, "query": 7}}]
    for name, rows in (("multirc", multirc), ("record", record)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    example, = configured_task(config_for("multirc", source=str(tmp_path / "{split}.jsonl"),
                                          splits=("validation=multirc",))).load("unused", "validation")
    assert example.label == "1" and example.meta["question_id"] == "4-1"
    assert example.fields["answer"] == "a dog"
    example, = configured_task(config_for("record", source=str(tmp_path / "{split}.jsonl"),
                                          splits=("validation=record",))).load("unused", "validation")
    assert example.label == ("Merkel",) and example.meta["entities"] == ("Obama", "Merkel", "Berlin")
    assert example.meta["entity_spans"][1] == (10, 16) and example.meta["idx"] == 7


def test_squad_rows_in_the_hub_layout(tmp_path):
    rows = [{"id": "q1", "title": "T", "context": "Paris is in France.", "question": "Where is Paris?",
             "answers": {"text": ["France"], "answer_start": [12]}},
            {"id": "q2", "title": "T", "context": "Paris is in France.", "question": "Who?",
             "answers": {"text": [], "answer_start": []}}]
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = configured_task(config_for("squad_v2", source=str(tmp_path / "{split}.jsonl")))
    examples = spec.load("unused", "dev")
    assert [e.label for e in examples] == [("France",), ()]
    assert examples[0].meta["answers"] == (("France", 12),) and examples[1].meta["is_impossible"]


def test_race_rows_in_the_hub_layout_keep_their_level(saved):
    features = datasets.Features({"example_id": datasets.Value("string"), "article": datasets.Value("string"),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "options": datasets.Sequence(datasets.Value("string"))})
    rows = [{"example_id": f"{level}{n}.txt", "article": "Tom has a dog.", "question": "What does Tom have?",
             "answer": "B", "options": ["a cat", "a dog", "a fish", "a bird"]}
            for n, level in enumerate(("middle", "high", "middle"))]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows, features=features)}).save_to_disk(
        str(saved / "race"))
    examples = configured_task(config_for("race_m", source=str(saved / "race"))).load("unused", "test")
    assert [e.meta["article_id"] for e in examples] == ["middle0.txt", "middle2.txt"]
    assert examples[0].label == "B" and examples[0].fields["option_b"] == "a dog"


def test_glue_hub_layouts_for_sst2_and_mnli(saved):
    sst2 = datasets.Dataset.from_list(
        [{"sentence": "a charming film ", "label": 1, "idx": 0},
         {"sentence": "a dull mess", "label": 0, "idx": 1}],
        features=datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                                    "label": datasets.ClassLabel(names=["negative", "positive"])}))
    with mock.patch("datasets.load_dataset", return_value=datasets.DatasetDict({"validation": sst2})):
        examples = configured_task(config_for("sst2", source="glue:sst2")).load("unused", "dev")
    assert [(e.fields["sentence"], e.label) for e in examples] == [("a charming film", "1"),
                                                                  ("a dull mess", "0")]
    mnli = datasets.Dataset.from_list(
        [{"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0, "idx": 0}],
        features=datasets.Features({
            "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
            "idx": datasets.Value("int32"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])}))
    datasets.DatasetDict({"validation_matched": mnli}).save_to_disk(str(saved / "mnli"))
    spec = configured_task(config_for("mnli", source=str(saved / "mnli"), splits=("dev=validation_matched",)))
    assert [e.label for e in spec.load("unused", "dev")] == ["entailment"]


def test_a_config_defined_tagging_task_reads_a_csv(tmp_path):
    """token_tagging: space-separated tokens and tags in csv cells, IOB1 converted to IOB2; with
    task.labels an unknown tag names its line, without them the labels come from training."""
    (tmp_path / "train.csv").write_text("words,labels\nAnna met Bob,I-PER O I-PER\nBob left,I-PER O\n")
    columns = ("tokens=words", "tags=labels")
    spec = configured_task(config_for("token_tagging", source=str(tmp_path / "{split}.csv"), columns=columns))
    assert spec.labels is None
    assert [e.label for e in spec.load("unused", "train")] == [("B-PER", "O", "B-PER"), ("B-PER", "O")]
    spec = configured_task(config_for("token_tagging", source=str(tmp_path / "{split}.csv"), columns=columns,
                                      labels=("O", "B-LOC", "I-LOC")))
    with pytest.raises(InputError, match=r"train\.csv:2: tag 'B-PER' is not one of O, B-LOC, I-LOC"):
        spec.load("unused", "train")


def test_config_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="lama reads only its own files"):
        configured_task(config_for("lama", source=str(tmp_path)))
    with pytest.raises(InputError, match="need config.task.source"):
        configured_task(config_for("rte", columns=("premise=a",)))
    with pytest.raises(InputError, match="'premise' is not 'name=value'"):
        configured_task(config_for("rte", source=str(tmp_path), columns=("premise",)))
    with pytest.raises(InputError, match="no such folder"):
        configured_task(config_for("rte", source="./missing_folder"))
    with pytest.raises(InputError, match="config.task.labels is for the generic tasks"):
        configured_task(config_for("rte", labels=("a", "b")))
    with pytest.raises(InputError, match="set config.task.labels"):
        configured_task(config_for("text_classification", source=str(tmp_path)))


# ------------------------------------------------------------------- a task from a config alone


def test_a_config_defined_task_trains_from_a_hub_format_dataset(tiny_model_dir, tmp_path):
    """text_classification from a hub-format dataset (saved to disk, read through the hub path
    with datasets.load_dataset mocked): labels, a column mapping and a pattern are the whole task
    definition; P-tuning v2 trains on it end to end and writes its predictions."""
    import jax

    from ptjax.experiment import build
    from ptjax.training import loop

    words = [("great", "pos"), ("awful", "neg"), ("lovely", "pos"), ("dreadful", "neg")]
    rows = [{"review": f"The film was {w} .", "stars": label} for w, label in words * 4]
    features = datasets.Features({"review": datasets.Value("string"),
                                  "stars": datasets.ClassLabel(names=["neg", "pos"])})
    reviews = datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=features)
                                    for split in ("train", "test")})
    reviews.save_to_disk(str(tmp_path / "reviews"))
    config = base.get_config()
    settings = {"model.name": str(tiny_model_dir("bert")), "task.name": "text_classification",
                "task.source": "someone/film-reviews", "task.labels": ("neg", "pos"),
                "task.columns": ("text=review", "label=stars"), "task.splits": ("validation=test",),
                "task.length_buckets": (16,), "method.name": "ptuning_v2", "prompt.deep.length": 2,
                "prompt.template": "{text}", "train.batch_size": 8, "train.num_steps": 4,
                "train.log_every": 2, "optimizer.learning_rate": 1e-2, "checkpoint.every_steps": 0,
                "logging.progress": False, "logging.tensorboard": False}
    for key, value in settings.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[name] = value
    with mock.patch("datasets.load_dataset", return_value=datasets.load_from_disk(str(tmp_path / "reviews"))):
        experiment = build(config)
        results = loop.train(config, tmp_path / "run", experiment.model, experiment.data,
                             devices=jax.devices()[:1])
    assert results["status"] == "completed" and results["steps"] == 4
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in logged if record.get("kind") == "train"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    lines = (tmp_path / "run" / "predictions" / "validation.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p["label"] for p in predictions] == [label for _, label in words * 4]
    accuracy = np.mean([p["prediction"] == p["label"] for p in predictions])
    assert accuracy == pytest.approx(results["metrics"]["validation"]["accuracy"])
