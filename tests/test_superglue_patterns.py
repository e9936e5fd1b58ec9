"""SuperGLUE / SST patterns (issue 5): every task's default manual, P-tuning and linear templates
render real examples as specified (slot, soft tokens, anchors, segments, label words) on masked,
causal and seq2seq tokenizers; the WSC referent formulation; the paper-protocol configs."""

import re

import numpy as np
import pytest
import transformers

from configs import superglue_fewshot, superglue_grid, superglue_minilm_compare, superglue_paper
from ptjax.experiment import build
from ptjax.formulations import wsc
from ptjax.formulations.patterns import PATTERNS
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.templates import parse_template
from ptjax.prompts.verbalizers import build_verbalizer
from ptjax.tasks.base import Example, get_task
from ptjax.training.config import validate

TASKS = ("rte", "cb", "boolq", "wic", "wsc", "multirc", "copa", "sst2", "sst5")
PAIRS = ("rte", "cb", "boolq", "wic", "wsc", "multirc")  # linear input: two segments
FAMILY = {"masked_lm": "bert", "causal_lm": "llama", "seq2seq": "t5"}
# Text each P-tuning template keeps as an anchor next to its soft tokens.
ANCHORS = {"rte": "?", "cb": "?", "boolq": "?", "wic": '"?', "wsc": '"', "multirc": '"?',
           "sst2": "itwas", "sst5": "itwas"}
MNLI = Example("mnli-0", {"premise": "A man plays a guitar on stage.", "hypothesis": "A person makes music."},
               "entailment")


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    return {kind: transformers.AutoTokenizer.from_pretrained(tiny_model_dir(family))
            for kind, family in FAMILY.items()}


@pytest.fixture(scope="module")
def examples(data_dir):
    """A few real examples per task (SuperGLUE val, SST dev); COPA with a 'cause' and an 'effect'."""
    out = {}
    for task in TASKS:
        loaded = get_task(task).load(data_dir, "dev" if task.startswith("sst") else "val")
        out[task] = loaded[:3]
    copa = get_task("copa").load(data_dir, "val")
    out["copa"] = [next(e for e in copa if e.fields["question"] == q) for q in ("cause", "effect")]
    return out


def fields_of(task, example):
    patterns = PATTERNS[task]
    return dict(patterns.fields(example) if patterns.fields else example.fields)


def squash(text: str) -> str:
    """Lowercase, no whitespace: WordPiece decoding spaces punctuation differently."""
    return re.sub(r"\s+", "", text.lower())


def used_fields(template):
    return {piece.name: piece.modifiers for piece in template.pieces if hasattr(piece, "modifiers")}


def check_fields_appear(task, template, fields, decoded):
    for name, modifiers in used_fields(template).items():
        value = fields[name].strip()
        if "rstrip_punct" in modifiers:
            value = value.rstrip(".,;:!? ")
        if "truncate" in modifiers:  # may be cut at its end: its opening words survive
            value = " ".join(value.split()[:4])
        assert squash(value) in squash(decoded), (task, name, value, decoded)


@pytest.mark.parametrize("kind", ["masked_lm", "causal_lm", "seq2seq"])
@pytest.mark.parametrize("style", ["manual", "ptuning"])
@pytest.mark.parametrize("task", TASKS)
def test_cloze_patterns_render_slot_soft_tokens_anchors_and_fields(task, style, kind, tokenizers, examples):
    tok = tokenizers[kind]
    template = parse_template(getattr(PATTERNS[task], style))
    assert template.has_target and template.source.rstrip(".").endswith("[MASK]")  # the answer comes last
    renderer = Renderer(tok, kind, 256)
    for example in examples[task]:
        fields = fields_of(task, example)
        used = template.until_target() if kind == "causal_lm" else template
        out = renderer(used, fields)
        ids = out.input_ids.tolist()
        if kind == "masked_lm":
            assert ids.count(tok.mask_token_id) == 1 and ids[out.target_index] == tok.mask_token_id
        elif kind == "causal_lm":
            assert out.target_index == len(ids) - 1  # the next token is the label word
        else:
            assert tok.convert_ids_to_tokens(ids[out.target_index]) == "<extra_id_0>"
        soft = out.soft_index[out.soft_index >= 0].tolist()
        assert soft == list(range(template.num_soft_tokens))
        if style == "manual":
            assert template.num_soft_tokens == 0
        else:
            assert template.num_soft_tokens >= 6
            # An anchor between the soft blocks stays a real token (P-tuning's "?").
            first, last = np.flatnonzero(out.soft_index >= 0)[[0, -1]]
            between = [i for i in range(first, last) if out.soft_index[i] < 0]
            assert between
            if kind != "seq2seq":  # the tiny unigram vocabulary cannot spell quotes
                anchor = fields["connective"] if task == "copa" else ANCHORS[task]
                assert squash(anchor) in squash(tok.decode(out.input_ids[between]))
        if kind != "seq2seq":  # the tiny unigram vocabulary cannot spell every word
            text = tok.decode(out.input_ids[out.soft_index < 0])
            check_fields_appear(task, used, fields, text)
            if task in PAIRS and task != "wsc":
                assert "answer:" in squash(text)


