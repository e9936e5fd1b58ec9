"""PPT's pilot study (§2, Table 2) and protocol (§4): real-word prompt inits (label words, the top-K
frequent tokens of a corpus, the task's own tokens) on tiny random BERT / T5 through the real
build and engine, their validation, and the label-balanced 32/32 sampler of BoolQ, RTE and CB
drawn from the original training data."""

import collections
import json

import jax
import numpy as np
import pytest

from configs import base
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.methods.model import embedding_rows
from ptjax.prompts import word_init
from ptjax.tasks.base import get_task
from ptjax.training.config import check_names, validate
from ptjax.training.engine import Engine

PROMPT_LENGTH = 6
RTE_ROWS = [
    ("The cat sat on the mat.", "A cat is sitting.", "entailment"),
    ("Paris is the capital of France.", "Berlin is in France.", "not_entailment"),
    ("The river flows into the sea.", "Water moves.", "entailment"),
    ("He closed the door since it was cold.", "It was hot.", "not_entailment"),
    ("A man is playing a guitar.", "Someone plays music.", "entailment"),
    ("The match was cancelled.", "The match took place.", "not_entailment"),
    ("Mary lives in London.", "Mary lives in England.", "entailment"),
    ("Jupiter is the largest planet.", "Mars is the largest planet.", "not_entailment"),
]  # 8: one full batch on the 8 simulated devices


@pytest.fixture(scope="module")
def rte_files(tmp_path_factory):
    """A tiny RTE in the task's jsonl format, read through config.task.source."""
    root = tmp_path_factory.mktemp("rte")
    for split in ("train", "val"):
        (root / f"{split}.jsonl").write_text("".join(
            json.dumps({"premise": p, "hypothesis": h, "label": label, "idx": k}) + "\n"
            for k, (p, h, label) in enumerate(RTE_ROWS)))
    return str(root / "{split}.jsonl")


def make_config(model_dir, rte_files, init, **prompt):
    config = base.get_config()
    config.model.name = str(model_dir)
    config.task.name, config.task.source = "rte", rte_files
    config.task.eval_splits = ("val",)
    config.task.max_length = 64
    config.method.name = "lester"
    config.prompt.length = PROMPT_LENGTH
    config.prompt.init = init
    for key, value in prompt.items():
        config.prompt[key] = value
    return config


def initial_prompt(config, seed=0):
    """(the soft-prompt table a run starts from [tokens, embed], the model)."""
    validate(config, jax.device_count())
    check_names(config)
    model = build(config).model
    trainable, _ = Engine(config, model, devices=jax.devices()[:1]).init_params(jax.random.PRNGKey(seed))
    return np.asarray(trainable["prompt"]["soft"]["embedding"]), model


def vocabulary(model):
    return embedding_rows(model.backbone, np.arange(model.backbone.config.vocab_size))


def row_ids(table, vocab):
    """The vocabulary row each prompt row equals (asserting that it equals one)."""
    distances = np.abs(table[:, None, :] - vocab[None]).max(-1)
    assert (distances.min(1) < 1e-6).all(), "a prompt row is not a token embedding"
    return distances.argmin(1)


def test_label_words_init_cycles_the_label_embeddings(tiny_model_dir, rte_files):
    table, model = initial_prompt(make_config(tiny_model_dir("bert"), rte_files, "label_words"))
    words = model.metadata["label_words"]
    assert list(words) == ["entailment", "not_entailment"]
    tokenizer, vocab = model.backbone.tokenizer, vocabulary(model)
    # BERT uncased: each word is one vocabulary entry; label k's vector at tokens k, k + 2, ...
    ids = [tokenizer.convert_tokens_to_ids(words[label].lower()) for label in words]
    assert tokenizer.unk_token_id not in ids
    np.testing.assert_array_equal(table, vocab[np.resize(ids, PROMPT_LENGTH)])


def test_label_words_init_with_vocab_fill_on_t5(tiny_model_dir, rte_files):
    """Lester et al.'s rule: labels first (a multi-token word: the mean of its tokens), the rest
    sampled vocabulary rows."""
    config = make_config(tiny_model_dir("t5"), rte_files, "label_words", label_init_fill="vocab")
    config.head.verbalizer = ("yes", "no")
    table, model = initial_prompt(config)
    vocab = vocabulary(model)
    for row, word in zip(table, ("yes", "no")):
        ids = word_init.label_token_ids(model.backbone.tokenizer, {"label": word})[0]
        np.testing.assert_allclose(row, vocab[ids].mean(0), rtol=1e-6)
    row_ids(table[2:], vocab)


