"""Task loaders: counts on the real shared data, every other format on small files written here."""

import json
import logging
import re
from collections import Counter

import pytest

from ptjax.errors import InputError
from ptjax.tasks import collect_labels, get_task, task_names
from ptjax.tasks.lama import load_common_vocabulary, load_relations, split_availability
from ptjax.tasks.srl import SrlColumns, load_srl
from ptjax.tasks.tagging import (CONLL03_LABELS, CONLL04_LABELS, bilou_to_iob2, brackets_to_iob2,
                                 iob1_to_iob2)


def raises(message):
    return pytest.raises(InputError, match="^" + re.escape(message) + "$")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path, records):
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


# ============================================================================ real data


@pytest.mark.parametrize("task, val", [("boolq", 3270), ("cb", 56), ("copa", 100), ("rte", 277),
                                       ("wic", 638), ("wsc", 104)])
def test_fewglue_counts(data_dir, task, val):
    spec = get_task(task)
    assert len(spec.load(data_dir, "train")) == 32
    assert len(spec.load(data_dir, "dev32")) == 32
    examples = spec.load(data_dir, "validation")
    assert len(examples) == val
    assert {e.label for e in examples} <= set(spec.labels)
    assert len({e.guid for e in examples}) == val
    assert all(set(e.fields) == set(spec.fields) for e in examples)


def test_superglue_example_contents(data_dir):
    cb = get_task("cb").load(data_dir, "val")
    assert Counter(e.label for e in cb) == {"contradiction": 28, "entailment": 23, "neutral": 5}
    wsc = get_task("wsc").load(data_dir, "val")[0]
    assert wsc.fields["span2_text"] == "him" and wsc.meta["span2_index"] == 47 and wsc.label == "False"
    copa = get_task("copa").load(data_dir, "train")[0]
    assert copa.fields["question"] == "cause" and copa.label == "0"
    assert copa.meta["where"].endswith("superglue/COPA/train.jsonl:1")
    wic = get_task("wic").load(data_dir, "train")[0]
    assert wic.fields["sentence1"][wic.meta["start1"]:wic.meta["end1"]] == "feel"


def test_multirc_one_example_per_answer_with_question_groups(data_dir):
    examples = get_task("multirc").load(data_dir, "val")
    assert len(examples) == 4848
    assert len({e.meta["question_id"] for e in examples}) == 953
    assert len({e.meta["passage_id"] for e in examples}) == 83
    assert {e.label for e in examples} == {"0", "1"}
    first = [e for e in examples if e.meta["question_id"] == examples[0].meta["question_id"]]
    assert [e.fields["answer"] for e in first][:2] == ["No", "Yes"]


def test_record_entities_and_answers(data_dir):
    examples = get_task("record").load(data_dir, "train")
    assert len({e.meta["passage_id"] for e in examples}) == 32
    first = examples[0]
    assert first.meta["entities"][:3] == ("Hamish Mackay", "Diego Costa", "Kurt Zouma")
    assert first.label == ("Olimpija Ljubljana",)
    assert "@placeholder" in first.fields["query"]
    assert all(set(e.label) <= set(e.meta["entities"]) for e in examples)


def test_full_and_unlabeled_superglue(data_dir):
    assert len(get_task("rte").load(data_dir / "superglue_full", "train")) == 2490
    assert len(get_task("wsc").load(data_dir / "superglue_full", "train")) == 554
    assert len(get_task("rte").load(data_dir / "superglue_full", "val")) == 277
    counts = {"copa": 400, "wsc": 554, "wic": 5428}
    for task, count in counts.items():
        examples = get_task(task).load(data_dir, "unlabeled")
        assert len(examples) == count and all(e.label is None for e in examples)
    multirc = get_task("multirc").load(data_dir, "unlabeled")
    assert len({e.meta["passage_id"] for e in multirc}) == 456