@pytest.mark.parametrize("task", TASKS)
def test_linear_inputs_split_pairs_into_segments(task, tokenizers, examples):
    tok = tokenizers["masked_lm"]
    patterns = PATTERNS[task]
    template = parse_template(patterns.linear or patterns.linear_choice)
    assert not template.has_target and template.num_soft_tokens == 0
    renderer = Renderer(tok, "encoder", 256)
    for example in examples[task]:
        fields = fields_of(task, example)
        if task == "copa":
            fields["option"] = patterns.options(example)[1]
        out = renderer(template, fields)
        ids, types = out.input_ids.tolist(), out.token_type_ids.tolist()
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        if task in PAIRS + ("copa",):  # [CLS] a [SEP] b [SEP], token types 0 then 1
            first_sep = ids.index(tok.sep_token_id)
            assert ids.count(tok.sep_token_id) == 2
            assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}
        else:
            assert ids.count(tok.sep_token_id) == 1 and set(types) == {0}
        check_fields_appear(task, template, fields, tok.decode(ids))


def test_mnli_style_pairs_share_the_nli_patterns(tokenizers):
    assert PATTERNS["mnli"].label_words == {"entailment": "Yes", "neutral": "Maybe", "contradiction": "No"}
    out = Renderer(tokenizers["masked_lm"], "masked_lm", 64)(PATTERNS["mnli"].manual, MNLI.fields)
    text = tokenizers["masked_lm"].decode(out.input_ids)
    assert "question : a person makes music? answer : [MASK]." in text


@pytest.mark.parametrize("task", [t for t in TASKS if t != "copa"])
def test_label_words_cover_the_labels_and_are_single_tokens_for_bert(task, tokenizers):
    spec, patterns = get_task(task), PATTERNS[task]
    assert set(patterns.label_words) == set(spec.labels)
    assert len(set(patterns.label_words.values())) == len(spec.labels)
    template = parse_template(patterns.manual)
    verbalizer = build_verbalizer({label: patterns.label_words[label] for label in spec.labels},
                                  tokenizers["masked_lm"], "masked_lm", follows_space=template.target_follows_space)
    assert verbalizer.is_single_token and verbalizer.token_ids.shape[1] == 1


def test_copa_connective_and_options(examples, tokenizers):
    patterns = PATTERNS["copa"]
    cause, effect = examples["copa"]
    assert fields_of("copa", cause)["connective"] == "because" and fields_of("copa", effect)["connective"] == "so"
    for example in (cause, effect):
        options = patterns.options(example)
        assert len(options) == 2 and all(o[:1].islower() or o.split()[0] in ("I", "I'm") for o in options)
        assert not any(o.endswith(".") for o in options)
    out = Renderer(tokenizers["causal_lm"], "causal_lm", 64)(parse_template(patterns.manual).until_target(),
                                                            fields_of("copa", cause))
    assert tokenizers["causal_lm"].decode(out.input_ids).endswith(cause.fields["premise"].rstrip(".") + ", because")


# --------------------------------------------------------------------------------------------
# WSC: the referent formulation.


