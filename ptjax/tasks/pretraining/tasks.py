"""The pre-training formats as registered tasks, reading a corpus described by options.

    spec = get_task("ppt_nsp")          # also ppt_nss, ppt_unified_mc, ppt_sentiment
    train = spec.load(data_dir, "train", source="jsonl", paths=["corpus/*.jsonl"], field="text",
                      num_examples=50_000, seed=0, shard_index=jax.process_index(),
                      shard_count=jax.process_count(), cache="ppt_cache")
    spec.labels                         # ("0", "1", "2"); builder_for(spec.name).pattern / .verbalizer
    stream = stream_examples("ppt_nsp", data_dir, "train", source="jsonl", ...)  # lazy, no list or cache

Corpus options (every task):
  source          "text" | "jsonl" | "hf" | "tfds"
  paths           file names or glob patterns, relative to data_dir (text, jsonl; data_files for hf)
  field           the text field (jsonl), column (hf) or feature (tfds)
  separator       text files: "line" (one document per line) or "blank_line"
  sentence_per_line  each line of a document is one sentence (already split) instead of splitting
  dataset         hf: hub name, builder ("json", "text") or a Dataset object; tfds: name or prepared folder
  dataset_config, dataset_split, tfds_data_dir
  seed, num_examples (None: the whole corpus), shard_index, shard_count
  dev_every       every dev_every-th document of the host's stream goes to "dev", the rest to "train"
                  (0: no dev split)
  cache           a folder (relative to data_dir): the first load writes the examples there as
                  <task>-<split>-shard<i>of<n>.jsonl, later loads with the same options read them
  min_words, max_words   sentence lengths the builders use
Builder options: reservoir_size, lookahead, max_per_document (sentence formats), min_options,
max_options (unified), classifier, threshold, balance, batch_size, buffer_size (sentiment).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ptjax.errors import InputError
from ptjax.tasks.base import Example, TaskSpec, register
from ptjax.tasks.pretraining.builders import (NextSentencePairs, PretrainingBuilder, SentenceSelection,
                                              UnifiedChoice)
from ptjax.tasks.pretraining.corpus import (DocumentSource, JsonlFiles, SentencedDocument, Shard, TextFiles,
                                            corpus_paths, sentence_documents)
from ptjax.tasks.pretraining.hf_source import HFDataset
from ptjax.tasks.pretraining.pseudo_labels import DEFAULT_THRESHOLD, PseudoLabelledSentences
from ptjax.tasks.pretraining.store import read_examples, read_header, write_examples
from ptjax.tasks.pretraining.tfds_source import TFDSDataset

SOURCES = ("text", "jsonl", "hf", "tfds")
SPLITS = ("train", "dev")
BUILDERS: dict[str, type[PretrainingBuilder]] = {
    b.task: b for b in (NextSentencePairs, SentenceSelection, UnifiedChoice, PseudoLabelledSentences)}

_CORPUS_OPTIONS = dict(source="text", paths=None, field="text", separator="line", sentence_per_line=False,
                       dataset=None, dataset_config=None, dataset_split="train", tfds_data_dir=None,
                       seed=0, num_examples=None, shard_index=0, shard_count=1, dev_every=50, cache=None,
                       min_words=3, max_words=64)
_SENTENCE_OPTIONS = dict(reservoir_size=10_000, lookahead=2, max_per_document=None)
_BUILDER_OPTIONS = {
    "ppt_nsp": _SENTENCE_OPTIONS,
    "ppt_nss": _SENTENCE_OPTIONS,
    "ppt_unified_mc": {**_SENTENCE_OPTIONS, "min_options": 2, "max_options": 16},
    "ppt_sentiment": dict(classifier=None, threshold=DEFAULT_THRESHOLD, balance=True, batch_size=64,
                          buffer_size=1000),
}


def builder_for(task: str) -> type[PretrainingBuilder]:
    """The builder class of a pre-training task: its pattern, verbalizer and labels."""
    if task not in BUILDERS:
        raise InputError(f"unknown pre-training task {task!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[task]


def open_corpus(source: str = "text", *, paths: Any = None, root: str | Path | None = None,
                field: str = "text", separator: str = "line", dataset: Any = None,
                dataset_config: str | None = None, dataset_split: str = "train",
                tfds_data_dir: str | None = None) -> DocumentSource:
    """A document source from options (see the module docstring)."""
    if source in ("text", "jsonl"):
        if not paths:
            raise InputError(f"a {source} corpus needs `paths`")
        if source == "text":
            return TextFiles(paths, separator=separator, root=root)
        return JsonlFiles(paths, field=field, root=root)
    if source == "hf":
        data_files = [str(p) for p in corpus_paths(paths, root)] if paths else None
        if dataset is None:
            if data_files is None:
                raise InputError("an hf corpus needs `dataset` (a hub name or builder) or `paths`")
            dataset = "json" if all(f.endswith((".json", ".jsonl")) for f in data_files) else "text"
        return HFDataset(dataset, config=dataset_config, split=dataset_split, field=field, data_files=data_files)
    if source == "tfds":
        if dataset is None:
            raise InputError("a tfds corpus needs `dataset` (a TFDS name or a prepared folder)")
        return TFDSDataset(dataset, data_dir=tfds_data_dir, split=dataset_split, field=field)
    raise InputError(f"unknown corpus source {source!r} (known: {', '.join(SOURCES)})")


def split_documents(documents: Iterable[SentencedDocument], split: str, dev_every: int | None
                    ) -> Iterator[SentencedDocument]:
    """Every dev_every-th document for "dev", the others for "train"."""
    if split not in SPLITS:
        raise InputError(f"pre-training data has splits {', '.join(SPLITS)}, not {split!r}")
    if not dev_every:
        if split == "dev":
            raise InputError("no dev split: dev_every is 0")
        yield from documents
        return
    for position, document in enumerate(documents):
        if (position % dev_every == dev_every - 1) == (split == "dev"):
            yield document


def host_seed(seed: int, shard: Shard) -> int:
    """A seed per host, so that hosts do not draw the same random choices."""
    if shard.count == 1:
        return seed
    digest = hashlib.sha256(f"{seed}/{shard.index}/{shard.count}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resolve_classifier(classifier: Any) -> Callable:
    """A callable, or "package.module:name" naming one."""
    if callable(classifier):
        return classifier
    if not isinstance(classifier, str) or ":" not in classifier:
        raise InputError("ppt_sentiment needs `classifier`: a callable (sentences -> probabilities [n, 5]) "
                         f"or 'module:name' naming one; got {classifier!r}")
    module_name, _, attribute = classifier.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"classifier {classifier!r}: {error}") from None
    if not callable(value):
        raise InputError(f"classifier {classifier!r} is not callable")
    return value


def stream_examples(task: str, data_dir: Any, split: str, **options: Any) -> Iterator[Example]:
    """The examples a task's loader returns, as a stream (no list, no cache): for corpora too big
    for a list. Same options as `get_task(task).load`."""
    builder_class = builder_for(task)
    unknown = sorted(set(options) - set(_CORPUS_OPTIONS) - set(_BUILDER_OPTIONS[task]))
    if unknown:
        raise InputError(f"task {task} has no option {unknown[0]!r}")
    options = {**_CORPUS_OPTIONS, **_BUILDER_OPTIONS[task], **options}
    shard = Shard(options["shard_index"], options["shard_count"])
    builder_options = {name: options[name] for name in _BUILDER_OPTIONS[task]}
    if task == "ppt_sentiment":
        builder_options["classifier"] = resolve_classifier(builder_options["classifier"])
    prefix = f"{task}-{split}" + (f"-{shard.index}" if shard.count > 1 else "")
    builder = builder_class(seed=host_seed(options["seed"], shard), min_words=options["min_words"],
                            max_words=options["max_words"], guid_prefix=prefix, **builder_options)
    corpus = open_corpus(options["source"], paths=options["paths"], root=data_dir, field=options["field"],
                         separator=options["separator"], dataset=options["dataset"],
                         dataset_config=options["dataset_config"], dataset_split=options["dataset_split"],
                         tfds_data_dir=options["tfds_data_dir"])
    documents = sentence_documents(corpus, shard, sentence_per_line=options["sentence_per_line"])
    return itertools.islice(builder.build(split_documents(documents, split, options["dev_every"])),
                            options["num_examples"])


def _load(task: str, data_dir: Any, split: str, options: dict[str, Any]) -> list[Example]:
    if not options["cache"]:
        return list(stream_examples(task, data_dir, split, **options))
    shard = Shard(options["shard_index"], options["shard_count"])
    cache_file = Path(data_dir) / options["cache"] / f"{task}-{split}-shard{shard.index}of{shard.count}.jsonl"
    described = {"task": task, "split": split,
                 "options": {name: value for name, value in sorted(options.items()) if name != "cache"}}
    header = json.loads(json.dumps(described, default=_name_of))  # as it reads back from the file
    if cache_file.exists():
        if read_header(cache_file) != header:
            raise InputError(f"{cache_file}: built with other options than these; delete it or use "
                             f"another cache folder")
    else:
        write_examples(cache_file, stream_examples(task, data_dir, split, **options), header=header)
    return list(read_examples(cache_file))


def _name_of(value: Any) -> str:
    """A JSON stand-in for a callable or an object in the cache header."""
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', type(value).__name__)}"


def _loader(task: str) -> Callable[..., list[Example]]:
    defaults = {**_CORPUS_OPTIONS, **_BUILDER_OPTIONS[task]}

    def load(data_dir: Any, split: str, **options: Any) -> list[Example]:
        return _load(task, data_dir, split, {**defaults, **options})

    # TaskSpec reads a loader's options from its signature.
    load.__signature__ = inspect.Signature(
        [inspect.Parameter("data_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("split", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in defaults.items()])
    return load


_DESCRIPTIONS = {
    "ppt_nsp": "PPT sentence-pair pre-training: next sentence 3-way (no / maybe / yes)",
    "ppt_nss": "PPT multiple-choice pre-training: next sentence selection among 6 options (A-F)",
    "ppt_unified_mc": "PPT unified multiple choice: next sentence selection among 2-16 options (A-P)",
    "ppt_sentiment": "PPT single-sentence pre-training: 5-class sentiment pseudo-labels (terrible .. great)",
}

for _task, _builder in BUILDERS.items():
    register(TaskSpec(_task, "classification", _builder.labels, ("accuracy",), _loader(_task), SPLITS,
                      _builder.fields, description=_DESCRIPTIONS[_task]))