def test_lama_relations_facts_and_missing_splits(data_dir, caplog):
    relations = load_relations(data_dir)
    assert len(relations) == 46 and relations["P19"].template == "[X] was born in [Y] ."
    available = split_availability(data_dir)
    assert sum(bool(s) for s in available.values()) == 40  # 41 T-REx relations, P47 absent here
    assert {r for r, s in available.items() if s and "train" not in s} == {"P190", "P530"}
    assert available["P47"] == ()
    with caplog.at_level(logging.WARNING):
        train = get_task("lama").load(data_dir, "train")
    assert "P190" in caplog.text and "P530" in caplog.text and "P47" in caplog.text
    per_relation = Counter(e.meta["relation"] for e in train)
    assert len(per_relation) == 38 and max(per_relation.values()) <= 800
    dev = get_task("lama").load(data_dir / "lama", "dev", relations=["P17", "P190"])
    assert Counter(e.meta["relation"] for e in dev).keys() == {"P17", "P190"}
    assert max(Counter(e.meta["relation"] for e in dev).values()) <= 200
    fact = get_task("lama").load(data_dir, "train", relations=["P17"])[0]
    assert (fact.fields["sub_label"], fact.label, fact.meta["template"]) == ("Batoshevo", "Bulgaria",
                                                                             "[X] is located in [Y] .")


def test_lama_common_vocabulary_filter(data_dir):
    vocabulary = load_common_vocabulary(data_dir, "29k", "bert-base-cased")
    assert "Romania" in vocabulary and len(vocabulary) > 10000
    everything = get_task("lama").load(data_dir, "dev", relations=["P17", "P36"])
    kept = get_task("lama").load(data_dir, "dev", relations=["P17", "P36"], common_vocab="29k")
    assert 0 < len(kept) < len(everything) and all(e.label in vocabulary for e in kept)
    with pytest.raises(InputError, match="no list for model 'gpt9'"):
        load_common_vocabulary(data_dir, "34k", "gpt9")


def test_sst_trees_text_and_glue(data_dir):
    sst5 = get_task("sst5").load(data_dir, "dev")
    assert len(sst5) == 1101 and {e.label for e in sst5} == set("01234")
    text = get_task("sst5_text").load(data_dir, "dev")
    assert [e.fields["sentence"] for e in text] == [e.fields["sentence"] for e in sst5]
    assert [e.label for e in text] == [e.label for e in sst5]
    assert not any("-LRB-" in e.fields["sentence"] or "\\/" in e.fields["sentence"] for e in sst5)
    assert len(get_task("sst5").load(data_dir, "train")) == 8544
    binary = get_task("sst2_trees").load(data_dir, "dev")
    assert len(binary) == 872 == sum(e.label != "2" for e in sst5)  # GLUE's SST-2 dev size
    glue = get_task("sst2").load(data_dir, "dev")
    assert len(glue) == 872 and {e.label for e in glue} == {"0", "1"}
    assert len(get_task("sst2").load(data_dir, "train")) == 67349


def test_conll03(data_dir):
    train = get_task("conll03").load(data_dir, "train")
    assert len(train) == 14041 and sum(len(e.fields["tokens"]) for e in train) == 203621
    assert train[0].fields["tokens"][:3] == ("EU", "rejects", "German")
    assert train[0].label[:3] == ("B-ORG", "O", "B-MISC")
    assert {t for e in train for t in e.label} == set(CONLL03_LABELS)
    assert len(get_task("conll03").load(data_dir, "dev")) == 3250


def test_conll04_bilou_becomes_iob2(data_dir):
    path = data_dir / "conll04" / "train.json"
    raw = json.loads(path.read_text())
    train = get_task("conll04").load(data_dir, "train")
    assert len(train) == 922 and len(get_task("conll04").load(data_dir, "dev")) == 231
    assert {t for e in train for t in e.label} == set(CONLL04_LABELS)
    raw_entities = sum(t[0] in "BU" for item in raw for t in item["tags"])
    assert sum(t.startswith("B-") for e in train for t in e.label) == raw_entities
    assert train[0].label[4] == "B-Loc" and train[0].label[10:13] == ("B-Org", "I-Org", "I-Org")
    assert train[0].meta["relations"] == ((2, 1, "OrgBased_In"),)