def test_mark_pronoun():
    text = "Mary told her sister that she would come , but she did not."
    assert wsc.mark_pronoun(text, 5, "she") == "Mary told her sister that *she* would come , but she did not."
    assert wsc.mark_pronoun(text, 9, "she") == "Mary told her sister that she would come , but *she* did not."
    assert wsc.mark_pronoun("They left because they were tired.", 0, "they") == \
        "*They* left because they were tired."
    assert wsc.mark_pronoun("He saw it, then he ran.", 3, "he") == "He saw it, then *he* ran."  # nearest match
    assert wsc.mark_pronoun("Nothing here.", 1, "it") == "Nothing here."
    assert wsc.mark_pronoun("The dog bit him, then it ran.", 3, "him") == "The dog bit *him*, then it ran."
    assert wsc.mark_pronoun("Theirs is theirs.", 0, "their") == "Theirs is theirs."  # whole words only


def test_referent_comparison_and_slot_filler():
    assert wsc.as_slot_filler("The demonstrators") == "the demonstrators"
    assert wsc.as_slot_filler("Mr. Moncrieff") == "Mr. Moncrieff"
    assert wsc.same_referent(" the demonstrators", "The demonstrators")
    assert wsc.same_referent("demonstrators", "the demonstrators")  # articles do not count
    assert wsc.same_referent("Moncrieff", "Mr. Moncrieff")  # one word list holds the other
    assert not wsc.same_referent("the councilmen", "the demonstrators")
    assert not wsc.same_referent("the", "the demonstrators")  # nothing left but an article


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_wsc_on_an_lm_names_the_referent(family, tiny_model_dir, data_dir):
    config = superglue_paper.paper("wsc", "ptuning", "fewshot")
    config.model.name = str(tiny_model_dir(family))
    config.task.max_length = 128 if family == "bert" else 256  # the tiny BPE spells words in pieces
    experiment = build(config)
    formulation = experiment.data.formulation
    assert experiment.description["formulation"] == "referent"
    assert experiment.description["template"] in (wsc.PTUNING, wsc.PTUNING[:-1])  # causal LMs: cut at the slot
    examples = experiment.data.examples("val")[:4]
    features = formulation.featurize(examples)
    tok = formulation.renderer.tokenizer
    for example, feature in zip(examples, features):
        candidate = wsc.as_slot_filler(example.fields["span1_text"])
        count = int(feature["score_mask"][0].sum())
        targets = feature["score_targets"][0, :count].tolist()
        assert squash(tok.decode(targets)) == squash(candidate)
        positions = feature["score_positions"][0, :count]
        row = feature["input_ids"][0]
        if family == "bert":  # one mask per candidate token
            assert all(row[p] == tok.mask_token_id for p in positions)
        else:  # teacher forcing: position p predicts token p + 1
            np.testing.assert_array_equal(row[positions + 1], targets)
        assert squash("*" + example.fields["span2_text"] + "*") in squash(tok.decode(row))
        assert feature["label"] == int(example.label == "True")
    # The LM's fill decides: the candidate's own tokens -> True, other tokens -> False.
    fills = [{"fill": f["score_targets"][0], "fill_mask": f["score_mask"][0]} for f in features]
    assert formulation.decode(examples, features, fills) == ["True"] * len(examples)
    other = tok(" window", add_special_tokens=False)["input_ids"]
    wrong = [{"fill": np.asarray(other), "fill_mask": np.ones(len(other), int)} for _ in features]
    assert formulation.decode(examples, features, wrong) == ["False"] * len(examples)


@pytest.mark.slow
def test_wsc_keeps_yes_no_on_linear_heads_and_when_asked(tiny_model_dir, data_dir):
    config = superglue_paper.paper("wsc", "ptuning_v2", "fewshot")
    config.model.name = str(tiny_model_dir("bert"))
    config.prompt.deep.length = 2
    assert build(config).description["formulation"] == "linear"
    config = superglue_paper.paper("wsc", "ptuning", "fewshot")
    config.model.name = str(tiny_model_dir("bert"))
    config.head.type = "verbalizer"
    experiment = build(config)
    assert experiment.description["formulation"] == "verbalizer"
    assert experiment.description["label_words"] == {"False": "No", "True": "Yes"}


# --------------------------------------------------------------------------------------------
# Protocol configs.


