"""Official metrics on hand-computed cases, against scikit-learn and seqeval on random data."""

import random
import warnings

import pytest

from ptjax.eval import metrics as M
from ptjax.eval.entities import entity_scores, get_entities
from ptjax.eval.scoring import score_predictions
from ptjax.tasks import Example


# ---------------------------------------------------------------------------------- classification


def test_accuracy_and_cb_macro_f1_by_hand():
    assert M.accuracy(["a", "b", "a"], ["a", "a", "a"]) == pytest.approx(2 / 3)
    golds = ["entailment", "entailment", "contradiction", "neutral"]
    predictions = ["entailment", "contradiction", "contradiction", "entailment"]
    # entailment P=R=1/2 -> 1/2; contradiction P=1/2 R=1 -> 2/3; neutral never right -> 0
    assert M.macro_f1(predictions, golds) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert M.binary_f1(predictions, golds, "contradiction") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        M.accuracy(["a", "b"], ["a", "b", "c"])


def test_macro_and_binary_f1_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(40):
        n = rng.randint(1, 30)
        golds = [rng.choice("abc") for _ in range(n)]
        predictions = [rng.choice("abc") for _ in range(n)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = sklearn_metrics.f1_score(golds, predictions, average="macro", zero_division=0)
            binary = sklearn_metrics.f1_score(golds, predictions, labels=["a"], average=None,
                                              zero_division=0)[0]
        assert M.macro_f1(predictions, golds) == pytest.approx(expected)
        assert M.binary_f1(predictions, golds, "a") == pytest.approx(binary)


def test_multirc_exact_match_and_f1a_by_hand():
    question_ids = ["q1", "q1", "q1", "q2", "q2"]
    golds = ["1", "0", "1", "0", "1"]
    predictions = ["1", "0", "1", "1", "1"]
    scores = M.multirc_scores(predictions, golds, question_ids)
    assert scores["em"] == pytest.approx(1 / 2)  # q2 has one wrong option
    assert scores["f1a"] == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))  # P = 3/4, R = 3/3
    assert M.task_score({"multirc_em": 0.5, "multirc_f1a": 6 / 7}, ["multirc_em", "multirc_f1a"]) == \
        pytest.approx((0.5 + 6 / 7) / 2)


def test_superglue_task_score_and_average():
    assert M.task_score({"accuracy": 0.8, "macro_f1": 0.6}, ["accuracy", "macro_f1"]) == pytest.approx(0.7)
    assert M.average_score({"cb": 0.7, "rte": 0.6, "boolq": 0.8}) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        M.average_score({})


# ---------------------------------------------------------------------------------- answers


@pytest.mark.parametrize("text, normalized", [
    ("The  Eiffel-Tower!", "eiffeltower"),
    ("An apple a day", "apple day"),
    ("theater anthem", "theater anthem"),     # articles only as whole words
    ("a.m.", "am"),                           # punctuation goes before articles
    ("the.", ""),
    ("\tA\nB ", "b"),
    ("Ångström CAFÉ", "ångström café"),
    ("rock—roll", "rock—roll"),               # only ASCII punctuation is removed
    ("", ""),
])
def test_squad_normalization(text, normalized):
    assert M.normalize_answer(text) == normalized


def test_squad_exact_and_f1_by_hand():
    assert M.squad_exact("the Paris", "Paris.") == 1.0
    assert M.squad_f1("in Paris France", "Paris") == pytest.approx(0.5)  # P = 1/3, R = 1
    assert M.squad_f1("the cat cat", "a cat") == pytest.approx(2 / 3)  # repeated tokens count once each
    assert M.squad_f1("dog", "cat") == 0.0
    assert M.squad_f1("", "") == 1.0 and M.squad_f1("", "", version="1.1") == 0.0
    assert M.squad_f1("", "Paris") == 0.0


