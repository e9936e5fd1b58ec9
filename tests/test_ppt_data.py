"""PPT pre-training data: sentence splitting, corpora (text, jsonl, HF datasets, TFDS), host
sharding, streaming, the four builders' labels and patterns, the jsonl store, registered tasks."""

import collections
import itertools
import json
import re
import struct
import sys
import tempfile

import numpy as np
import pytest

from ptjax.errors import InputError
from ptjax.tasks.pretraining import (BUILDERS, HFDataset, JsonlFiles, NextSentencePairs,
                                     PseudoLabelledSentences, SentencedDocument, SentenceSelection, Shard,
                                     TextFiles, TFDSDataset, UnifiedChoice, open_corpus, read_examples,
                                     read_header, sentence_documents, split_sentences, stream_examples,
                                     write_examples)

# Five hand-made documents; every sentence is unique, so a sentence's text says where it came from.
DOCUMENTS = [
    ["The river rose after three days of rain.", "Farmers moved their cattle to higher fields.",
     "By Friday the bridge was closed to traffic.", "Engineers inspected the pillars on Saturday.",
     "The bridge reopened the following week."],
    ["Anna started learning the violin at seven.", "Her teacher lived across the street.",
     "Lessons took place every Tuesday evening.", "She played her first concert at twelve.",
     "The audience asked for two encores.", "Today she teaches children herself."],
    ["The bakery opens before sunrise each day.", "Its rye bread sells out by nine.",
     "The owner uses a recipe from her grandmother.", "Tourists often queue outside the door."],
    ["Mars has two small moons.", "Phobos orbits closer than Deimos does.",
     "Both moons are probably captured asteroids.", "Phobos will break apart in millions of years.",
     "Deimos slowly drifts away from the planet.", "Neither moon is round like ours.",
     "Astronomers discovered them in 1877."],
    ["The old library moved to a new building.", "Volunteers carried boxes of books for weeks.",
     "A cafe now fills the former reading room.", "Visitors like the large windows upstairs.",
     "The children's section doubled in size."],
]
WHERE = {sentence: (d, i) for d, doc in enumerate(DOCUMENTS) for i, sentence in enumerate(doc)}


def sentenced(documents=DOCUMENTS):
    return [SentencedDocument(f"doc{d}", tuple(doc)) for d, doc in enumerate(documents)]