def test_paper_protocols_and_hyperparameters(data_dir):
    full = superglue_paper.paper("rte", "ptuning", "full")
    assert full.data_dir.endswith("superglue_full") and full.task.eval_splits == ("val",)
    assert (full.optimizer.name, full.schedule.name, full.optimizer.learning_rate) == ("adamw", "linear", 1e-5)
    assert (full.train.batch_size, full.train.num_epochs, full.train.eval_every) == (16, 20, 0)
    assert full.train.early_stopping_patience > 0
    assert superglue_paper.paper("boolq", "fine_tune", "full").train.num_epochs == 10
    few = superglue_paper.paper("cb", "ptuning", "fewshot")
    assert few.task.eval_splits == ("dev32", "val") and few.train.num_steps == 3500
    assert few.task.train_split == "train"
    rte_v2 = superglue_paper.paper("rte", "ptuning_v2")
    assert (rte_v2.optimizer.learning_rate, rte_v2.prompt.deep.length, rte_v2.train.batch_size) == (5e-3, 128, 32)
    boolq_v2 = superglue_paper.paper("boolq", "ptuning_v2")
    assert (boolq_v2.optimizer.learning_rate, boolq_v2.prompt.deep.length) == (7e-3, 8)
    assert superglue_paper.paper("sst2", "lester").task.eval_splits == ("dev",)
    for config in (full, few, rte_v2, boolq_v2, superglue_paper.get_config("copa,manual,fewshot")):
        validate(config, 1)


def test_sweep_configs_seeds_grid_and_variants(data_dir):
    few = superglue_fewshot.get_config("rte")
    assert few.mode == "sweep" and len(few.sweep.seeds) >= 3
    assert {v.split(":")[0] for v in few.sweep.variants} >= {"manual_zero_shot", "ptuning"}
    grid = superglue_grid.get_config("rte,ptuning_v2")
    keys = {entry.split("=")[0] for entry in grid.sweep.grid}
    assert keys == {"optimizer.learning_rate", "prompt.deep.length", "train.batch_size"}
    assert superglue_grid.get_config("cb,ptuning").sweep.grid[0] == "optimizer.learning_rate=(1e-05, 2e-05, 3e-05)"
    compare = superglue_minilm_compare.get_config("rte")
    methods = {v.split(":")[1].split(";")[0].split("=")[1] for v in compare.sweep.variants}
    assert methods == {"fine_tune", "lester", "ptuning_v2"}
    for config in (few, grid, compare):
        validate(config, 1)


@pytest.mark.parametrize("kind", ["masked_lm", "causal_lm"])
def test_rte_patterns_of_table_6_render_with_their_label_words(kind, tokenizers, examples):
    """PET's multi-pattern protocol: each RTE prompt of the P-tuning paper's Table 6 is a sweep
    variant (template and label words) whose pattern renders the example and scores its words."""
    from ptjax.configs import superglue_pet_patterns
    from ptjax.formulations.patterns import MANUAL_PATTERNS
    from ptjax.sweep import parse_variant, set_key

    config = superglue_pet_patterns.get_config("rte")
    assert config.sweep.over_variants and len(config.sweep.variants) == 4
    renderer = Renderer(tokenizers[kind], kind, 128)
    example = examples["rte"][0]
    for entry in config.sweep.variants:
        name, overrides = parse_variant(entry, "test")
        derived = config.copy_and_resolve_references()
        for key, value in overrides:
            set_key(derived, key, value, "test")
        assert derived.method.train_backbone and derived.mode == "train"
        template = parse_template(derived.prompt.template)
        assert (derived.prompt.template, tuple(derived.head.verbalizer)) == MANUAL_PATTERNS["rte"][name]
        rendered = renderer(template.until_target() if kind == "causal_lm" else template, example.fields)
        decoded = tokenizers[kind].decode(rendered.input_ids)
        check_fields_appear("rte", template, example.fields, decoded)
        words = dict(zip(get_task("rte").labels, derived.head.verbalizer))
        verbalizer = build_verbalizer(words, tokenizers[kind], kind, follows_space=template.target_follows_space)
        assert verbalizer.token_ids.shape[0] == 2