def test_squad_v1_and_record_take_the_best_gold_answer():
    references = {"q1": ["Barack Obama", "Obama"], "q2": ["the United States"]}
    predictions = {"q1": "obama", "q2": "United States of America"}
    expected = {"exact_match": pytest.approx(1 / 2), "f1": pytest.approx((1 + 2 / 3) / 2)}
    assert M.squad_v1_scores(predictions, references) == expected
    assert M.record_scores(predictions, references) == expected
    with pytest.raises(ValueError, match="no prediction for 1 question"):
        M.squad_v1_scores({"q1": "x"}, references)


def test_squad_v2_no_answer_and_breakdown():
    # c has a gold answer, so it is answerable (the official script's bool(answers)); "the"
    # normalizes to nothing, so its only gold string is the empty one, which "" matches.
    references = {"a": ["Paris"], "b": [], "c": ["the"]}
    scores = M.squad_v2_scores({"a": "paris", "b": "London", "c": ""}, references)
    assert scores == {"exact": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "total": 3.0,
                      "HasAns_exact": 1.0, "HasAns_f1": 1.0, "HasAns_total": 2.0,
                      "NoAns_exact": 0.0, "NoAns_f1": 0.0, "NoAns_total": 1.0}
    thresholded = M.squad_v2_scores({"a": "paris", "b": "London", "c": ""}, references,
                                    no_answer_probs={"a": 0.1, "b": 0.9, "c": 0.5}, threshold=0.6)
    assert thresholded["exact"] == 1.0 and thresholded["NoAns_exact"] == 1.0


def test_best_no_answer_threshold_by_hand():
    references = {"a": ["Paris"], "b": [], "c": ["Rome"], "d": []}
    predictions = {"a": "Paris", "b": "London", "c": "Rome", "d": "Oslo"}
    probs = {"a": 0.2, "b": 0.7, "c": 0.5, "d": 0.1}
    best, threshold = M.best_no_answer_threshold(predictions, references, probs, metric="exact")
    assert (best, threshold) == (pytest.approx(3 / 4), 0.5)  # abstain on b only
    applied = M.squad_v2_scores(predictions, references, probs, threshold=threshold)
    assert applied["exact"] == pytest.approx(best)


def test_lama_precision_at_1_per_relation_and_macro():
    scores = M.precision_at_1([" Paris", "Rome", "Berlin"], ["Paris", "Paris", "Berlin"],
                              ["P36", "P36", "P30"])
    assert scores["per_relation"] == {"P36": 0.5, "P30": 1.0}
    assert scores["macro"] == pytest.approx(0.75) and scores["micro"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------- entities


def test_entities_conlleval_tolerates_iob1_and_strict_does_not():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "B-MISC", "I-MISC"]
    assert get_entities(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6), ("MISC", 6, 8)]
    assert get_entities(tags, "strict") == [("LOC", 4, 5), ("MISC", 6, 8)]
    assert get_entities(["B-X", "E-X", "S-Y", "U-Z", "B-W", "L-W"]) == [("X", 0, 2), ("Y", 2, 3), ("Z", 3, 4),
                                                                        ("W", 4, 6)]
    with pytest.raises(ValueError, match="'E-PER' is not valid IOB2"):
        get_entities(["B-PER", "E-PER"], "strict")


def test_entity_scores_by_hand_and_ignored_types():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-V", "O", "B-A0"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-V", "O", "B-A1"]]
    scores = entity_scores(gold, predicted)
    assert (scores.micro.precision, scores.micro.recall, scores.micro.support) == (0.5, 0.5, 4)
    assert scores.per_type["PER"].f1 == 1.0 and scores.per_type["ORG"].support == 0
    without_verbs = entity_scores(gold, predicted, ignore_types=["V"])
    assert without_verbs.micro.f1 == pytest.approx(1 / 3) and "V" not in without_verbs.per_type
    assert "micro avg" in scores.report() and "PER" in scores.report()
    with pytest.raises(ValueError, match="sentence 0: 1 predicted tags for 2 tokens"):
        entity_scores([["O", "O"]], [["O"]])


