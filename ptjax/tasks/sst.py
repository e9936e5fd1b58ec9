"""Stanford Sentiment Treebank: PTB trees and `label ||| sentence` files.

Trees (trees_{train,dev,test}.txt, one per line): every node carries a sentiment 0..4 (very
negative .. very positive); the root's is the sentence's. SST-5 keeps all five; SST-2 maps 0-1 to
"0" and 3-4 to "1" and drops neutral (2) sentences. `phrases=True` also yields every labelled
subtree (the phrase-level training data GLUE's SST-2 is built from).

`label ||| sentence` files (sst5_{train,dev,test}.txt) hold the same sentences with the root label.

Tokens are PTB-escaped in both files; they are turned back into text ("-LRB-" -> "(", "\\/" -> "/").
"""

from __future__ import annotations

from typing import Any

from ptjax.data.readers import find_file, read_labeled_lines, read_trees
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, check_label, register, task_dir

SST5_LABELS = ("0", "1", "2", "3", "4")
SST2_LABELS = ("0", "1")
SPLITS = ("train", "dev", "test")
_PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def unescape_ptb(words: list[str] | str) -> str:
    """PTB token escapes back to characters; returns the tokens joined by single spaces."""
    tokens = words.split() if isinstance(words, str) else words
    return " ".join(_PTB_ESCAPES.get(t, t).replace("\\/", "/").replace("\\*", "*") for t in tokens)


def _binary(label: str) -> str | None:
    return {"0": "0", "1": "0", "3": "1", "4": "1"}.get(label)


def load_sst_trees(data_dir: Any, split: str, *, binary: bool = False,
                   phrases: bool = False) -> list[Example]:
    folder = task_dir(data_dir, ["sst"], marker="trees_train.txt")
    path = find_file(folder, [f"trees_{split}.txt", f"{split}.txt"], f"sst trees split {split!r}")
    name = "sst2_trees" if binary else "sst5"
    out = []
    seen: set[str] = set()  # phrases repeat across trees; each is kept once, sentences always
    for n, (line, tree) in enumerate(read_trees(path)):
        where = at(path, line)
        nodes = list(tree.subtrees()) if phrases else [tree]
        for k, node in enumerate(nodes):
            if node.label not in SST5_LABELS:
                raise InputError(f"{where}: sentiment label {node.label!r} is not one of 0..4")
            label = _binary(node.label) if binary else node.label
            sentence = unescape_ptb(node.leaves())
            if label is None or (k > 0 and sentence in seen):
                continue
            seen.add(sentence)
            guid = f"{name}-{split}-{n}" + (f"-{k}" if phrases else "")
            out.append(Example(guid, {"sentence": sentence}, label, {"where": where, "is_root": k == 0}))
    return out


def load_sst5_text(data_dir: Any, split: str) -> list[Example]:
    folder = task_dir(data_dir, ["sst"], marker="sst5_train.txt")
    path = find_file(folder, [f"sst5_{split}.txt", f"{split}.txt"], f"sst5 split {split!r}")
    out = []
    for n, (line, label, text) in enumerate(read_labeled_lines(path)):
        where = at(path, line)
        out.append(Example(f"sst5_text-{split}-{n}", {"sentence": unescape_ptb(text)},
                           check_label(label, SST5_LABELS, where), {"where": where}))
    return out


def _trees_loader(binary: bool):
    def load(data_dir: Any, split: str, phrases: bool = False) -> list[Example]:
        return load_sst_trees(data_dir, split, binary=binary, phrases=phrases)

    return load


register(TaskSpec("sst5", "classification", SST5_LABELS, ("accuracy",), _trees_loader(False), SPLITS,
                  ("sentence",), description="SST fine-grained (5 classes) from PTB trees"))
register(TaskSpec("sst2_trees", "classification", SST2_LABELS, ("accuracy",), _trees_loader(True), SPLITS,
                  ("sentence",), description="SST binary from PTB trees (neutral dropped)"))
register(TaskSpec("sst5_text", "classification", SST5_LABELS, ("accuracy",), load_sst5_text, SPLITS,
                  ("sentence",), description="SST-5 from 'label ||| sentence' files"))
