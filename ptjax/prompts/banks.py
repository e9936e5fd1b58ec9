"""Banks of prompts trained together as if each trained alone.

A bank of fully independent prompt encoders: one table, BiLSTM and MLP per prompt.

    bank = PromptEncoderBank(num_prompts=41, num_tokens=6, embed_dim=768, reparam="lstm")
    params = bank.init({"params": rng})["params"]
    vectors = bank.apply({"params": params})        # [41, 6, 768], prompt k from encoder k

`PromptEncoder(num_prompts=n)` keeps n tables but shares one LSTM/MLP among them (a multi-task
prompt). P-tuning's LAMA setting trains one encoder per relation; this bank gives each prompt its
own encoder (the same module vmapped over a leading "prompt_bank" axis), so that several
relations train in one job while a prompt's parameters get gradient only from its own examples.
Drop-in for PromptModel.soft_prompt: same output shape as a banked PromptEncoder, and a
`table_init` field that PromptModel.init_params sets (each prompt draws its own rows).

Training a bank entry together with others ends where it would alone (`BankTraining`, which the
train step and the optimizer use through the model's `bank` attribute):
  - its loss is the mean over its own rows of the batch (rows weighted 1 / its row count, in the
    batch field "example_weight" that heads read), not a share of the batch mean;
  - its gradient is clipped by its own global norm;
  - the optimizer (moments, step count, schedule) runs per entry, vmapped over the bank axis, and
    an entry with no rows in the batch is left as it was: no update, no moment decay, no count.
Leaves without the bank axis (a shared head, a shared encoder) are optimized as usual.
LAMA trains one P-tuning prompt per relation this way; batched sweep variants can do the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ptjax.errors import InputError
from ptjax.prompts.encoders import Initializer, PromptEncoder

BANK_AXIS = "prompt_bank"  # logical name of the leading axis of banked parameters
EXAMPLE_WEIGHT = "example_weight"  # batch field: per-row loss weight replacing the batch mean


class PromptEncoderBank(nn.Module):
    """num_prompts independent PromptEncoders; __call__() -> float32 [num_prompts, num_tokens, embed_dim].

    reparam, hidden_dim, activation, lstm_layers, table_init: as in PromptEncoder (per prompt).
    Parameters have a leading [num_prompts] axis (logical name "prompt_bank").
    """

    num_prompts: int
    num_tokens: int
    embed_dim: int
    reparam: str = "lstm"
    hidden_dim: int | None = None
    activation: str = "relu"
    lstm_layers: int = 2
    table_init: Initializer | None = None

    @nn.compact
    def __call__(self):
        if self.num_prompts < 1:
            raise InputError(f"a prompt bank needs at least one prompt, got num_prompts={self.num_prompts}")
        encoders = nn.vmap(
            PromptEncoder, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=(), out_axes=0,
            axis_size=self.num_prompts, metadata_params={nn.PARTITION_NAME: "prompt_bank"},
        )
        return encoders(
            num_tokens=self.num_tokens, embed_dim=self.embed_dim, reparam=self.reparam, hidden_dim=self.hidden_dim,
            activation=self.activation, lstm_layers=self.lstm_layers, table_init=self.table_init, name="encoder",
        )()


# --------------------------------------------------------------------------------------------
# Training a bank: each entry as if alone.


def entry_weights(prompt_id: jax.Array, valid: jax.Array | None, num_entries: int,
                  scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(row weights float32 [batch], has examples bool [num_entries]) of a batch.

    A row weighs scale / (rows of its entry), 0 when not valid: the weighted sum of the rows'
    losses is the sum over entries of each entry's mean loss. scale: the number of microbatches
    that will average the sum (gradient accumulation)."""
    rows = jnp.ones(prompt_id.shape, jnp.float32) if valid is None else valid.astype(jnp.float32)
    counts = jnp.zeros((num_entries,), jnp.float32).at[prompt_id].add(rows)
    weights = rows * (scale / jnp.maximum(counts[prompt_id], 1.0))
    return weights, counts > 0