# ============================================================================ tag conversions


def test_bilou_and_bioes_to_iob2():
    assert bilou_to_iob2(["U-Loc", "O", "B-Org", "I-Org", "L-Org", "B-Per", "L-Per", "U-Per"]) == \
        ["B-Loc", "O", "B-Org", "I-Org", "I-Org", "B-Per", "I-Per", "B-Per"]
    assert bilou_to_iob2(["S-X", "B-Y", "E-Y"]) == ["B-X", "B-Y", "I-Y"]
    with raises("item 3: token 1: tag 'O' where I-Org or L-Org must come"):
        bilou_to_iob2(["B-Org", "O"], "item 3")
    with raises("tags: token 0: tag 'L-Org' where O, B-<type> or U-<type> must come"):
        bilou_to_iob2(["L-Org"])
    with raises("tags: token 1: tag 'I-Per' where I-Org or L-Org must come"):
        bilou_to_iob2(["B-Org", "I-Per", "L-Per"])
    with raises("tags: the span Org opened with B- is never closed with L-"):
        bilou_to_iob2(["B-Org", "I-Org"])
    with raises("tags: token 0: tag 'X-Org' is not O or B/I/L/U-<type>"):
        bilou_to_iob2(["X-Org"])


def test_iob1_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    assert iob1_to_iob2(["B-PER", "I-PER"]) == ["B-PER", "I-PER"]


def test_brackets_to_iob2():
    cells = ["(A0*", "*)", "(V*)", "*", "(AM-TMP*", "*", "*AM-TMP)", "(C-A1*)"]
    assert brackets_to_iob2(cells) == ["B-A0", "I-A0", "B-V", "O", "B-AM-TMP", "I-AM-TMP", "I-AM-TMP",
                                       "B-C-A1"]
    with raises("col: token 1: '(A1*' nests spans, which this column may not"):
        brackets_to_iob2(["(A0*", "(A1*", "*)"], "col")
    with raises("col: token 0: '*)' closes a span that was never opened"):
        brackets_to_iob2(["*)"], "col")
    with raises("col: the span A0 is never closed"):
        brackets_to_iob2(["(A0*", "*"], "col")
    with raises("col: token 0: '-' is not a span cell like '(A0*', '*' or '*)'"):
        brackets_to_iob2(["-"], "col")


# ============================================================================ synthetic files


def test_conll03_iob1_file_and_bad_tags(tmp_path):
    path = write(tmp_path / "conll03" / "train.txt",
                 "-DOCSTART- -X- O O\n\nU.N. NNP I-NP I-ORG\nsays VBZ I-VP O\n")
    example = get_task("conll03").load(tmp_path, "train")[0]
    assert example.label == ("B-ORG", "O") and example.meta["where"] == f"{path}:3"
    write(tmp_path / "conll03" / "test.txt", "a b c O\nd e f PER\n")
    with raises(f"{tmp_path / 'conll03' / 'test.txt'}:1: token 1: tag 'PER' is not O, B-<type> or I-<type>"):
        get_task("conll03").load(tmp_path, "test")
    folder = tmp_path / "conll03"
    with raises(f"conll03 split 'dev': no data file found; looked for {folder / 'valid.txt'}, "
                f"{folder / 'valid.conll'}, {folder / 'dev.txt'}, {folder / 'dev.conll'}, "
                f"{folder / 'development.txt'}, {folder / 'development.conll'}"):
        get_task("conll03").load(tmp_path, "validation")


