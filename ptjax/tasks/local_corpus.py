"""An unlabeled pre-training corpus from the local data sets, for PPT prompt pre-training where no
web corpus is at hand:

    python -m ptjax.tasks.local_corpus --data_dir ../shared/data --out runs/ppt_corpus
    # -> runs/ppt_corpus/corpus.jsonl, one document per line: {"text": ..., "source": ...}

Documents (labels dropped), in this order:
  - FewGLUE unlabeled sets (superglue_unlabeled/): MultiRC passages, WSC texts, COPA premises,
    WiC sentences;
  - passages and sentences of the FewGLUE train and dev32 files (superglue/), of the full RTE and
    WSC training sets (superglue_full/) and of the SST training trees (sst/trees_train.txt).
The sets that serve as test sets (SuperGLUE val, SST dev, GLUE SST-2 dev) are never read, so a
prompt pre-trained on this corpus has not seen their text. Multi-sentence passages give the
sentence-pair and multiple-choice formats their adjacent sentences; single sentences feed the
sentiment format and the pool of sentences from other documents. Identical texts are kept once,
and the documents are shuffled (fixed seed), so any prefix of the file mixes every source.
Read it with the pre-training tasks' options source="jsonl", paths=["corpus.jsonl"], field="text".
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from ptjax.data.readers import read_jsonl, read_trees
from ptjax.errors import InputError
from ptjax.tasks.sst import unescape_ptb

# (folder, task, split files, fields holding text); a dotted field reaches into a nested record.
JSONL_SOURCES = (
    ("superglue_unlabeled", "MultiRC", ("unlabeled",), ("passage.text",)),
    ("superglue_unlabeled", "WSC", ("unlabeled",), ("text",)),
    ("superglue_unlabeled", "COPA", ("unlabeled",), ("premise",)),
    ("superglue_unlabeled", "WiC", ("unlabeled",), ("sentence1", "sentence2")),
    ("superglue", "BoolQ", ("train", "dev32"), ("passage",)),
    ("superglue", "CB", ("train", "dev32"), ("premise",)),
    ("superglue", "RTE", ("train", "dev32"), ("premise",)),
    ("superglue", "COPA", ("train", "dev32"), ("premise",)),
    ("superglue", "MultiRC", ("train", "dev32"), ("passage.text",)),
    ("superglue", "ReCoRD", ("train", "dev32"), ("passage.text",)),
    ("superglue", "WSC", ("train", "dev32"), ("text",)),
    ("superglue", "WiC", ("train", "dev32"), ("sentence1", "sentence2")),
    ("superglue_full", "RTE", ("train",), ("premise",)),
    ("superglue_full", "WSC", ("train",), ("text",)),
)
TREE_SOURCES = (("sst", "trees_train.txt"),)


def _get(record: dict, dotted: str):
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _clean(text: str) -> str:
    """ReCoRD's "@highlight" lines become sentence ends; whitespace is normalized."""
    text = re.sub(r"\s*@highlight\s*", ". ", text)
    return " ".join(text.split()).strip(" .") + "." if text.strip() else ""


def documents(data_dir: str | Path) -> Iterator[tuple[str, str]]:
    """(text, source) of every document, duplicates removed; missing files are skipped."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"data directory {root} does not exist")
    seen: set[str] = set()

    def fresh(text: str) -> bool:
        if not text or text in seen:
            return False
        seen.add(text)
        return True

    for folder, task, splits, fields in JSONL_SOURCES:
        for split in splits:
            path = root / folder / task / f"{split}.jsonl"
            if not path.is_file():
                continue
            for _, record in read_jsonl(path):
                for field in fields:
                    value = _get(record, field)
                    text = _clean(value) if isinstance(value, str) else ""
                    if fresh(text):
                        yield text, f"{folder}/{task}/{split}"
    for folder, name in TREE_SOURCES:
        path = root / folder / name
        if path.is_file():
            for _, tree in read_trees(path):
                text = unescape_ptb(tree.leaves())
                if fresh(text):
                    yield text, f"{folder}/{name}"


def write_corpus(data_dir: str | Path, out: str | Path, *, seed: int = 0) -> dict[str, int]:
    """Write out/corpus.jsonl (documents shuffled with `seed`); returns the documents per source."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    partial = out / "corpus.jsonl.partial"
    shuffled = list(documents(data_dir))
    random.Random(seed).shuffle(shuffled)
    with open(partial, "w", encoding="utf-8") as f:
        for text, source in shuffled:
            f.write(json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n")
            counts[source] = counts.get(source, 0) + 1
    partial.replace(out / "corpus.jsonl")
    (out / "sources.json").write_text(json.dumps(counts, indent=1) + "\n")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="the shared data root (superglue/, sst/, ...)")
    parser.add_argument("--out", required=True, help="folder for corpus.jsonl")
    args = parser.parse_args(argv)
    try:
        counts = write_corpus(args.data_dir, args.out)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    for source, count in counts.items():
        print(f"{count:7d}  {source}")
    print(f"{sum(counts.values()):7d}  documents -> {Path(args.out) / 'corpus.jsonl'}")


if __name__ == "__main__":
    main()
