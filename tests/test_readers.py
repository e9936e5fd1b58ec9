"""File readers: each format on small files written here, every malformed line as file:line."""

import re

import pytest

from ptjax.data.readers import (find_file, get_field, parse_tree, read_conll, read_json, read_jsonl,
                                read_labeled_lines, read_table, read_trees)
from ptjax.errors import InputError


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def raises(message):
    """pytest.raises for an InputError with exactly this message."""
    return pytest.raises(InputError, match="^" + re.escape(message) + "$")


# ---------------------------------------------------------------------------------- json


def test_jsonl_yields_line_numbers_and_skips_blank_lines(tmp_path):
    path = write(tmp_path, "train.jsonl", '{"a": 1}\n\n{"a": 2}\r\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_jsonl_invalid_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "train.jsonl", '{"a": 1}\n{"a": 1 "b": 2}\n')
    with raises(f"{path}:2: invalid JSON (Expecting ',' delimiter at column 9)"):
        list(read_jsonl(path))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path, "train.jsonl", '{"a": 1}\n[1, 2]\n')
    with raises(f"{path}:2: expected a JSON object, found an array"):
        list(read_jsonl(path))


def test_missing_file_says_which_path(tmp_path):
    path = tmp_path / "nowhere" / "train.jsonl"
    with raises(f"{path}: file not found"):
        list(read_jsonl(path))
    with raises(f"{tmp_path}: not a regular file"):
        read_json(tmp_path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", b'{"a": 1}\n{"a": "\xff"}\n', mode="wb")
    with pytest.raises(InputError, match=re.escape(f"{path}:2: not valid UTF-8 text")):
        list(read_jsonl(path))


def test_reading_is_lazy(tmp_path):
    path = write(tmp_path, "train.jsonl", '{"a": 1}\nnot json\n')
    records = read_jsonl(path)
    assert next(records) == (1, {"a": 1})  # the bad line is not read yet
    with pytest.raises(InputError):
        next(records)


def test_json_document_and_its_error_line(tmp_path):
    assert read_json(write(tmp_path, "ok.json", '\ufeff[{"x": 1}]')) == [{"x": 1}]
    path = write(tmp_path, "bad.json", '[\n {"x": 1},\n {"x" 2}\n]')
    with raises(f"{path}:3: invalid JSON (Expecting ':' delimiter at column 7)"):
        read_json(path)


def test_get_field_checks_presence_and_type():
    record = {"label": 3, "flag": True, "text": "x", "none": None}
    assert get_field(record, "text", str, "f:1") == "x"
    assert get_field(record, "label", (str, int), "f:1") == 3
    assert get_field(record, "missing", str, "f:1", required=False, default="d") == "d"
    with raises("f:1: missing field 'question'"):
        get_field(record, "question", str, "f:1")
    with raises("f:1: missing field 'none'"):
        get_field(record, "none", str, "f:1")
    with raises("f:1: field 'label' should be a string, found a number"):
        get_field(record, "label", str, "f:1")
    with raises("f:1: field 'flag' should be an integer, found a boolean"):
        get_field(record, "flag", int, "f:1")


def test_find_file_lists_every_candidate(tmp_path):
    write(tmp_path, "valid.txt", "x\n")
    assert find_file(tmp_path, ["dev.txt", "valid.txt"], "conll03 split 'dev'") == tmp_path / "valid.txt"
    with raises(f"conll03 split 'test': no data file found; looked for {tmp_path / 'test.txt'}, "
                f"{tmp_path / 'conll03' / 'test.txt'}"):
        find_file(tmp_path, ["test.txt", "conll03/test.txt"], "conll03 split 'test'")
    with raises(f"x: data directory {tmp_path / 'no'} does not exist"):
        find_file(tmp_path / "no", ["a"], "x")


# ---------------------------------------------------------------------------------- tables


def test_tsv_with_header_keeps_quotes_literally(tmp_path):
    path = write(tmp_path, "train.tsv", 'sentence\tlabel\nit \'s "fine" \t1\n\nbad , bad\t0\n')
    assert list(read_table(path, header=True)) == [(2, {"sentence": 'it \'s "fine" ', "label": "1"}),
                                                   (4, {"sentence": "bad , bad", "label": "0"})]


def test_tsv_wrong_column_count(tmp_path):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\na\t1\nb\t0\n\nc\t1\textra\n")
    with raises(f"{path}:5: expected 2 columns, found 3"):
        list(read_table(path, header=True))


def test_tsv_without_header_takes_the_count_from_the_first_row(tmp_path):
    path = write(tmp_path, "pairs.tsv", "a\tb\tc\nd\te\tf\ng\th\n")
    rows = read_table(path, header=False)
    assert next(rows) == (1, ["a", "b", "c"])
    assert next(rows) == (2, ["d", "e", "f"])
    with raises(f"{path}:3: expected 3 columns, found 2"):
        next(rows)
    with raises(f"{path}:1: expected 2 columns, found 3"):
        list(read_table(path, header=False, num_columns=2))


def test_csv_quoted_fields_and_header_problems(tmp_path):
    path = write(tmp_path, "train.csv", 'premise,hypothesis,label\n"A, quoted ""one""",b,yes\n')
    assert list(read_table(path, header=True)) == [(2, {"premise": 'A, quoted "one"', "hypothesis": "b",
                                                        "label": "yes"})]
    path = write(tmp_path, "bad.csv", 'premise,hypothesis,label\na,b,yes\n"a"b,c,no\n')
    with pytest.raises(InputError, match=re.escape(f"{path}:3: malformed CSV (")):
        list(read_table(path, header=True))
    path = write(tmp_path, "dup.tsv", "a\ta\n1\t2\n")
    with raises(f"{path}:1: repeated column name 'a' in the header"):
        list(read_table(path, header=True))
    path = write(tmp_path, "empty.tsv", "\n")
    with raises(f"{path}: empty file (a header line was expected)"):
        list(read_table(path, header=True))


# ---------------------------------------------------------------------------------- conll


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


"""


def test_conll_sentences_skip_docstart_and_blank_lines(tmp_path):
    path = write(tmp_path, "train.txt", CONLL)
    sentences = list(read_conll(path, num_columns=4))
    assert [s.line for s in sentences] == [3, 6]
    assert sentences[0].column(0) == ["EU", "rejects"]
    assert sentences[1].column(-1) == ["B-PER", "I-PER"]
    assert len(sentences[1]) == 2 and sentences[1].num_columns == 4


def test_conll_token_line_with_too_few_columns(tmp_path):
    path = write(tmp_path, "valid.txt", CONLL.replace("rejects VBZ B-VP O", "rejects VBZ O"))
    with raises(f"{path}:4: a token line needs 4 columns, found 3"):
        list(read_conll(path, num_columns=4))
    with raises(f"{path}:4: a token line needs 4 columns like the line 3 that starts its sentence, found 3"):
        list(read_conll(path))


def test_conll_comments_tabs_and_last_sentence_without_blank_line(tmp_path):
    path = write(tmp_path, "x.conll", "#begin document (a); part 000\nA\tB c\nD\tE f\n#end document")
    sentences = list(read_conll(path, separator="\t", comment_prefixes=("#begin", "#end")))
    assert [s.rows for s in sentences] == [(("A", "B c"), ("D", "E f"))]
    with raises(f"{path}:2: a token line needs at least 3 columns, found 2"):
        list(read_conll(path, separator="\t", min_columns=3, comment_prefixes=("#",)))


# ---------------------------------------------------------------------------------- trees


def test_parse_sst_tree_with_spaced_leaf_and_ptb_root():
    tree = parse_tree("(3 (2 (2 The) (2 Rock)) (4 (2 2 1\\/2) (3 good)))")
    assert tree.label == "3"
    assert tree.leaves() == ["The", "Rock", "2 1\\/2", "good"]
    assert [t.label for t in tree.subtrees()] == ["3", "2", "2", "2", "4", "2", "3"]
    assert parse_tree("( (S (NP (DT a)) (VP (VBZ is))))").children[0].label == "S"


@pytest.mark.parametrize("text, message", [
    ("(2 (2 a) (2 b)", "unbalanced parentheses: a ')' is missing"),
    ("(2 (2 a)) (2 b)", "unexpected '(' after the end of the tree"),
    ("(2 word (2 b))", "node '2' mixes words 'word' with subtrees"),
    ("(2 )", "node '2' has neither a word nor subtrees"),
    ("2 a)", "a tree must start with '('"),
])
def test_parse_tree_errors(text, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        parse_tree(text)


def test_tree_file_one_per_line_or_spread_over_lines(tmp_path):
    text = "(1 (1 bad) (2 film))\n\n(ROOT\n  (S (NP (NN it))\n     (VP (VBZ works))))\n"
    path = write(tmp_path, "trees.txt", text)
    trees = list(read_trees(path))
    assert [(line, tree.leaves()) for line, tree in trees] == [(1, ["bad", "film"]), (3, ["it", "works"])]
    path = write(tmp_path, "bad.txt", "(1 (1 bad) (2 film))\n(3 (2 a) (2 b)))\n")
    with raises(f"{path}:2: bad tree (unexpected ')' after the end of the tree)"):
        list(read_trees(path))
    path = write(tmp_path, "open.txt", "(1 (1 bad) (2 film))\n(3 (2 a)\n")
    with raises(f"{path}:2: bad tree (unbalanced parentheses: the file ends before the tree is closed)"):
        list(read_trees(path))


# ---------------------------------------------------------------------------------- label ||| text


def test_labeled_lines(tmp_path):
    path = write(tmp_path, "sst5_dev.txt", "3 ||| A fine film .\n\n0 ||| Bad |||  worse .\n")
    assert list(read_labeled_lines(path)) == [(1, "3", "A fine film ."), (3, "0", "Bad |||  worse .")]
    path = write(tmp_path, "bad.txt", "3 ||| ok\n4 | not separated\n")
    with raises(f"{path}:2: expected 'label ||| text', found no '|||'"):
        list(read_labeled_lines(path))
    path = write(tmp_path, "nolabel.txt", " ||| text\n")
    with raises(f"{path}:1: empty label before '|||'"):
        list(read_labeled_lines(path))
