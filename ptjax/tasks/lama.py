"""LAMA T-REx knowledge probing: relations, facts and the common-vocabulary lists.

Layout (that of THUDM/P-tuning, in the shared data under lama/):
    relations.jsonl                       {"relation": "P19", "template": "[X] was born in [Y] .", ...}
    fact-retrieval/<P-id>/{train,dev,test}.jsonl   {"sub_label", "obj_label", "sub_uri", ...}
    29k-vocab.json, 34k-vocab.json        {"bert-base-cased": [word, ...], "gpt2-xl": [...], ...}

Some relations lack a split (train is missing for P190, P47 and P530 in the shared copy): the loader
uses the relations that have it and logs the others; `split_availability` reports them.
An example's fields are {"sub_label"}; its label is the object word; meta holds the relation id,
its manual template, and the Wikidata ids.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

from ptjax.data.readers import get_field, read_json, read_jsonl
from ptjax.errors import InputError, at
from ptjax.tasks.base import Example, TaskSpec, register, task_dir

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
VOCABULARIES = {"29k": "29k-vocab.json", "34k": "34k-vocab.json"}


@dataclasses.dataclass(frozen=True)
class Relation:
    id: str
    template: str  # manual prompt with [X] for the subject and [Y] for the object
    label: str = ""
    type: str = ""  # "1-1", "N-1" or "N-M"


def lama_dir(data_dir: Any) -> Path:
    return task_dir(data_dir, ["lama"], marker="relations.jsonl")


def load_relations(data_dir: Any) -> dict[str, Relation]:
    """relation id -> Relation, in file order."""
    path = lama_dir(data_dir) / "relations.jsonl"
    relations: dict[str, Relation] = {}
    for line, record in read_jsonl(path):
        where = at(path, line)
        relation_id = get_field(record, "relation", str, where)
        template = get_field(record, "template", str, where)
        if "[X]" not in template or "[Y]" not in template:
            raise InputError(f"{where}: template {template!r} needs both [X] and [Y]")
        if relation_id in relations:
            raise InputError(f"{where}: relation {relation_id} appears twice")
        relations[relation_id] = Relation(relation_id, template,
                                          get_field(record, "label", str, where, required=False, default=""),
                                          get_field(record, "type", str, where, required=False, default=""))
    return relations


def split_availability(data_dir: Any) -> dict[str, tuple[str, ...]]:
    """relation id -> the splits that have a facts file (empty for relations without facts)."""
    root = lama_dir(data_dir) / "fact-retrieval"
    return {relation: tuple(s for s in SPLITS if (root / relation / f"{s}.jsonl").is_file())
            for relation in load_relations(data_dir)}


def load_facts(data_dir: Any, split: str, relations: Sequence[str] = (), common_vocab: str = "",
               vocab_model: str = "bert-base-cased",
               vocabulary: Iterable[str] | None = None) -> list[Example]:
    """Facts of `split` for the given relations (default: all in relations.jsonl that have data).

    Relations asked for by name must exist in relations.jsonl; those without a file for this split
    are skipped and logged. Only facts whose object is in the vocabulary are kept: `common_vocab`
    "29k" or "34k" reads that list for `vocab_model`; `vocabulary` gives the words directly.
    """
    if split not in SPLITS:
        raise InputError(f"lama: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if common_vocab:
        listed = load_common_vocabulary(data_dir, common_vocab, vocab_model)
        vocabulary = listed if vocabulary is None else listed & set(vocabulary)
    known = load_relations(data_dir)
    wanted = list(relations) or list(known)
    unknown = [r for r in wanted if r not in known]
    if unknown:
        listing = lama_dir(data_dir) / "relations.jsonl"
        raise InputError(f"lama: relation(s) {', '.join(unknown)} not in {listing}")
    keep = None if vocabulary is None else set(vocabulary)
    root = lama_dir(data_dir) / "fact-retrieval"
    examples, missing = [], []
    for relation_id in wanted:
        path = root / relation_id / f"{split}.jsonl"
        if not path.is_file():
            missing.append(relation_id)
            continue
        relation = known[relation_id]
        for n, (line, record) in enumerate(read_jsonl(path)):
            where = at(path, line)
            subject = get_field(record, "sub_label", str, where)
            obj = get_field(record, "obj_label", str, where)
            predicate = record.get("predicate_id")
            if predicate is not None and predicate != relation_id:
                raise InputError(f"{where}: predicate_id {predicate!r} in the folder of {relation_id}")
            if keep is not None and obj not in keep:
                continue
            meta = {"relation": relation_id, "template": relation.template, "where": where,
                    "sub_uri": record.get("sub_uri"), "obj_uri": record.get("obj_uri")}
            examples.append(Example(f"{relation_id}-{split}-{n}", {"sub_label": subject}, obj, meta))
    if missing:
        log.warning("LAMA %s: no facts file for %d relation(s), skipped: %s", split, len(missing),
                    ", ".join(missing))
    if not examples:
        raise InputError(f"lama: no facts for split {split!r} under {root}")
    return examples


def load_common_vocabulary(data_dir: Any, size: str = "29k",
                           model: str = "bert-base-cased") -> frozenset[str]:
    """A vocabulary-intersection list (29k or 34k) for one of the models the file is keyed by."""
    if size not in VOCABULARIES:
        raise InputError(f"lama: unknown vocabulary {size!r} (expected one of {', '.join(VOCABULARIES)})")
    path = lama_dir(data_dir) / VOCABULARIES[size]
    document = read_json(path)
    if not isinstance(document, dict) or not all(isinstance(v, list) for v in document.values()):
        raise InputError(f"{path}: expected an object mapping model names to word lists")
    if model not in document:
        raise InputError(f"{path}: no list for model {model!r} (have: {', '.join(document)})")
    words = document[model]
    bad = next((w for w in words if not isinstance(w, str)), None)
    if bad is not None:
        raise InputError(f"{path}: the list for {model} holds {bad!r}, not a word")
    return frozenset(words)


register(TaskSpec("lama", "fact_probe", None, ("p_at_1",), load_facts, SPLITS, ("sub_label",),
                  description="LAMA T-REx: predict the object of a (subject, relation) fact"))