def test_conll04_malformed_item(tmp_path):
    write(tmp_path / "train.json", json.dumps([{"tokens": ["a", "b"], "tags": ["O"], "relations": []}]))
    with raises(f"{tmp_path / 'train.json'}: item 0: 1 tags for 2 tokens"):
        get_task("conll04").load(tmp_path, "train")


ONTONOTES_2012 = """#begin document (nw/wsj/00/wsj_0001); part 000
nw/wsj/00/wsj_0001   0   0   Pierre   NNP  (TOP(S(NP*   -  -  -  -  (PERSON*   (ARG0*   (0
nw/wsj/00/wsj_0001   0   1   Vinken   NNP  *)           -  -  -  -  *)         *)       0)
nw/wsj/00/wsj_0001   0   2   joined   VBD  (VP*         join 01 1 -  *   (V*)     -
nw/wsj/00/wsj_0001   0   3   Nov.     NNP  (NP*         -  -  -  -  (DATE*     (ARGM-TMP*  -
nw/wsj/00/wsj_0001   0   4   29       CD   *)))         -  -  -  -  *)         *)       -

#end document
"""


def test_ontonotes_conll2012_folder_and_simple_columns(tmp_path):
    write(tmp_path / "ontonotes" / "train" / "nw" / "wsj_0001.gold_conll", ONTONOTES_2012)
    examples = get_task("ontonotes").load(tmp_path, "train")
    assert examples[0].fields["tokens"] == ("Pierre", "Vinken", "joined", "Nov.", "29")
    assert examples[0].label == ("B-PERSON", "I-PERSON", "O", "B-DATE", "I-DATE")
    write(tmp_path / "ontonotes" / "dev.txt", "Paris\tNNP\tB-GPE\nis\tVBZ\tO\n\nNew\tB-ORG\nYork\tI-ORG\n")
    examples = get_task("ontonotes").load(tmp_path, "dev")
    assert [e.label for e in examples] == [("B-GPE", "O"), ("B-ORG", "I-ORG")]


def test_srl_conll12_one_example_per_predicate(tmp_path):
    write(tmp_path / "conll12" / "train.gold_conll", ONTONOTES_2012)
    (example,) = get_task("srl_conll12").load(tmp_path, "train")
    assert example.fields["predicate"] == "joined" and example.meta["predicate_index"] == 2
    assert example.label == ("B-ARG0", "I-ARG0", "B-V", "B-ARGM-TMP", "I-ARGM-TMP")


CONLL05 = """The   -     (A1*    (A0*
cat   -     *)      *)
sat   sit   (V*)    *
and   -     *       *
purred purr *       (V*)
.     -     *       *

No    -
verbs -
"""


def test_srl_conll05_predicates_and_labels(tmp_path):
    write(tmp_path / "conll05" / "dev.txt", CONLL05)
    examples = get_task("srl_conll05").load(tmp_path, "dev")
    predicates = [(e.fields["predicate"], e.meta["predicate_index"]) for e in examples]
    assert predicates == [("sat", 2), ("purred", 4)]
    assert examples[0].label == ("B-A1", "I-A1", "B-V", "O", "O", "O")
    assert examples[1].label == ("B-A0", "I-A0", "O", "O", "B-V", "O")
    assert collect_labels(examples) == ("O", "B-A0", "I-A0", "B-A1", "I-A1", "B-V")
    path = write(tmp_path / "bad" / "dev.txt", CONLL05.replace("sat   sit ", "sat   -   "))
    with raises(f"{path}:1: 1 predicates marked in column 1 but 2 argument columns"):
        load_srl(tmp_path / "bad", "dev")
    path = write(tmp_path / "bad2" / "dev.txt", "a -  *\nb go *\n")
    with raises(f"{path}:1: column 2: expected one (V*) predicate span, found 0"):
        load_srl(tmp_path / "bad2", "dev")
    path = write(tmp_path / "custom" / "test.txt", "x (V*)\ny *\n")
    assert load_srl(tmp_path / "custom", "test", SrlColumns(word=0, first_arg=1))[0].label == ("B-V", "O")


