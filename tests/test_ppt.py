"""PPT: pre-training formats as trainable tasks (tiny random T5 through the engine), unified
multiple choice label masking, transfer of a pre-trained prompt (right format, wrong backbone,
wrong size), the RACE / Yahoo Answers / few-shot readers, the local corpus, and the T5-XXL configs
built without weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from ptjax.errors import InputError
from ptjax.experiment import build, open_configured_backbone
from ptjax.formulations import ppt
from ptjax.tasks.base import Example, get_task
from ptjax.training import checkpoints as ckpt
from ptjax.training import loop
from ptjax.training.config import validate

REPO = Path(__file__).resolve().parents[1]
TOPICS = ("river", "market", "garden", "school", "harbor", "mountain", "kitchen", "library")


def _corpus(folder: Path) -> Path:
    """Documents of 6 sentences each, one per line; each document keeps to its own topic."""
    lines = []
    for d in range(32):
        topic = TOPICS[d % len(TOPICS)]
        lines.append(" ".join(f"The {topic} story {d} goes on with part {s} of the day." for s in range(6)))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    return folder


def _config(model_dir, data_dir, task: str, **options):
    config = base.get_config()
    config.model.name = str(model_dir)
    config.data_dir = str(data_dir)
    config.task.name = task
    config.task.max_length = 64
    config.task.length_buckets = (64,)  # one shape: one compile
    config.task.eval_splits = ()
    for key, value in options.items():
        config.task.options[key] = value
    config.method.name = "lester"
    config.prompt.length = 4
    config.prompt.pattern = "format"
    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 0.3
    config.train.batch_size = 8
    config.train.log_every = 1
    config.checkpoint.every_steps = 0
    config.checkpoint.async_save = False
    config.logging.tensorboard = False
    config.logging.progress = False
    return config


@pytest.fixture(scope="session")
def t5_dir(tiny_model_dir):
    return tiny_model_dir("t5v1_1")


@pytest.fixture(scope="session")
def t5(t5_dir):
    config = base.get_config()
    config.model.name = str(t5_dir)
    return open_configured_backbone(config).load_weights()


@pytest.fixture(scope="session")
def pretrained_nsp(t5_dir, t5, tmp_path_factory):
    """A tiny-T5 ppt_nsp prompt pre-training run through the engine: (workdir, metrics)."""
    root = tmp_path_factory.mktemp("ppt")
    config = _config(t5_dir, _corpus(root / "corpus"), "ppt_nsp", source="text", paths=["corpus.txt"],
                     num_examples=32, dev_every=0, seed=0)
    config.train.num_steps = 16
    workdir = root / "runs" / "ppt_nsp"
    experiment = build(config, backbone=t5)
    loop.train(config, workdir, experiment.model, experiment.data, devices=jax.devices()[:1])
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return workdir, [m for m in metrics if m["kind"] == "train"]


@pytest.mark.slow
def test_prompt_pretraining_lowers_the_loss_and_exports(pretrained_nsp, t5):
    workdir, train = pretrained_nsp
    losses = [m["loss"] for m in train]
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05, losses
    info = ckpt.read_export_metadata(workdir)
    assert info["params"] == {"prompt/soft/embedding": [4, 32]}
    assert info["method"]["task"] == "ppt_nsp" and info["fingerprint"] == t5.fingerprint
    assert info["method"]["label_words"] == {"0": "no", "1": "maybe", "2": "yes"}


def _export(path: Path, vectors: np.ndarray, task: str, fingerprint: str) -> None:
    ckpt.write_export(path / "export", {"prompt": {"soft": {"embedding": jnp.asarray(vectors)}}},
                      metadata={"task": task}, fingerprint=fingerprint, backbone="tiny")


def _soft_prompt(config, backbone) -> np.ndarray:
    experiment = build(config, backbone=backbone)
    shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]),
                             experiment.model.abstract_params()[0])
    params = experiment.model.init_params(jax.random.PRNGKey(0), shardings)
    return np.asarray(params["prompt"]["soft"]["embedding"])


@pytest.mark.slow
def test_transfer_picks_the_prompt_of_the_task_format(pretrained_nsp, t5, t5_dir, data_dir, tmp_path):
    workdir, _ = pretrained_nsp
    root = tmp_path / "pretrained"
    (root / "ppt_nsp").mkdir(parents=True)
    trained = np.asarray(ckpt.read_export(workdir, {"prompt": {"soft": {"embedding": np.zeros((4, 32), np.float32)}}},
                                          fingerprint=t5.fingerprint)[0]["prompt"]["soft"]["embedding"])
    (root / "ppt_nsp" / "export").symlink_to(workdir / "export")
    sentiment = np.arange(4 * 32, dtype=np.float32).reshape(4, 32) / 100
    _export(root / "ppt_sentiment", sentiment, "ppt_sentiment", t5.fingerprint)
    for task, expected in (("rte", trained), ("boolq", trained), ("sst2_fewshot", sentiment)):
        config = _config(t5_dir, data_dir, task)
        config.prompt.init, config.prompt.init_from = "pretrained", str(root)
        np.testing.assert_allclose(_soft_prompt(config, t5), expected, err_msg=task)
    config = _config(t5_dir, data_dir, "rte")
    config.prompt.init, config.prompt.init_from, config.prompt.pattern = "pretrained", str(root), "unified"
    with pytest.raises(InputError, match="ppt_unified_mc"):
        _soft_prompt(config, t5)
    config = _config(t5_dir, data_dir, "rte")  # a random init differs from both
    assert not np.allclose(_soft_prompt(config, t5), trained)


@pytest.mark.slow
def test_transfer_refuses_another_backbone_or_size(t5, t5_dir, tiny_model_dir, data_dir, tmp_path):
    _export(tmp_path / "other", np.zeros((4, 32), np.float32), "ppt_nsp", "0123456789abcdef")
    _export(tmp_path / "long", np.zeros((6, 32), np.float32), "ppt_nsp", t5.fingerprint)
    config = _config(t5_dir, data_dir, "rte")
    config.prompt.init = "pretrained"
    config.prompt.init_from = str(tmp_path / "other")
    with pytest.raises(InputError, match="fingerprint"):
        _soft_prompt(config, t5)
    config.prompt.init_from = str(tmp_path / "long")
    with pytest.raises(InputError, match="6 tokens of width 32.*4 tokens of width 32.*prompt.length=6"):
        _soft_prompt(config, t5)
    config.prompt.init_from = str(tmp_path / "missing")
    with pytest.raises(InputError, match="init_from"):
        _soft_prompt(config, t5)
    for key, value, message in (("init_from", "", "needs config.prompt.init_from"),
                                ("encoder", "lstm", "re-encode"), ("pattern", "cloze", "prompt.pattern")):
        bad = _config(t5_dir, data_dir, "rte")
        bad.prompt.init, bad.prompt.init_from = "pretrained", "somewhere"
        bad.prompt[key] = value
        with pytest.raises(InputError, match=message):
            validate(bad, 1)


def test_unified_choice_masks_letters_beyond_each_examples_options(tiny_model_dir):
    """The verbalizer head never scores (nor trains on) a letter an example does not have."""
    from ptjax.models.loading import load_backbone
    from ptjax.prompts.rendering import Renderer
    from ptjax.prompts.verbalizers import tokenize_word

    backbone = load_backbone(str(tiny_model_dir("llama")))
    tokenizer = backbone.tokenizer
    words = [w for w in ("the", "is", "of", "capital", "city", "in") if len(tokenize_word(tokenizer, w)) == 1][:4]
    assert len(words) == 4
    labels = ("0", "1", "2", "3")
    formulation = ppt.MaskedVerbalizerClassification(
        template="{query} Answer: [MASK]", labels=labels, label_words=dict(zip(labels, words)),
        renderer=Renderer(tokenizer, backbone.kind, 32), option_count=lambda e: e.meta["num_options"])
    examples = [Example(f"e{k}", {"query": f"The city {k} is"}, str(k % n), {"num_options": n})
                for k, n in enumerate((2, 3, 4, 2))]
    features = formulation.featurize(examples)
    np.testing.assert_array_equal([f["label_mask"] for f in features],
                                  [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(InputError, match="beyond"):
        formulation.featurize([Example("bad", {"query": "x"}, "3", {"num_options": 2})])

    from ptjax.methods.model import PromptModel

    model = PromptModel(backbone=backbone, head=formulation.head, trainable=frozenset())
    width = max(len(f["input_ids"]) for f in features)
    batch = {k: np.stack([np.pad(f[k], (0, width - len(f[k]))) for f in features])
             for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch["soft_index"] = np.full_like(batch["input_ids"], -1)
    for k in ("target_index", "label", "label_mask"):
        batch[k] = np.stack([f[k] for f in features])
    params = {"backbone": backbone.params}

    @jax.jit
    def run(params, batch):
        return model.predict(params, batch), model.loss(params, batch, None, train=False)[0]

    predicted, loss = run(params, batch)
    scores = np.asarray(predicted["scores"])
    mask = batch["label_mask"].astype(bool)
    assert np.all(scores[~mask] < -1e8) and np.all(scores[mask] > -1e8)
    assert np.all(np.asarray(predicted["prediction"]) < mask.sum(1))
    logits = np.where(mask, scores, -np.inf)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(
        1, keepdims=True)
    expected = -np.mean(log_probs[np.arange(4), batch["label"]])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.slow
def test_unified_pretraining_task_masks_options(t5, t5_dir, tmp_path):
    """ppt_unified_mc end to end on tiny T5: the letters are not single tokens there, so they
    are scored as candidates, each example offering only its own options."""
    config = _config(t5_dir, _corpus(tmp_path), "ppt_unified_mc", source="text", paths=["corpus.txt"],
                     num_examples=6, dev_every=0, min_options=2, max_options=5)
    experiment = build(config, backbone=t5)
    examples = experiment.data.examples("train")
    features = experiment.data.features("train")
    for example, feature in zip(examples, features):
        assert feature["option_mask"].shape == (16,)
        assert feature["option_mask"].sum() == example.meta["num_options"] == len(example.fields["choices"])
        assert example.fields["options"].startswith("A. ")
    assert {e.meta["num_options"] for e in examples} <= set(range(2, 6))


def test_formats_patterns_and_views():
    from ptjax.tasks.pretraining import NextSentencePairs, SentenceSelection

    assert ppt.choice_pattern(6) == SentenceSelection.pattern
    assert ppt.NSP_PATTERNS["format"][0] == NextSentencePairs.pattern
    assert ppt.NSP_PATTERNS["format"][1].endswith("[MASK].")  # causal LMs answer last
    assert ppt.source_task("rte", "format") == "ppt_nsp"
    assert ppt.source_task("copa", "hybrid") == "ppt_nss"
    assert ppt.source_task("sst2_fewshot", "format") == "ppt_sentiment"
    assert ppt.source_task("boolq", "unified") == "ppt_unified_mc"
    assert ppt.source_task("wic", "format") == ""
    cb = ppt.view_for("cb")
    fields, letters = cb.unified(("entailment", "contradiction", "neutral"))
    example = Example("x", {"premise": "It may rain.", "hypothesis": "It rains"}, "neutral")
    assert fields(example) == {"query": "It may rain. It rains.", "options": "A. no B. maybe C. yes"}
    assert letters == {"entailment": "C", "contradiction": "A", "neutral": "B"}
    fields, letters = ppt.view_for("sst2_fewshot").unified(("0", "1"))
    assert fields(Example("s", {"sentence": "fine"}))["options"] == "A. terrible B. great"
    copa = ppt.view_for("copa").fields(Example("c", {"premise": "It rained.", "question": "effect",
                                                     "choice1": "Wet.", "choice2": "Dry."}, "0"))
    assert copa == {"query": "It rained. What happened as a result", "options": ("Wet.", "Dry.")}


# --------------------------------------------------------------------------------------------
# Readers.


def test_race_reads_both_layouts(tmp_path):
    article = {"id": "high7.txt", "article": "Tom went home. He slept.", "questions": ["Where did Tom go?", "What did he do?"],
               "options": [["home", "school", "work", "park"], ["ate", "slept", "ran", "sang"]], "answers": ["A", "B"]}
    (tmp_path / "RACE" / "dev" / "high").mkdir(parents=True)
    (tmp_path / "RACE" / "dev" / "middle").mkdir(parents=True)
    (tmp_path / "RACE" / "dev" / "high" / "high7.txt").write_text(json.dumps(article))
    middle = dict(article, id="middle1.txt", answers=["C", "D"])
    (tmp_path / "RACE" / "dev" / "middle" / "middle1.txt").write_text(json.dumps(middle))
    race = get_task("race").load(tmp_path, "dev")
    assert [e.label for e in race] == ["C", "D", "A", "B"]
    assert race[2].fields == {"article": "Tom went home. He slept.", "question": "Where did Tom go?",
                              "option_a": "home", "option_b": "school", "option_c": "work", "option_d": "park"}
    assert [e.label for e in get_task("race_h").load(tmp_path, "dev")] == ["A", "B"]
    rows = [{"example_id": "middle3.txt", "article": "A.", "question": "Q?", "options": ["a", "b", "c", "d"],
             "answer": "D"},
            {"example_id": "high3.txt", "article": "B.", "question": "R?", "options": ["e", "f", "g", "h"],
             "answer": "A"}]
    (tmp_path / "RACE" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.label for e in get_task("race_m").load(tmp_path, "test")] == ["D"]
    (tmp_path / "RACE" / "test.jsonl").write_text(json.dumps(dict(rows[0], options=["a"])) + "\n")
    with pytest.raises(InputError, match=r"test.jsonl:1: .*4 options"):
        get_task("race").load(tmp_path, "test")


def test_yahoo_answers_reader(tmp_path):
    folder = tmp_path / "yahoo_answers"
    folder.mkdir()
    (folder / "test.csv").write_text('"5","Who won?","The final\\nlast night","Spain, 2-1."\n'
                                     '"10","Vote?","","Yes, always."\n')
    examples = get_task("yahoo_answers").load(tmp_path, "validation")
    assert [e.label for e in examples] == ["5", "10"]
    assert examples[0].fields == {"title": "Who won?", "content": "The final last night", "answer": "Spain, 2-1."}
    assert ppt.view_for("yahoo_answers").fields(examples[1]) == {"sentence": "Vote? Yes, always."}
    (folder / "test.csv").write_text('"11","a","b","c"\n')
    with pytest.raises(InputError, match=r"test.csv:1: label '11'"):
        get_task("yahoo_answers").load(tmp_path, "test")


def test_fewshot_samples_are_balanced_disjoint_and_deterministic(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    rows = [f"sentence number {i}\t{int(i % 3 == 0)}" for i in range(120)]
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nheld out\t1\n")
    spec = get_task("sst2_fewshot")
    train, dev = spec.load(tmp_path, "train"), spec.load(tmp_path, "dev32")
    assert len(train) == len(dev) == 32
    assert sorted(e.label for e in train).count("1") == 16
    assert not {e.fields["sentence"] for e in train} & {e.fields["sentence"] for e in dev}
    assert [e.fields for e in spec.load(tmp_path, "train")] == [e.fields for e in train]
    assert [e.fields for e in spec.load(tmp_path, "train", sample_seed=1)] != [e.fields for e in train]
    assert len(spec.load(tmp_path, "train", per_label=5)) == 10
    assert [e.fields["sentence"] for e in spec.load(tmp_path, "dev")] == ["held out"]
    with pytest.raises(InputError, match="label '1' has 40"):
        spec.load(tmp_path, "train", per_label=25)


def test_local_corpus_leaves_test_sets_out(tmp_path):
    from ptjax.tasks.local_corpus import write_corpus

    for folder, task, split, record in (
            ("superglue_unlabeled", "MultiRC", "unlabeled", {"passage": {"text": "One. Two @highlight Three"}}),
            ("superglue", "RTE", "train", {"premise": "Train premise.", "hypothesis": "h", "label": "entailment"}),
            ("superglue", "RTE", "val", {"premise": "Test premise.", "hypothesis": "h", "label": "entailment"})):
        (tmp_path / folder / task).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / task / f"{split}.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "sst").mkdir()
    (tmp_path / "sst" / "trees_train.txt").write_text("(3 (2 A) (3 (3 fine) (2 film)))\n")
    counts = write_corpus(tmp_path, tmp_path / "out")
    texts = {json.loads(line)["text"] for line in (tmp_path / "out" / "corpus.jsonl").read_text().splitlines()}
    assert texts == {"One. Two. Three.", "Train premise.", "A fine film"}
    assert sum(counts.values()) == 3


# --------------------------------------------------------------------------------------------
# T5-XXL configs.


def _abstract_t5xxl(tokenizer, dtype=jnp.bfloat16):
    """T5.1.1-XXL's architecture with no weights (sizes of google/t5-v1_1-xxl's config.json)."""
    import transformers

    from ptjax.models.loading import Backbone, abstract_params
    from ptjax.models.registry import family_for

    hf = transformers.T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                               feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
    family = family_for("t5")
    config = family.config_from_hf(hf, frozenset({"shared.weight", "lm_head.weight"}))
    module = family.build(config, dtype=dtype, scan_layers=True, remat_policy="full")
    shapes, logical = abstract_params(family, config, module)
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes)
    return Backbone(name="google/t5-v1_1-xxl", family=family, kind=family.kind(config), module=module,
                    config=config, hf_config=hf, tokenizer=tokenizer, shapes=shapes, logical_axes=logical,
                    dtype=dtype, files=None)


@pytest.mark.slow
@pytest.mark.parametrize("argument", ["boolq", "rte,32", "copa,256", "sst2,64"])
def test_t5xxl_config_validates_and_builds_without_weights(argument, t5, data_dir):
    from configs import ppt_t5xxl

    config = ppt_t5xxl.get_config(argument)
    chips = int(argument.partition(",")[2] or 8)
    validate(config, chips)
    assert config.model.dtype == "bfloat16" and config.optimizer.name == "adafactor"
    assert config.prompt.length == 100 and config.train.batch_size == 16 and config.model.remat_policy == "full"
    config.data_dir = str(data_dir)
    experiment = build(config, backbone=_abstract_t5xxl(t5.tokenizer))
    shapes, _ = experiment.model.abstract_params()
    assert shapes["prompt"]["soft"]["embedding"].shape == (100, 4096)
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["backbone"]))
    assert 11.0e9 < total < 11.5e9
    assert experiment.description["prompt_source"] == ppt.source_task(config.task.name, "format")


@pytest.mark.slow
@pytest.mark.parametrize("argument", ["ppt_nsp", "ppt_unified_mc,256", "ppt_nss,32"])
def test_t5xxl_pretraining_config_validates_and_builds_without_weights(argument, t5, tmp_path, data_dir):
    from configs import ppt_pretrain_t5xxl

    config = ppt_pretrain_t5xxl.get_config(argument)
    validate(config, int(argument.partition(",")[2] or 8))
    assert config.train.batch_size == 256 and config.task.options.source == "tfds"
    config.data_dir = str(tmp_path)
    experiment = build(config, backbone=_abstract_t5xxl(t5.tokenizer))
    assert experiment.model.abstract_params()[0]["prompt"]["soft"]["embedding"].shape == (100, 4096)


def test_headline_command_names_the_missing_backbone(tmp_path, data_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    # init_from names an existing folder: the pre-trained prompts are read after the backbone.
    done = subprocess.run([sys.executable, "main.py", "--config", "configs/ppt_t5xxl.py", "--workdir", str(tmp_path),
                           f"--config.prompt.init_from={tmp_path}"],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: google/t5-v1_1-xxl"), done.stderr