def _random_sentences(rng, tags, count):
    gold = [[rng.choice(tags) for _ in range(rng.randint(0, 12))] for _ in range(count)]
    predicted = [[t if rng.random() < 0.6 else rng.choice(tags) for t in sentence] for sentence in gold]
    return gold, predicted


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_entity_scores_agree_with_seqeval_classification_report(mode):
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2

    rng = random.Random(1)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    if mode == "conlleval":  # seqeval's default mode also reads E- and S-
        tags += ["E-PER", "S-LOC", "I-MISC"]
    options = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
    for _ in range(150):
        gold, predicted = _random_sentences(rng, tags, rng.randint(1, 6))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = seqeval_metrics.classification_report(gold, predicted, output_dict=True,
                                                           zero_division=0, **options)
            micro_f1 = seqeval_metrics.f1_score(gold, predicted, zero_division=0, **options)
        ours = entity_scores(gold, predicted, mode=mode)
        assert ours.micro.f1 == pytest.approx(micro_f1)
        assert set(ours.per_type) == set(report) - {"micro avg", "macro avg", "weighted avg"}
        for name, score in ours.per_type.items():
            row = report[name]
            assert (score.precision, score.recall, score.f1, score.support) == \
                (pytest.approx(row["precision"]), pytest.approx(row["recall"]),
                 pytest.approx(row["f1-score"]), row["support"])
        averages = (("micro avg", ours.micro), ("macro avg", ours.macro), ("weighted avg", ours.weighted))
        for name, score in averages:
            if name in report and ours.per_type:  # seqeval averages over no types give nan; ours 0
                assert (score.precision, score.recall, score.f1) == \
                    (pytest.approx(report[name]["precision"]), pytest.approx(report[name]["recall"]),
                     pytest.approx(report[name]["f1-score"]))


def test_get_entities_agrees_with_seqeval_chunks():
    sequence_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")
    rng = random.Random(2)
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    for _ in range(500):
        sequence = [rng.choice(tags) for _ in range(rng.randint(0, 15))]
        expected = sequence_labeling.get_entities(sequence)
        assert [(t, s, e - 1) for t, s, e in get_entities(sequence)] == expected


# ---------------------------------------------------------------------------------- task scoring


def _examples(labels, **meta_lists):
    return [Example(f"g{i}", {}, label, {k: v[i] for k, v in meta_lists.items()})
            for i, label in enumerate(labels)]


def test_score_predictions_per_task_kind():
    cb = score_predictions("cb", _examples(["entailment", "neutral"]), [0, "contradiction"])
    assert cb == {"accuracy": 0.5, "macro_f1": pytest.approx(1 / 3),
                  "score": pytest.approx((0.5 + 1 / 3) / 2)}
    multirc = score_predictions("multirc", _examples(["1", "0", "1"], question_id=["a", "a", "b"]),
                                ["1", "0", "0"])
    assert (multirc["multirc_em"], multirc["multirc_f1a"]) == (0.5, pytest.approx(2 / 3))
    record = score_predictions("record", _examples([("Bob", "Bobby")]), ["bobby"])
    assert record["record_em"] == 1.0 and record["score"] == 1.0
    ner = score_predictions("conll03", _examples([("B-PER", "I-PER", "O")]), [["B-PER", "I-PER", "B-LOC"]])
    assert (ner["entity_precision"], ner["entity_recall"], ner["entity_f1/PER"]) == (0.5, 1.0, 1.0)
    srl = score_predictions("srl_conll05", _examples([("B-A0", "B-V")]), [["B-A0", "O"]])
    assert srl["srl_f1"] == 1.0  # the predicate span is not scored
    squad = score_predictions("squad_v2", _examples([("Paris",), ()]), ["Paris", ""])
    assert squad["squad_v2_exact"] == 1.0 and squad["squad_v2_NoAns_total"] == 1.0
    lama = score_predictions("lama", _examples(["Paris", "Rome"], relation=["P36", "P1376"]),
                             ["Paris", "Oslo"])
    assert (lama["p_at_1"], lama["p_at_1/P36"], lama["score"]) == (0.5, 1.0, 0.5)
    with pytest.raises(ValueError, match="1 predictions for 2 examples"):
        score_predictions("rte", _examples(["entailment", "entailment"]), ["entailment"])
    with pytest.raises(ValueError, match="without gold labels"):
        score_predictions("rte", _examples([None]), ["entailment"])