def squad_document(qas, context="The Eiffel Tower is in Paris. Paris is the capital."):
    return {"version": "v2.0", "data": [{"title": "Paris", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_squad_v1_and_v2_files(tmp_path):
    write(tmp_path / "squad" / "dev-v1.1.json", json.dumps(squad_document([
        {"id": "q1", "question": "Where is the tower?",
         "answers": [{"text": "Paris", "answer_start": 23}, {"text": "in Paris", "answer_start": 20}]}])))
    (example,) = get_task("squad").load(tmp_path, "dev")
    assert example.guid == "q1" and example.label == ("Paris", "in Paris")
    assert example.meta["answers"] == (("Paris", 23), ("in Paris", 20)) and not example.meta["is_impossible"]
    write(tmp_path / "squad" / "dev-v2.0.json", json.dumps(squad_document([
        {"id": "a", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 33}],
         "is_impossible": False},
        {"id": "b", "question": "Capital of Mars?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Paris", "answer_start": 23}]}])))
    answerable, impossible = get_task("squad_v2").load(tmp_path, "validation")
    assert answerable.meta["answers"] == (("Paris", 30),)  # offset 33 is off by three: moved to the nearest
    assert impossible.label == () and impossible.meta["is_impossible"]


def test_squad_malformed(tmp_path):
    path = write(tmp_path / "train.json", json.dumps(squad_document([
        {"id": "q", "question": "?", "answers": [{"text": "Rome", "answer_start": 0}]}])))
    with raises(f"{path}: data[0].paragraphs[0].qas[0].answers[0]: "
                f"answer 'Rome' does not occur in the context"):
        get_task("squad").load(tmp_path, "train")
    write(path, json.dumps(squad_document([{"id": "q", "question": "?", "answers": []},
                                           {"id": "q", "question": "?", "answers": []}])))
    with raises(f"{path}: data[0].paragraphs[0].qas[1]: question id 'q' repeats "
                f"{path}: data[0].paragraphs[0].qas[0]"):
        get_task("squad").load(tmp_path, "train")
    write(path, json.dumps(squad_document([{"question": "?", "answers": []}])))
    with raises(f"{path}: data[0].paragraphs[0].qas[0]: missing field 'id'"):
        get_task("squad").load(tmp_path, "train")


def test_mnli_style_pairs_tsv_jsonl_and_user_task(tmp_path):
    write(tmp_path / "MNLI" / "train.tsv",
          "index\tsentence1\tsentence2\tgold_label\n0\tA man sleeps.\tA person rests.\tentailment\n"
          "1\tA.\tB.\t-\n2\tIt rains.\tIt is dry.\tcontradiction\n")
    examples = get_task("mnli").load(tmp_path, "train")
    assert [(e.fields["premise"], e.label) for e in examples] == [("A man sleeps.", "entailment"),
                                                                  ("It rains.", "contradiction")]
    write_jsonl(tmp_path / "MNLI" / "dev_matched.jsonl",
                [{"premise": "p", "hypothesis": "h", "label": "neutral"}])
    assert get_task("mnli").load(tmp_path, "validation")[0].label == "neutral"
    path = write(tmp_path / "MNLI" / "test.tsv", "premise\thypothesis\tlabel\np\th\tmaybe\n")
    with raises(f"{path}:2: label 'maybe' is not one of entailment, neutral, contradiction"):
        get_task("mnli").load(tmp_path, "test")
    from ptjax.tasks.glue import sentence_pair_task
    spec = sentence_pair_task("paraphrase_test", labels=("no", "yes"))
    write(tmp_path / "paraphrase_test" / "train.csv", 'text_a,text_b,label\n"a, b",c,yes\n')
    assert spec.load(tmp_path, "train")[0].fields == {"premise": "a, b", "hypothesis": "c"}
    path = write_jsonl(tmp_path / "paraphrase_test" / "test.jsonl",
                       [{"premise": "p", "hypothesis": "h"},
                        {"premise": "p", "hypothesis": "h", "label": "no"}])
    with raises(f"{path}:1: missing label (other rows of this file have one)"):
        spec.load(tmp_path, "test")