def synthetic_documents(count, sentences=12, words=8, seed=0):
    """Longer generated corpora for statistics: unique sentences 'dN sM w w w ...'."""
    rng = np.random.default_rng(seed)
    vocabulary = "alpha beta gamma delta river stone cloud paper window garden silver".split()
    return [SentencedDocument(f"doc{d}", tuple(
        f"d{d} s{s} " + " ".join(rng.choice(vocabulary, size=int(rng.integers(words // 2, words * 2)))) + "."
        for s in range(sentences))) for d in range(count)]


# ---------------------------------------------------------------------------------------------
# Sentence splitting.

@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith paid $3.50 for tea. He left.", ["Mr. Smith paid $3.50 for tea.", "He left."]),
    ("Use a fruit, e.g. an apple. Or not.", ["Use a fruit, e.g. an apple.", "Or not."]),
    ("Pi is about 3.14159. It is irrational.", ["Pi is about 3.14159.", "It is irrational."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ('"Really?" she asked. Yes!', ['"Really?" she asked.', "Yes!"]),
    ("J. K. Rowling wrote it. Dr. Who? Yes.", ["J. K. Rowling wrote it.", "Dr. Who?", "Yes."]),
    ("See No. 5 first. We sell nuts, etc. Then tea.", ["See No. 5 first.", "We sell nuts, etc.", "Then tea."]),
    ("Wait... Go now!! Done?! Ok, and done?! yes", ["Wait...", "Go now!!", "Done?!", "Ok, and done?! yes"]),
    ("First paragraph\n\nsecond one", ["First paragraph", "second one"]),
    ("Call ptjax.tasks at 5 p.m. today.", ["Call ptjax.tasks at 5 p.m. today."]),
    ("  \n ", []),
])
def test_sentence_splitter(text, expected):
    assert split_sentences(text) == expected


# ---------------------------------------------------------------------------------------------
# Builders: labels and patterns on the hand-made corpus.

def test_next_sentence_pairs_labels_by_construction():
    builder = NextSentencePairs(seed=3)
    assert builder.pattern == "{s1} [MASK]. {s2}"
    assert builder.verbalizer == {"0": "no", "1": "maybe", "2": "yes"}
    examples = list(builder.build(sentenced()))
    # one example per sentence that has a next sentence
    assert len(examples) == sum(len(doc) - 1 for doc in DOCUMENTS)
    for example in examples:
        (d1, i1), (d2, i2) = WHERE[example.fields["s1"]], WHERE[example.fields["s2"]]
        expected = "2" if (d1 == d2 and i2 == i1 + 1) else "1" if d1 == d2 else "0"
        assert example.label == expected, example
        if example.label == "1":
            assert abs(i2 - i1) > 1  # not adjacent in either order
    counts = collections.Counter(e.label for e in examples)
    assert set(counts) == {"0", "1", "2"} and max(counts.values()) - min(counts.values()) <= 1


def test_sentence_selection_true_next_under_its_letter():
    builder = SentenceSelection(seed=1)
    assert builder.verbalizer == {letter: letter for letter in "ABCDEF"}
    examples = list(builder.build(sentenced()))
    assert len(examples) > 15
    for example in examples:
        dq, iq = WHERE[example.fields["query"]]
        choices = example.fields["choices"]
        assert len(choices) == 6 and len(set(choices)) == 6
        assert [example.fields[letter] for letter in "abcdef"] == list(choices)
        answer = "ABCDEF".index(example.label)
        assert WHERE[choices[answer]] == (dq, iq + 1)
        others = [WHERE[c] for k, c in enumerate(choices) if k != answer]
        same = [i for d, i in others if d == dq]
        assert len(same) == 1 and abs(same[0] - iq) > 1
        assert sum(d != dq for d, _ in others) == 4
    assert len({e.label for e in examples}) >= 4  # the answer's position is shuffled


def test_unified_choice_option_counts_and_lengths():
    builder = UnifiedChoice(seed=0, max_words=200)
    assert (builder.option_words(2), builder.option_words(16)) == (50, 20)
    long_docs = synthetic_documents(40, sentences=10, words=40)
    examples = list(itertools.islice(builder.build(long_docs), 400))
    counts = collections.Counter(e.meta["num_options"] for e in examples)
    assert min(counts) == 2 and max(counts) == 16 and len(counts) == 15
    originals = {s: (doc.where, i) for doc in long_docs for i, s in enumerate(doc.sentences)}
    truncated = 0
    for example in examples:
        choices, n = example.fields["choices"], example.meta["num_options"]
        assert len(choices) == n and example.label in builder.labels[:n]
        assert all(len(c.split()) <= builder.option_words(n) for c in choices)
        query_where, query_index = originals[example.fields["query"]]
        true_next = [s for s, (w, i) in originals.items() if w == query_where and i == query_index + 1][0]
        answer = choices[builder.labels.index(example.label)]
        assert true_next.startswith(answer)
        truncated += answer != true_next
        assert example.fields["options"].startswith(f"A. {choices[0]} B. {choices[1]}")
    assert truncated > 0


def fake_sentiment(sentences):
    """Class k with probability 0.9 when the sentence holds the word of class k; else uniform-ish."""
    words = ["flood", "cattle", "bridge", "violin", "bakery"]
    out = np.full((len(sentences), 5), 0.2)
    for row, sentence in enumerate(sentences):
        for k, word in enumerate(words):
            if word in sentence.lower():
                out[row] = 0.025
                out[row, k] = 0.9
    return out


def test_pseudo_labels_filtering_and_balance():
    documents = sentenced([["The flood came.", "Moving the cattle was hard.", "An ordinary sentence here.",
                            "The bridge held.", "A violin played.", "The bakery smelled good."]] * 3)
    builder = PseudoLabelledSentences(fake_sentiment, batch_size=4)
    assert builder.verbalizer == {"0": "terrible", "1": "bad", "2": "maybe", "3": "good", "4": "great"}
    examples = list(builder.build(documents))
    assert len(examples) == 15 and all(e.fields["sentence"] != "An ordinary sentence here." for e in examples)
    assert collections.Counter(e.label for e in examples) == {label: 3 for label in "01234"}
    for example in examples:
        assert fake_sentiment([example.fields["sentence"]])[0].argmax() == int(example.label)
    # skewed input: balance keeps rounds of one per class, balance=False keeps every confident one
    skewed = sentenced([["The flood came.", "Floods again.", "Flood warnings.", "A violin played.",
                         "The bakery opened.", "Cattle grazed.", "The bridge held."]])
    assert collections.Counter(e.label for e in PseudoLabelledSentences(fake_sentiment, min_words=2).build(skewed)) \
        == {label: 1 for label in "01234"}
    unbalanced = list(PseudoLabelledSentences(fake_sentiment, balance=False, min_words=2).build(skewed))
    assert [e.label for e in unbalanced] == ["0", "0", "0", "3", "4", "1", "2"]
    strict = PseudoLabelledSentences(fake_sentiment, balance=False, min_words=2, threshold={"0": 0.95})
    assert [e.label for e in strict.build(skewed)] == ["3", "4", "1", "2"]


def length_sentiment(sentences):
    """Confident, varied fake labels: class = number of characters modulo 5."""
    out = np.full((len(sentences), 5), 0.025)
    out[np.arange(len(sentences)), [len(s) % 5 for s in sentences]] = 0.9
    return out


def test_pseudo_labels_reject_bad_classifier_output():
    documents = sentenced()
    with pytest.raises(InputError, match="probabilities"):
        list(PseudoLabelledSentences(lambda s: np.ones((len(s), 5)) * 3.0).build(documents))
    with pytest.raises(InputError, match="shape"):
        list(PseudoLabelledSentences(lambda s: np.ones((len(s), 3)) / 3).build(documents))


def test_patterns_render_with_a_real_tokenizer():
    import tiny_models
    from ptjax.prompts.rendering import Renderer
    from ptjax.prompts.templates import parse_template
    from ptjax.prompts.verbalizers import build_verbalizer

    tokenizer = tiny_models.make_tokenizer("t5")
    renderer = Renderer(tokenizer, "seq2seq", 256)
    builders = [NextSentencePairs(), SentenceSelection(), UnifiedChoice(),
                PseudoLabelledSentences(fake_sentiment, threshold=0.0)]
    for builder in builders:
        template = parse_template(builder.pattern)
        assert set(template.field_names) <= set(builder.fields) and template.has_target
        assert tuple(builder.verbalizer) == builder.labels
        example = next(iter(builder.build(sentenced())))
        rendered = renderer(template, example.fields)
        text = tokenizer.decode(rendered.input_ids)
        assert "<extra_id_0>" in text and rendered.num_truncated_tokens == 0
        verbalizer = build_verbalizer(builder.verbalizer, tokenizer, "seq2seq",
                                      follows_space=template.target_follows_space)
        assert verbalizer.num_labels == len(builder.labels)
    nss = tokenizer.decode(renderer(SentenceSelection.pattern, next(iter(builders[1].build(sentenced())))
                                    .fields).input_ids)
    assert re.search(r"^[^?]+\? A\. .+ B\. .+ F\. [^.]+\. Answer is ?<extra_id_0>", nss), nss


# ---------------------------------------------------------------------------------------------
# Determinism, streaming, sharding.

@pytest.mark.parametrize("make", [NextSentencePairs, SentenceSelection, UnifiedChoice,
                                  lambda seed: PseudoLabelledSentences(length_sentiment, seed=seed)])
def test_same_seed_same_output(make):
    documents = synthetic_documents(12)
    first = list(make(seed=5).build(documents))
    assert first and first == list(make(seed=5).build(iter(documents)))
    assert first != list(make(seed=6).build(documents))


def test_builders_stream_with_bounded_look_ahead():
    consumed = 0

    def endless():
        nonlocal consumed
        for number in itertools.count():
            consumed += 1
            if consumed > 1000:
                raise AssertionError("the builder tried to read the whole corpus")
            yield SentencedDocument(f"doc{number}", tuple(f"Document {number} has sentence {i} here."
                                                          for i in range(6)))

    for builder in (NextSentencePairs(lookahead=2), SentenceSelection(lookahead=2), UnifiedChoice(lookahead=2)):
        consumed = 0
        assert len(list(itertools.islice(builder.build(endless()), 12))) == 12
        assert consumed <= 2 + 3 + 2  # 12 examples need ~3 documents of 5 anchors, plus the look-ahead
    consumed = 0
    builder = PseudoLabelledSentences(fake_sentiment, threshold=0.0, balance=False, batch_size=8)
    assert len(list(itertools.islice(builder.build(endless()), 10))) == 10
    assert consumed <= 3


def write_text(path, documents, separator="\n"):
    path.write_text(separator.join(" ".join(doc) for doc in documents) + "\n", encoding="utf-8")
    return path


def assert_partition(source, count, expected):
    shares = [[d.text for d in source.documents(Shard(i, count))] for i in range(count)]
    union = [text for share in shares for text in share]
    assert sorted(union) == sorted(expected) and len(union) == len(set(union))
    assert shares == [[d.text for d in source.documents(Shard(i, count))] for i in range(count)]
    return shares


def test_text_and_jsonl_sources_shard_disjoint_and_complete(tmp_path):
    texts = [" ".join(doc) for doc in DOCUMENTS]
    one = write_text(tmp_path / "one.txt", DOCUMENTS)
    for count in (1, 2, 3, 5, 7):
        assert_partition(TextFiles(one), count, texts)  # one file: every count-th document
    parts = [write_text(tmp_path / f"part{k}.txt", DOCUMENTS[k::3]) for k in range(3)]
    shares = assert_partition(TextFiles(parts), 2, texts)  # whole files per host
    assert shares[0] == [" ".join(doc) for doc in DOCUMENTS[0::3] + DOCUMENTS[2::3]]
    assert_partition(TextFiles(str(tmp_path / "part*.txt")), 4, texts)  # more hosts than files
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n".join("\n".join(doc) for doc in DOCUMENTS) + "\n", encoding="utf-8")
    documents = list(sentence_documents(TextFiles(blank, separator="blank_line"), sentence_per_line=True))
    assert [list(d.sentences) for d in documents] == DOCUMENTS and documents[1].where == f"{blank}:7"
    split = list(sentence_documents(TextFiles(one)))
    assert [list(d.sentences) for d in split] == DOCUMENTS
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in enumerate(texts)))
    assert_partition(JsonlFiles(jsonl), 2, texts)
    nested = tmp_path / "nested.jsonl"  # MultiRC keeps its text in passage.text
    nested.write_text("".join(json.dumps({"passage": {"text": t}}) + "\n" for t in texts))
    assert [d.text for d in JsonlFiles(nested, field="passage.text").documents()] == texts
    with pytest.raises(InputError, match=rf"{nested}:1: missing field 'passage.body'"):
        list(JsonlFiles(nested, field="passage.body").documents())


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": " ".join(doc)}) for doc in DOCUMENTS]
    lines.insert(3, '{"text": "broken')
    path.write_text("\n".join(lines) + "\n")
    documents = JsonlFiles(path).documents()
    assert [d.where for d in itertools.islice(documents, 3)] == [f"{path}:{n}" for n in (1, 2, 3)]  # lazy
    with pytest.raises(InputError, match=rf"{path}:4: invalid JSON"):
        list(JsonlFiles(path).documents())
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(InputError, match=rf"{path}:1: missing field 'text'"):
        list(JsonlFiles(path).documents())
    with pytest.raises(InputError, match="corpus file not found"):
        TextFiles(tmp_path / "missing.txt")


def test_jsonl_store_round_trip(tmp_path):
    examples = list(SentenceSelection(seed=2).build(sentenced()))
    path = tmp_path / "built" / "nss.jsonl"
    header = {"task": "ppt_nss", "seed": 2}
    assert write_examples(path, iter(examples), limit=10, header=header) == 10
    assert read_header(path) == header
    assert list(read_examples(path)) == examples[:10]
    assert isinstance(examples[0].fields["choices"], tuple)
    assert [p.name for p in path.parent.iterdir()] == ["nss.jsonl"]
    path.write_text(path.read_text() + '{"fields": {}}\n')
    with pytest.raises(InputError, match=rf"{path}:12: missing field 'guid'"):
        list(read_examples(path))


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets and TensorFlow Datasets.

def test_hf_datasets_source(tmp_path):
    import datasets

    texts = [" ".join(doc) for doc in DOCUMENTS]
    table = datasets.Dataset.from_dict({"body": texts, "n": list(range(len(texts)))})
    shares = assert_partition(HFDataset(table, field="body"), 2, texts)
    assert shares[0] == texts[:3]  # contiguous rows per host
    assert_partition(HFDataset(table.to_iterable_dataset(num_shards=2), field="body"), 2, texts)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    streamed = open_corpus("hf", paths=["docs.jsonl"], root=tmp_path)
    assert [d.text for d in streamed.documents()] == texts
    assert_partition(streamed, 3, texts)
    with pytest.raises(InputError, match="no column 'text'"):
        list(HFDataset(table).documents())
    from_hf = NextSentencePairs(seed=0).build(sentence_documents(HFDataset(table, field="body")))
    from_lists = NextSentencePairs(seed=0).build(sentenced())
    assert [(e.fields, e.label) for e in from_hf] == [(e.fields, e.label) for e in from_lists]


_TFDS_BUILDER = None


def tiny_tfds_builder(tmp_path, monkeypatch):
    """A TFDS builder of the five documents, defined once (TFDS registers builder classes by name).
    A builder of data not yet prepared leaves an empty `tempfile.mkdtemp` folder behind
    (DatasetInfo.initialize_from_bucket), so the test's temporary files go under tmp_path."""
    global _TFDS_BUILDER
    tfds = pytest.importorskip("tensorflow_datasets")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    if _TFDS_BUILDER is None:
        class PptTinyCorpus(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                    {"text": tfds.features.Text(), "number": np.int64}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples()}

            def _generate_examples(self):
                for number, doc in enumerate(DOCUMENTS):
                    yield number, {"text": " ".join(doc), "number": number}

        _TFDS_BUILDER = PptTinyCorpus
    return tfds, _TFDS_BUILDER


def test_tfds_array_record_without_tensorflow(tmp_path, monkeypatch):
    tfds, builder_class = tiny_tfds_builder(tmp_path, monkeypatch)
    builder = builder_class(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    texts = [" ".join(doc) for doc in DOCUMENTS]
    source = TFDSDataset("ppt_tiny_corpus", data_dir=str(tmp_path))
    assert sorted(d.text for d in source.documents()) == sorted(texts)
    for count in (2, 3):
        assert_partition(source, count, texts)
    assert_partition(TFDSDataset(str(builder.data_dir)), 2, texts)  # a prepared folder
    sliced = TFDSDataset("ppt_tiny_corpus", data_dir=str(tmp_path), split="train[:60%]")
    assert_partition(sliced, 2, [d.text for d in sliced.documents()])
    assert len(list(sliced.documents())) == 3
    assert "tensorflow" not in sys.modules
    with pytest.raises(InputError, match="no feature 'body'"):
        list(TFDSDataset("ppt_tiny_corpus", data_dir=str(tmp_path), field="body").documents())
    with pytest.raises(InputError, match="not found|not prepared"):
        list(TFDSDataset("ppt_tiny_corpus_missing", data_dir=str(tmp_path)).documents())


def test_tfds_tfrecord_read_without_tensorflow(tmp_path, monkeypatch):
    """TFRecord is the TFDS default (public C4). Writing one needs TensorFlow, so the test writes
    the record framing itself; reading is what ptjax does without TensorFlow."""
    tfds, builder_class = tiny_tfds_builder(tmp_path, monkeypatch)

    def write_examples_without_tf(cls, path, iterator):
        with open(path, "wb") as handle:
            for _, data in iterator:
                handle.write(struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4)

    monkeypatch.setattr(tfds.core.file_adapters.TfRecordFileAdapter, "write_examples",
                        classmethod(write_examples_without_tf))
    builder = builder_class(data_dir=str(tmp_path), file_format="tfrecord")
    builder.download_and_prepare()
    texts = [" ".join(doc) for doc in DOCUMENTS]
    source = TFDSDataset("ppt_tiny_corpus", data_dir=str(tmp_path))
    assert sorted(d.text for d in source.documents()) == sorted(texts)
    for count in (1, 2, 3):
        assert_partition(source, count, texts)
    assert "tensorflow" not in sys.modules
    record_file = next(builder.data_path.glob("*.tfrecord*"))
    record_file.write_bytes(record_file.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated TFRecord"):
        list(source.documents())


# ---------------------------------------------------------------------------------------------
# Registered tasks.

def fake_classifier_for_tasks(sentences):
    return fake_sentiment(sentences)


def test_registered_tasks_load_a_described_corpus(tmp_path):
    from ptjax.tasks import get_task

    write_text(tmp_path / "corpus.txt", DOCUMENTS)
    for name, builder in BUILDERS.items():
        spec = get_task(name)
        assert spec.kind == "classification" and spec.labels == builder.labels and spec.splits == ("train", "dev")
    spec = get_task("ppt_nsp")
    options = dict(source="text", paths=["corpus.txt"], dev_every=5, seed=1)
    train, dev = spec.load(tmp_path, "train", **options), spec.load(tmp_path, "validation", **options)
    assert {WHERE[e.fields["s1"]][0] for e in dev} == {4} and 4 not in {WHERE[e.fields["s1"]][0] for e in train}
    assert spec.load(tmp_path, "train", num_examples=5, **options) == train[:5]
    stream = stream_examples("ppt_nsp", tmp_path, "train", **options)
    assert not isinstance(stream, list) and list(stream) == train
    hosts = [spec.load(tmp_path, "train", shard_index=i, shard_count=2, dev_every=0, source="text",
                       paths=["corpus.txt"]) for i in range(2)]
    assert {WHERE[e.fields["s1"]][0] for e in hosts[0]} == {0, 2, 4}
    assert hosts[1][0].guid == "ppt_nsp-train-1-0"
    sentiment = get_task("ppt_sentiment").load(tmp_path, "train", source="text", paths=["corpus.txt"],
                                               classifier="test_ppt_data:fake_classifier_for_tasks",
                                               balance=False, dev_every=0)
    assert [e.fields["sentence"] for e in sentiment] == [
        "Farmers moved their cattle to higher fields.", "By Friday the bridge was closed to traffic.",
        "The bridge reopened the following week.", "Anna started learning the violin at seven.",
        "The bakery opens before sunrise each day."]
    with pytest.raises(InputError, match="classifier"):
        get_task("ppt_sentiment").load(tmp_path, "train", source="text", paths=["corpus.txt"])
    with pytest.raises(InputError, match="no option 'colour'"):
        spec.load(tmp_path, "train", colour="red", **options)


def test_registered_task_cache_builds_once(tmp_path):
    from ptjax.tasks import get_task

    corpus = write_text(tmp_path / "corpus.txt", DOCUMENTS)
    spec = get_task("ppt_unified_mc")
    options = dict(source="text", paths=["corpus.txt"], cache="built", dev_every=0, seed=4)
    first = spec.load(tmp_path, "train", **options)
    assert (tmp_path / "built" / "ppt_unified_mc-train-shard0of1.jsonl").is_file()
    corpus.write_text("Something else entirely now. It has words in it. And a third one here.\n")
    assert spec.load(tmp_path, "train", **options) == first  # read back, not rebuilt
    with pytest.raises(InputError, match="built with other options"):
        spec.load(tmp_path, "train", **{**options, "seed": 5})
    sentiment = get_task("ppt_sentiment")
    options = {**options, "classifier": fake_classifier_for_tasks, "threshold": {0: 0.0}, "balance": False}
    built = sentiment.load(tmp_path, "train", **options)  # int keys in the header survive the JSON trip
    assert len(built) == 3 and sentiment.load(tmp_path, "train", **options) == built
