"""LAMA's relations as ptjax sees them: each relation's manual template (relations.jsonl's
"[X] was born in [Y] .") in ptjax's template language, and which relations a run probes (those
with facts for its splits, on causal LMs only those whose template leaves context before the
object, and, evaluating an export, those its prompt bank holds). ptjax.formulations.lama builds
the experiment from them."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from ptjax.errors import InputError
from ptjax.prompts.templates import Field, Mask, Soft, Template, Text, parse_template
from ptjax.tasks import lama as lama_data
from ptjax.tasks.base import TaskSpec

log = logging.getLogger(__name__)

_MARKERS = re.compile(r"(\[X\]|\[Y\])")


def manual_template(lama_template: str, origin: str = "") -> str:
    """A relations.jsonl template ("[X] is located in [Y] .") in ptjax's template language
    ("{sub} is located in [MASK] ."): [X] -> {sub}, [Y] -> [MASK], other braces and brackets
    escaped so that they stay literal text."""
    where = f"{origin}: " if origin else ""
    if lama_template.count("[Y]") != 1 or "[X]" not in lama_template:
        raise InputError(f"{where}template {lama_template!r} needs [X] and exactly one [Y]")
    parts = []
    for part in _MARKERS.split(lama_template):
        if part == "[X]":
            parts.append("{sub}")
        elif part == "[Y]":
            parts.append("[MASK]")
        else:
            parts.append(part.replace("{", "{{").replace("}", "}}").replace("[", "[["))
    return "".join(parts)


def has_context_before_slot(template: Template) -> bool:
    """Whether anything (text, a field, a soft token) precedes [MASK]; a causal LM needs it."""
    for piece in template.pieces:
        if isinstance(piece, Mask):
            return False
        if isinstance(piece, (Field, Soft)) or (isinstance(piece, Text) and piece.text.strip()):
            return True
    return False


def probed_relations(config, spec: TaskSpec, data_dir, kind: str) -> dict[str, str]:
    """relation id -> relations.jsonl template, for the relations this run probes.

    On causal LMs, relations whose manual template opens with the object are skipped (logged),
    whatever the method, so that every method probes the same relations."""
    known = lama_data.load_relations(data_dir)
    asked = list(config.task.options.get("relations", ()) or ())
    if asked:
        unknown = [r for r in asked if r not in known]
        if unknown:
            raise InputError(f"config.task.options.relations: {', '.join(unknown)} not in "
                             f"{lama_data.lama_dir(data_dir) / 'relations.jsonl'}")
        return {r: known[r].template for r in asked}
    splits = [spec.split_aliases.get(s, s) for s in (config.task.train_split, *config.task.eval_splits) if s]
    available = lama_data.split_availability(data_dir)
    chosen = {r: known[r].template for r in known if all(s in available[r] for s in splits)}
    if kind == "causal_lm":  # e.g. "[Y] participated in the [X] .": no context before the object
        blind = [r for r, t in chosen.items()
                 if not has_context_before_slot(parse_template(manual_template(t, f"lama relation {r}")).until_target())]
        if blind:
            log.warning("LAMA: skipped %s (the object opens the manual template, leaving a causal LM no "
                        "context to predict it from)", ", ".join(blind))
        chosen = {r: t for r, t in chosen.items() if r not in blind}
    skipped = [r for r in known if r not in chosen]
    if skipped:
        log.warning("LAMA: probing %d relations; skipped %s (no facts for split(s) %s, or see above)",
                    len(chosen), ", ".join(skipped), "/".join(splits))
    if not chosen:
        raise InputError(f"lama: no relation under {lama_data.lama_dir(data_dir)} has facts for {'/'.join(splits)}")
    return chosen


def exported_relations(config) -> tuple[str, ...]:
    """The prompt bank's relations of the LAMA export config.restore names, in bank order, when
    mode "eval" restores one; () otherwise (training, or an export without a relation list)."""
    if config.mode != "eval" or not config.restore:
        return ()
    from ptjax.training.checkpoints import read_export_metadata

    return tuple(read_export_metadata(config.restore).get("method", {}).get("relations", ()) or ())


def within_bank(relations: dict[str, str], bank: Sequence[str], asked: bool, restore: str) -> dict[str, str]:
    """The probed relations an export has prompts for: asked ones must all have one; the default
    set (every relation with facts) keeps those that do."""
    outside = [r for r in relations if r not in bank]
    if outside and asked:
        raise InputError(f"config.task.options.relations: {', '.join(outside)} not trained in the export "
                         f"{restore} (its relations: {', '.join(bank)})")
    if outside:
        log.warning("LAMA: the export %s has no prompt for %s; probing %s", restore, ", ".join(outside),
                    ", ".join(r for r in relations if r in bank))
    kept = {r: t for r, t in relations.items() if r in bank}
    if not kept:
        raise InputError(f"lama: none of the export's relations ({', '.join(bank)}) has facts under the data directory")
    return kept