def test_superglue_malformed_lines(tmp_path):
    path = write_jsonl(tmp_path / "RTE" / "train.jsonl", [
        {"premise": "p", "hypothesis": "h", "label": "entailment", "idx": 0},
        {"premise": "p", "label": "entailment", "idx": 1}])
    with raises(f"{path}:2: missing field 'hypothesis'"):
        get_task("rte").load(tmp_path, "train")
    write_jsonl(path, [{"premise": "p", "hypothesis": "h", "label": "yes", "idx": 0}])
    with raises(f"{path}:1: label 'yes' is not one of entailment, not_entailment"):
        get_task("rte").load(tmp_path, "train")
    write(path, '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n{"premise": "p",\n')
    with raises(f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes at column 17)"):
        get_task("rte").load(tmp_path, "train")
    with raises(f"rte split 'val': no data file found; looked for {tmp_path / 'RTE' / 'val.jsonl'}, "
                f"{tmp_path / 'superglue' / 'RTE' / 'val.jsonl'}"):
        get_task("rte").load(tmp_path, "dev")
    path = write_jsonl(tmp_path / "ReCoRD" / "train.jsonl", [
        {"idx": 0, "passage": {"text": "Ann met Bob.", "entities": [{"start": 0, "end": 2}]},
         "qas": [{"idx": 0, "query": "@placeholder met Bob.",
                  "answers": [{"start": 0, "end": 2, "text": "Bob"}]}]}])
    with raises(f"{path}:1: query 0: answer 0: span 0..2 reads 'Ann', not 'Bob'"):
        get_task("record").load(tmp_path, "train")


def test_registry_errors(tmp_path):
    assert {"rte", "conll03", "lama", "squad_v2", "srl_conll05", "mnli"} <= set(task_names())
    with pytest.raises(InputError, match="unknown task 'nope' \\(known: .*rte"):
        get_task("nope")
    with raises("task rte has no option 'relations' (options: none)"):
        get_task("rte").load(tmp_path, "train", relations=["P17"])
    with raises(f"data directory {tmp_path / 'missing'} does not exist"):
        get_task("conll04").load(tmp_path / "missing", "train")


def test_lama_layout_written_here(tmp_path, caplog):
    write_jsonl(tmp_path / "relations.jsonl", [{"relation": "P36", "template": "The capital of [X] is [Y] ."},
                                               {"relation": "P30", "template": "[X] is in [Y] ."}])
    write_jsonl(tmp_path / "fact-retrieval" / "P36" / "train.jsonl",
                [{"sub_label": "France", "obj_label": "Paris"}])
    with caplog.at_level(logging.WARNING):
        (fact,) = get_task("lama").load(tmp_path, "train")
    assert "P30" in caplog.text and fact.meta["relation"] == "P36" and fact.label == "Paris"
    with raises(f"lama: no facts for split 'dev' under {tmp_path / 'fact-retrieval'}"):
        get_task("lama").load(tmp_path, "dev")
    with raises(f"lama: relation(s) P999 not in {tmp_path / 'relations.jsonl'}"):
        get_task("lama").load(tmp_path, "train", relations=["P999"])
    write_jsonl(tmp_path / "relations.jsonl", [{"relation": "P36", "template": "The capital of [X] is ."}])
    with raises(f"{tmp_path / 'relations.jsonl'}:1: "
                f"template 'The capital of [X] is .' needs both [X] and [Y]"):
        get_task("lama").load(tmp_path, "train")