def per_entry(inner: optax.GradientTransformation | Callable[[jax.Array], optax.GradientTransformation], *,
              clip_norm: float = 0.0, learning_rates: tuple[float, ...] | None = None
              ) -> optax.GradientTransformationExtraArgs:
    """`inner` run on each bank entry alone: every leaf has the bank axis first; the state is the
    inner state per entry (counts included). update(..., entry_has_examples=bool [entries])
    clips each entry's gradient to its own global norm `clip_norm` (0: none), updates it, and
    leaves entries without examples untouched (zero update, previous state).

    learning_rates (one per entry): then `inner` is a function peak learning rate -> transformation,
    called inside the vmap with the entry's rate as a float32 scalar, so an entry computes
    exactly what a run built with that constant rate computes (batched sweep variants)."""
    rates = None if learning_rates is None else jnp.asarray(learning_rates, jnp.float32)

    def make(rate):
        return inner if rates is None else inner(rate)

    def init(params):
        if rates is None:
            return jax.vmap(inner.init)(params)
        return jax.vmap(lambda p, rate: make(rate).init(p))(params, rates)

    def update(updates, state, params=None, *, entry_has_examples=None, **extra):
        del extra

        def one(grads, entry_state, entry_params, rate):
            if clip_norm:
                grads, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
            return make(rate).update(grads, entry_state, entry_params)

        per_rate = jnp.zeros(jax.tree.leaves(updates)[0].shape[:1], jnp.float32) if rates is None else rates
        new_updates, new_state = jax.vmap(one)(updates, state, params, per_rate)
        if entry_has_examples is None:
            return new_updates, new_state

        def where(new, old):
            keep = entry_has_examples.reshape((-1,) + (1,) * (new.ndim - 1))
            return jnp.where(keep, new, old)

        new_updates = jax.tree.map(lambda u: where(u, jnp.zeros_like(u)), new_updates)
        return new_updates, jax.tree.map(where, new_state, state)

    return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass(frozen=True)
class BankTraining:
    """How a model with a prompt bank trains it: entries independent (module docstring).

    num_entries: bank size. is_bank_leaf(path): whether a trainable leaf has the bank axis first
    (the model knows from its logical axes)."""

    num_entries: int
    is_bank_leaf: Callable[[tuple[str, ...]], bool]
    learning_rates: tuple[float, ...] | None = None  # per entry (batched sweep variants); None: the config's

    def prepare(self, batch: dict, microbatches: int = 1) -> tuple[dict, dict]:
        """(batch with EXAMPLE_WEIGHT, extra arguments of the optimizer update) for a train step."""
        weights, present = entry_weights(batch["prompt_id"], batch.get("valid"), self.num_entries,
                                         scale=float(microbatches))
        return {**batch, EXAMPLE_WEIGHT: weights}, {"entry_has_examples": present}

    def wrap(self, inner, clip_norm: float) -> optax.GradientTransformationExtraArgs:
        """inner: a transformation, or with learning_rates set, peak rate -> transformation."""
        return per_entry(inner, clip_norm=clip_norm, learning_rates=self.learning_rates)

    def selection(self, metric_names, *, mode: str, patience: int, folder: Path) -> BankSelection | None:
        """Each entry's best evaluation and early stopping (BankSelection), when the task names one
        metric per entry (metric_names in bank order, e.g. LAMA's p_at_1/<relation>); else None."""
        names = tuple(metric_names or ())
        if not names:
            return None
        if len(names) != self.num_entries:
            raise ValueError(f"{len(names)} per-entry metrics for a bank of {self.num_entries}")
        return BankSelection(self, names, mode=mode, patience=patience, folder=Path(folder))


