"""Token sets for real-word prompt initialization (PPT §2, Table 2: "Label Init", "Top-1000
Sampling", "Task-Related Sampling"); the soft tokens then start from these tokens' embeddings
(ptjax.methods.methods, config.prompt.init).

    label_token_ids(tokenizer, {"True": "yes", "False": "no"})  # [[id of " yes"], [id of " no"]]
    frequent_token_ids(tokenizer, corpus_texts("", data_dir), top_k=1000, cache_dir=...)
    task_token_ids(tokenizer, config)        # distinct tokens of the task's training examples

Tokens are counted as the text tokenizes without special tokens ([CLS], </s>, ...), which never
count as words. The frequency list ranks every token by its count in the corpus (ties: lower id
first) and is cached as JSON, keyed by the corpus files (path, size, modification time) and the
tokenizer (its serialized vocabulary and rules), so another top_k reuses it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ptjax.data.readers import read_jsonl, read_lines
from ptjax.errors import InputError
from ptjax.prompts.verbalizers import tokenize_word

_BATCH = 512  # texts per tokenizer call (fast tokenizers batch in Rust)


def label_token_ids(tokenizer, label_words: Mapping[str, str | Sequence[str]]) -> list[list[int]]:
    """Per label (in the mapping's order), the tokens of its word(s) as they appear in running
    text after a space (the verbalizer's form); a label with several words gets all their tokens."""
    ids = []
    for label, words in label_words.items():
        words = (words,) if isinstance(words, str) else tuple(words)
        tokens = [t for word in words for t in tokenize_word(tokenizer, word, follows_space=True)]
        if not tokens:
            raise InputError(f"config.prompt.init='label_words': label {label!r}'s words {words} have no tokens")
        ids.append(tokens)
    return ids


def _special_ids(tokenizer) -> set[int]:
    return set(getattr(tokenizer, "all_special_ids", ()) or ())


def count_tokens(tokenizer, texts: Iterable[str]) -> collections.Counter:
    """Occurrences of each non-special token id over `texts`."""
    counts: collections.Counter = collections.Counter()
    batch: list[str] = []

    def flush():
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
        batch.clear()

    for text in texts:
        if text:
            batch.append(text)
        if len(batch) == _BATCH:
            flush()
    if batch:
        flush()
    for special in _special_ids(tokenizer):
        counts.pop(special, None)
    return counts


# --------------------------------------------------------------------------------------------
# Corpora.


def _corpus_files(corpus: str, data_dir: str | Path) -> list[Path]:
    if corpus:
        path = Path(corpus).expanduser()
        if not path.is_file():
            raise InputError(f"config.prompt.init_corpus={corpus!r}: no such file")
        if path.suffix not in (".txt", ".jsonl"):
            raise InputError(f"config.prompt.init_corpus={corpus!r}: give a .txt file (a document per line) "
                             "or a .jsonl file ({\"text\": ...} per line)")
        return [path]
    from ptjax.tasks import local_corpus

    root = Path(data_dir)
    files = [root / folder / task / f"{split}.jsonl" for folder, task, splits, _ in local_corpus.JSONL_SOURCES
             for split in splits] + [root / folder / name for folder, name in local_corpus.TREE_SOURCES]
    files = [f for f in files if f.is_file()]
    if not files:
        raise InputError(f"config.prompt.init_corpus='': the local pre-training corpus (ptjax/tasks/local_corpus.py) "
                         f"has no files under data_dir {root}; name a text file in config.prompt.init_corpus")
    return files


def corpus_texts(corpus: str, data_dir: str | Path) -> Iterator[str]:
    """The documents of config.prompt.init_corpus: "" the local pre-training corpus built from
    data_dir's data sets (ptjax/tasks/local_corpus.py, test sets excluded), a .txt file (one
    document per line) or a .jsonl file (its "text" field)."""
    if not corpus:
        from ptjax.tasks import local_corpus

        yield from (text for text, _ in local_corpus.documents(data_dir))
        return
    path = _corpus_files(corpus, data_dir)[0]
    if path.suffix == ".txt":
        yield from (line for _, line in read_lines(path))
    else:
        for number, record in read_jsonl(path):
            if not isinstance(record.get("text"), str):
                raise InputError(f"{path}:{number}: expected a string field 'text'")
            yield record["text"]


def _tokenizer_key(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    described = backend.to_str() if backend is not None else json.dumps(
        [type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), sorted(tokenizer.get_vocab().items())])
    return hashlib.sha256(described.encode()).hexdigest()


def _corpus_key(corpus: str, data_dir: str | Path) -> str:
    stamps = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in _corpus_files(corpus, data_dir)]
    return hashlib.sha256(json.dumps([corpus or "local_corpus", stamps]).encode()).hexdigest()


def default_cache_dir() -> Path:
    """$PTJAX_DATA_CACHE, else ~/.cache/ptjax/data."""
    return Path(os.environ.get("PTJAX_DATA_CACHE", Path.home() / ".cache" / "ptjax" / "data"))


def ranked_tokens(tokenizer, corpus: str, data_dir: str | Path, cache_dir: str | Path | None) -> list[int]:
    """Every non-special token of the corpus, most frequent first (ties: lower id first).
    cache_dir: where the ranking is kept (None: not cached)."""
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256((_corpus_key(corpus, data_dir) + _tokenizer_key(tokenizer)).encode()).hexdigest()[:32]
        cache_file = Path(cache_dir) / "token_frequencies" / f"{key}.json"
        if cache_file.is_file():
            return json.loads(cache_file.read_text())["ranked_ids"]
    counts = count_tokens(tokenizer, corpus_texts(corpus, data_dir))
    ranked = sorted(counts, key=lambda token: (-counts[token], token))
    if not ranked:
        raise InputError(f"config.prompt.init_corpus={corpus!r}: the corpus has no tokens")
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial")  # a crash never leaves half a list behind
        partial.write_text(json.dumps({"corpus": corpus or "local_corpus", "data_dir": str(data_dir),
                                       "ranked_ids": ranked, "counts": [counts[t] for t in ranked]}))
        partial.replace(cache_file)
    return ranked


def frequent_token_ids(tokenizer, corpus: str, data_dir: str | Path, top_k: int,
                       cache_dir: str | Path | None) -> list[int]:
    """The top_k most frequent tokens of the corpus (fewer when it has fewer distinct tokens)."""
    if top_k < 1:
        raise InputError(f"config.prompt.init_top_k={top_k}: must be >= 1")
    return ranked_tokens(tokenizer, corpus, data_dir, cache_dir)[:top_k]


# --------------------------------------------------------------------------------------------
# The task's own training data.


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def task_texts(config) -> list[str]:
    """The text fields of the examples the run trains on (config.task.train_split, at most
    config.task.max_train_examples), labels excluded."""
    from ptjax.tasks.sources import configured_task

    spec = configured_task(config)
    examples = spec.load(config.data_dir, config.task.train_split, **dict(config.task.options))
    limit = int(config.task.max_train_examples or 0)
    examples = examples[:limit] if limit else examples
    return [text for example in examples for value in example.fields.values() for text in _strings(value)]


def task_token_ids(tokenizer, config) -> list[int]:
    """The distinct non-special tokens of the task's training examples, in id order."""
    ids = sorted(count_tokens(tokenizer, task_texts(config)))
    if not ids:
        raise InputError(f"config.prompt.init='task_words': task {config.task.name}'s "
                         f"{config.task.train_split!r} examples have no text")
    return ids
