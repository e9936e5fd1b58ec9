"""Warm starts: a PromptModel whose fresh prompt (and, from a multi-task export, one task's head
row) comes from an exported run, for methods the soft-prompt initializer cannot cover: deep
prompts (P-tuning v2, MPT-2 -> per-task tuning) and heads.

    model = WarmStartedModel.wrap(model, "runs/mpt2/export", task="conll04")

config.prompt.init='pretrained' with config.prompt.init_from chooses it (ptjax/experiment.py and
the token-task and multi-task builders); the soft-prompt-only case (PPT transfer) reads the
vectors through ptjax/prompts/pretrained.py instead.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
from flax import traverse_util

from ptjax.errors import InputError
from ptjax.methods.model import PromptModel
from ptjax.training import checkpoints as ckpt

log = logging.getLogger(__name__)


def head_row(exported: np.ndarray, target_shape: tuple, row: int) -> np.ndarray | None:
    """A multi-task head leaf [tasks, ..., width] cut to one task's [1, ..., labels], or None
    when the shapes do not line up."""
    if exported.ndim != len(target_shape) or row >= exported.shape[0] or target_shape[0] != 1:
        return None
    if exported.shape[1:-1] != tuple(target_shape[1:-1]) or exported.shape[-1] < target_shape[-1]:
        return None
    return exported[row:row + 1, ..., : target_shape[-1]]


@dataclasses.dataclass
class WarmStartedModel(PromptModel):
    """A PromptModel whose fresh parameters take the prompt (and, from a multi-task export
    naming `task`, that task's head row) of an exported run. Resuming from a checkpoint still
    restores the checkpoint over them."""

    init_from: str = ""
    task: str = ""

    @classmethod
    def wrap(cls, model: PromptModel, source: str, task: str) -> WarmStartedModel:
        fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(PromptModel)}
        fields["soft_prompt_init"] = None  # the whole prompt is replaced: no need to read it twice
        return cls(**fields, init_from=source, task=task)

    def init_params(self, rng, shardings: dict) -> dict:
        params = super().init_params(rng, shardings)
        exported, info = ckpt.read_export_arrays(self.init_from, fingerprint=self.fingerprint)
        if "prompt" not in params or "prompt" not in exported:
            raise InputError(f"{self.init_from}: a warm start needs a method with a prompt on both sides "
                             f"(this run: {sorted(params)}, the export: {sorted(exported)})")
        flat = traverse_util.flatten_dict
        current, saved = flat(params["prompt"]), flat(exported["prompt"])
        shapes = {p: tuple(v.shape) for p, v in current.items()}
        if shapes != {p: tuple(v.shape) for p, v in saved.items()}:
            raise InputError(f"{self.init_from}: its prompt {sorted((('/'.join(p), v.shape) for p, v in saved.items()))} "
                             f"does not match this method's {sorted(('/'.join(p), s) for p, s in shapes.items())}")
        params["prompt"] = _placed_like(current, saved)
        tasks = list((info.get("method") or {}).get("tasks") or [])
        taken = "prompt"
        if self.task in tasks and "head" in params and "head" in exported:
            row = tasks.index(self.task)
            current_head, saved_head = flat(params["head"]), flat(exported["head"])
            rows = {p: head_row(saved_head[p], tuple(v.shape), row) for p, v in current_head.items() if p in saved_head}
            if len(rows) == len(current_head) and all(r is not None for r in rows.values()):
                params["head"] = _placed_like(current_head, rows)
                taken = f"prompt and head row {row} ({self.task})"
        log.info("warm start from %s: %s", self.init_from, taken)
        return params


def _placed_like(current: dict, values: dict) -> dict:
    """The nested tree of `values` (flat, by path), each cast and placed like its `current` leaf."""
    return traverse_util.unflatten_dict({
        path: jax.device_put(np.asarray(values[path]).astype(leaf.dtype), leaf.sharding)
        for path, leaf in current.items()})