def test_frequent_words_init_samples_the_corpus_top_k(tiny_model_dir, rte_files, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat and the dog\nthe cat sat\nthe end of the story of the cat\n")
    cache = tmp_path / "cache"
    config = make_config(tiny_model_dir("bert"), rte_files, "frequent_words", init_corpus=str(corpus),
                         init_top_k=PROMPT_LENGTH + 1, init_cache_dir=str(cache))
    table, model = initial_prompt(config)
    tokenizer = model.backbone.tokenizer
    counts = collections.Counter(t for line in corpus.read_text().splitlines()
                                 for t in tokenizer(line, add_special_tokens=False)["input_ids"])
    top = {t for t, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:PROMPT_LENGTH + 1]}
    picked = row_ids(table, vocabulary(model))
    assert set(picked) <= top and len(set(picked)) == PROMPT_LENGTH  # without replacement
    cached = list(cache.glob("token_frequencies/*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["ranked_ids"][0] == tokenizer.convert_tokens_to_ids("the")
    again, _ = initial_prompt(config)  # from the cache, same seed: the same prompt
    np.testing.assert_array_equal(again, table)
    other_seed, _ = initial_prompt(config, seed=1)
    assert not np.array_equal(other_seed, table)


def test_task_words_init_samples_the_training_tokens(tiny_model_dir, rte_files):
    table, model = initial_prompt(make_config(tiny_model_dir("bert"), rte_files, "task_words"))
    tokenizer = model.backbone.tokenizer
    task_tokens = {t for p, h, _ in RTE_ROWS for text in (p, h)
                   for t in tokenizer(text, add_special_tokens=False)["input_ids"]}
    picked = row_ids(table, vocabulary(model))
    assert set(picked) <= task_tokens and len(set(picked)) == PROMPT_LENGTH


@pytest.mark.parametrize("init, prompt, method, message", [
    ("label_words", {}, "ptuning_v2", "config.prompt.init='label_words' starts soft tokens"),
    ("label_words", {"label_init_fill": "repeat"}, "lester", "config.prompt.label_init_fill='repeat'"),
    ("frequent_words", {"init_top_k": 0}, "lester", "config.prompt.init_top_k=0"),
    ("vocab", {"init_corpus": "corpus.txt"}, "lester", "is read only with config.prompt.init='frequent_words'"),
    ("frequent_words", {"init_corpus": "/no/such/corpus.txt"}, "lester", "config.prompt.init_corpus='/no/such"),
])
def test_bad_word_inits_are_refused_in_one_line(rte_files, init, prompt, method, message):
    config = make_config("unused", rte_files, init, **prompt)
    config.method.name = method
    config.prompt.deep.length = 4
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        validate(config, jax.device_count())
        check_names(config)
    assert "\n" not in str(caught.value)


def test_label_words_init_needs_label_words(tiny_model_dir, rte_files):
    """A linear head reads no label words: the init says so instead of guessing."""
    config = make_config(tiny_model_dir("bert"), rte_files, "label_words")
    config.head.type = "cls"
    with pytest.raises(InputError, match="needs a task read through label words"):
        initial_prompt(config)


# --------------------------------------------------------------------------------------------
# PPT's few-shot sampler on the original training data.


def test_fewshot_samples_of_superglue_tasks_are_balanced_and_disjoint(data_dir, tiny_model_dir):
    """rte_fewshot from the full RTE training set (../shared/data/superglue_full); BoolQ's and
    CB's original training sets are not in the shared data, so their views refuse with one line."""
    if not (data_dir / "superglue_full" / "RTE" / "train.jsonl").is_file():
        pytest.skip("the full RTE training set (superglue_full/RTE/train.jsonl) is not in the shared data")
    task = get_task("rte_fewshot")
    for shots in (32, 256):
        train = task.load(data_dir, "train", shots=shots)
        dev32 = task.load(data_dir, "dev32", shots=shots)
        for sample in (train, dev32):
            assert len(sample) == shots
            assert collections.Counter(e.label for e in sample) == {"entailment": shots // 2,
                                                                    "not_entailment": shots // 2}
        assert not {e.meta["source_guid"] for e in train} & {e.meta["source_guid"] for e in dev32}
        fewglue = {e.fields["premise"] for e in get_task("rte").load(data_dir, "train")}
        assert len({e.fields["premise"] for e in train} - fewglue) > shots // 2  # not FewGLUE's 32
    assert len(task.load(data_dir, "val")) == 277  # the test set: SuperGLUE dev, whole
    assert task.load(data_dir, "train", sample_seed=1) != task.load(data_dir, "train")
    config = base.get_config()  # reachable from a config: task.options.shots
    config.model.name, config.data_dir = str(tiny_model_dir("bert")), str(data_dir)
    config.task.name, config.task.eval_splits, config.task.options.shots = "rte_fewshot", ("dev32", "val"), 64
    data = build(config).data
    assert [len(data.examples(split)) for split in ("train", "dev32", "val")] == [64, 64, 277]
    assert len(data.features("train")) == 64
    for name in ("boolq_fewshot", "cb_fewshot"):
        folder = {"boolq_fewshot": "BoolQ", "cb_fewshot": "CB"}[name]
        if not (data_dir / "superglue_full" / folder / "train.jsonl").is_file():
            with pytest.raises(InputError, match="original training set") as caught:
                get_task(name).load(data_dir, "train")
            assert "\n" not in str(caught.value)


def test_fewshot_view_samples_the_train_split_of_a_bound_source(tmp_path):
    """config.task.source with boolq_fewshot (on a machine with the internet: "aps/super_glue:boolq"):
    the balanced 32/32 sample comes from the source's train split, the test split is the source's.
    Data files stand in for the hub here."""
    from ptjax.tasks.sources import configured_task

    rows = [{"idx": i, "passage": f"passage {i}", "question": f"question {i}?", "label": i % 2 == 0}
            for i in range(140)]
    for split, chosen in (("train", rows), ("validation", rows[:10])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    config = base.get_config()
    config.task.name, config.task.source = "boolq_fewshot", str(tmp_path / "{split}.jsonl")
    spec = configured_task(config)
    assert spec.name == "boolq_fewshot"
    train, dev32 = spec.load("", "train"), spec.load("", "dev32", shots=32)
    for sample in (train, dev32):
        assert collections.Counter(e.label for e in sample) == {"True": 16, "False": 16}
    assert not {e.meta["source_guid"] for e in train} & {e.meta["source_guid"] for e in dev32}
    assert len(spec.load("", "val")) == 10
    assert len(spec.load("", "train", shots=64)) == 64


def test_an_export_started_from_corpus_words_evaluates_without_the_corpus(tiny_model_dir, rte_files, tmp_path):
    """The export's parameters replace the starting prompt: evaluating it reads neither the corpus
    nor the cached ranking of the run that trained it."""
    from ptjax.commands import run

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat and the dog\nthe cat sat on the mat\n")
    config = make_config(tiny_model_dir("bert"), rte_files, "frequent_words", init_corpus=str(corpus),
                         init_cache_dir="")
    config.train.num_steps, config.train.batch_size, config.train.eval_batch_size = 1, 8, 8
    config.checkpoint.every_steps, config.logging.tensorboard, config.logging.progress = 0, False, False
    trained = run(config, str(tmp_path / "train"))
    corpus.unlink()
    evaluation = make_config(tiny_model_dir("bert"), rte_files, "random")
    evaluation.mode, evaluation.restore = "eval", str(tmp_path / "train" / "export")
    evaluation.train.eval_batch_size = 8
    evaluation.logging.tensorboard, evaluation.logging.progress = False, False
    evaluated = run(evaluation, str(tmp_path / "eval"))
    assert evaluated["metrics"]["val"]["accuracy"] == trained["metrics"]["val"]["accuracy"]


def test_cb_fewshot_fills_in_for_a_short_label(tmp_path):
    """CB's original training set has 16 neutral examples: two 32-shot samples get 8 neutral each
    and share the rest evenly; a sample the data cannot fill is refused in one line."""
    rows = [("contradiction", 100), ("entailment", 100), ("neutral", 16)]
    folder = tmp_path / "superglue_full" / "CB"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(
        json.dumps({"premise": f"{label} premise {k}", "hypothesis": "h", "label": label, "idx": n}) + "\n"
        for n, (label, k) in enumerate((label, k) for label, count in rows for k in range(count))))
    task = get_task("cb_fewshot")
    for data_dir in (tmp_path, tmp_path / "superglue_full"):  # the shared root, or the full sets' folder
        train, dev32 = task.load(data_dir, "train"), task.load(data_dir, "dev32")
        for sample in (train, dev32):
            assert collections.Counter(e.label for e in sample) == {"contradiction": 12, "entailment": 12, "neutral": 8}
        assert not {e.meta["source_guid"] for e in train} & {e.meta["source_guid"] for e in dev32}
    assert collections.Counter(e.label for e in task.load(tmp_path, "train", shots=100)) == {
        "contradiction": 46, "entailment": 46, "neutral": 8}
    with pytest.raises(InputError, match="a sample of 256 needs more") as caught:
        task.load(tmp_path, "train", shots=256)
    assert "\n" not in str(caught.value)