class BankSelection:
    """The best step of each bank entry, as its own run would pick it: after every evaluation,
    `observe` keeps a copy of an entry's parameters when its own metric improves, and stops watching
    it after `patience` evaluations without improvement (0: never). The run may stop once every entry
    has stopped; `select(params)` puts each entry's best parameters in place for the export (entries
    never evaluated keep the given ones). Training goes on for stopped entries (the batches stay
    the same), but what they learn after stopping is never selected: the export is what separate
    runs with early stopping would export. State (values, steps, the copies) is kept in `folder`
    (written atomically after each evaluation), so a resumed run continues it."""

    def __init__(self, bank: BankTraining, metric_names: tuple[str, ...], *, mode: str, patience: int,
                 folder: Path):
        self.bank, self.names, self.mode, self.patience, self.folder = bank, metric_names, mode, patience, folder
        count = len(metric_names)
        self.state = {"best_value": [None] * count, "best_step": [None] * count, "evals_since_best": [0] * count,
                      "stopped": [False] * count, "last_step": -1}
        self.best: dict[str, np.ndarray] = {}  # "/"-joined bank leaf path -> [entries, ...] copies
        if (folder / "state.json").is_file():
            self.state = json.loads((folder / "state.json").read_text())
            with np.load(folder / "best.npz") as saved:
                self.best = {key: saved[key] for key in saved.files}

    @property
    def all_stopped(self) -> bool:
        return self.patience > 0 and all(self.state["stopped"])

    def _bank_leaves(self, params: dict) -> dict[str, Any]:
        flat = traverse_util.flatten_dict(params)
        return {"/".join(path): leaf for path, leaf in flat.items() if self.bank.is_bank_leaf(path)}

    def observe(self, step: int, metrics: dict[str, float], params: dict, *, write: bool = True) -> None:
        """metrics: the selecting split's metrics; params: the trainable tree at `step`."""
        state = self.state
        if step <= state["last_step"]:  # re-evaluated after a resume: already counted
            return
        improved = []
        for entry, name in enumerate(self.names):
            if state["stopped"][entry] or name not in metrics:
                continue
            value, best = float(metrics[name]), state["best_value"][entry]
            if best is None or (value > best if self.mode == "max" else value < best):
                state["best_value"][entry], state["best_step"][entry] = value, step
                state["evals_since_best"][entry] = 0
                improved.append(entry)
            else:
                state["evals_since_best"][entry] += 1
                state["stopped"][entry] = bool(self.patience) and state["evals_since_best"][entry] >= self.patience
        if improved:
            current = jax.device_get(self._bank_leaves(params))
            for key, leaf in current.items():
                kept = self.best.setdefault(key, np.array(leaf, np.float32, copy=True))
                kept[improved] = np.asarray(leaf)[improved]
        state["last_step"] = step
        if write:
            self._write()

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays = self.folder / "best.tmp.npz"
        with open(arrays, "wb") as handle:
            np.savez(handle, **self.best)
        os.replace(arrays, self.folder / "best.npz")  # the arrays first: state.json never runs ahead
        text = self.folder / "state.tmp.json"
        text.write_text(json.dumps(self.state))
        os.replace(text, self.folder / "state.json")

    def select(self, params: dict) -> dict:
        """params with each evaluated entry's best parameters (the others as given)."""
        chosen = [entry for entry, step in enumerate(self.state["best_step"]) if step is not None]
        if not chosen or not self.best:
            return params
        flat = traverse_util.flatten_dict(params)
        for path, leaf in flat.items():
            key = "/".join(path)
            if key in self.best:
                flat[path] = jnp.asarray(leaf).at[np.asarray(chosen)].set(self.best[key][chosen])
        return traverse_util.unflatten_dict(flat)

    def describe(self) -> dict:
        """{metric name: {"best_step", "value", "stopped"}} for results.json."""
        state = self.state
        return {name: {"best_step": state["best_step"][i], "value": state["best_value"][i],
                       "stopped": state["stopped"][i]} for i, name in enumerate(self.names)}
