"""Which sweep runs can train as one job on one frozen backbone (issue 25, batched sweeps).

    groups, alone = plan_groups(runs, configs)   # runs: ptjax.sweep.plan_runs, configs: run_config

Runs batch when their configs differ only in what a bank entry can hold on its own
(ptjax/prompts/banks.py): the seed (initialisation, data order, dropout), the peak learning rate
(BankTraining.learning_rates: each entry's rate inside the per-entry optimizer), the prompt
initialisation and the number of training examples. Everything else (the prompt shape, the
schedule's shape, the optimizer, the batch size, the method) must be equal within a group, so
runs that differ in shape (prompt length, prefix depth) form one group per shape. A run that
cannot batch (mode eval, a trained backbone, or no other run it can share a job with) comes back
in `alone` with the reason, to run by itself: never changed to fit a group.

The job itself (ptjax/training/batched.py) applies each run's model to all its variants at once
(`VariantModel`: a vmap over a leading variant axis) with each run's optimizer per entry
(`entry_optimizer`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util
from jax.sharding import PartitionSpec

from ptjax.errors import InputError
from ptjax.prompts.banks import BANK_AXIS, EXAMPLE_WEIGHT, BankTraining
from ptjax.training.optimizer import build_optimizer
from ptjax.training.step import merge_params, split_params

# Config keys whose value may differ between the runs of one batched job, each held per entry.
PER_ENTRY_KEYS = (
    "seed",
    "optimizer.learning_rate",
    "optimizer.prompt_learning_rate",
    "prompt.init",
    "prompt.init_text",
    "task.max_train_examples",
)


def _flat(config_dict: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


def shared_part(config: ml_collections.ConfigDict) -> str:
    """The config without its per-entry keys and the sections that do not change results: runs
    with equal shared parts may train in one job."""
    flat = _flat(json.loads(json.dumps(config.to_dict(), default=str)))
    kept = {k: v for k, v in flat.items()
            if k not in PER_ENTRY_KEYS and not k.startswith(("sweep.", "logging."))}
    return json.dumps(kept, sort_keys=True)


def why_alone(config: ml_collections.ConfigDict) -> str | None:
    """Why a run cannot share a job whatever the others are, or None."""
    if config.mode != "train":
        return f"mode={config.mode} (only training runs batch)"
    if config.method.name == "fine_tune" or config.method.train_backbone:
        return "it trains the backbone (a batched job shares one frozen backbone)"
    if config.optimizer.grad_accum_steps != 1:
        return "optimizer.grad_accum_steps > 1"
    return None


def plan_groups(runs: Sequence, configs: Sequence[ml_collections.ConfigDict]) -> tuple[list[list], list[tuple]]:
    """(groups: lists of runs, in sweep order, that train as one job each; alone: (run, reason)
    for the runs that train by themselves)."""
    if len(runs) != len(configs):
        raise InputError(f"plan_groups: {len(runs)} runs but {len(configs)} configs")
    groups: dict[str, list] = {}
    alone = []
    for run, config in zip(runs, configs):
        reason = why_alone(config)
        if reason:
            alone.append((run, reason))
        else:
            groups.setdefault(shared_part(config), []).append(run)
    batched = []
    for members in groups.values():
        if len(members) > 1:
            batched.append(members)
        else:
            alone.append((members[0], "no other run differs from it only in " + ", ".join(PER_ENTRY_KEYS)))
    return batched, alone


def describe(groups: list[list], alone: list[tuple], root) -> str:
    """The plan as the sweep prints it: which runs train together, which alone and why."""
    lines = []
    for number, members in enumerate(groups, 1):
        lines.append(f"batched job {number}: " + ", ".join(str(r.path.relative_to(root)) for r in members))
    for run, reason in alone:
        lines.append(f"alone: {run.path.relative_to(root)} ({reason})")
    return "\n".join(lines)


def stack_entries(trees: Sequence[dict], is_bank_leaf) -> dict:
    """The trainable tree of a bank from each variant's own trainable tree (each initialised with
    its own seed, as its separate run would be): bank leaves stacked on a leading axis. Leaves
    without the bank axis would be shared by the variants, which separate runs never share."""
    import numpy as np

    flats = [traverse_util.flatten_dict(tree) for tree in trees]
    shared = [path for path in flats[0] if not is_bank_leaf(path)]
    if shared:
        raise InputError(f"batched variants would share trainable {'/'.join(shared[0])}; run them separately")
    return traverse_util.unflatten_dict({path: np.stack([np.asarray(f[path]) for f in flats]) for path in flats[0]})


class VariantModel:
    """`single` (the engine's Model of one run) applied to `num` variants: trainable leaves have a
    leading [num] axis (logical name "prompt_bank"); a batch is num equal blocks of rows, block k
    for variant k. loss() sums the variants' own losses (each the mean over its block's valid rows,
    as its run computes it); predict() returns the blocks' outputs in batch order."""

    def __init__(self, single, num: int, learning_rates: tuple[float, ...]):
        self.single, self.num = single, num
        self.bank = BankTraining(num_entries=num, is_bank_leaf=lambda path: True, learning_rates=learning_rates)

    def __getattr__(self, name):  # fingerprint, export_metadata, ... of the single model
        return getattr(self.single, name)

    def is_trainable(self, path: tuple[str, ...]) -> bool:
        return self.single.is_trainable(path)

    def abstract_params(self) -> tuple[dict, dict]:
        shapes, axes = self.single.abstract_params()
        flat_shapes = traverse_util.flatten_dict(shapes)
        flat_axes = traverse_util.flatten_dict(axes, is_leaf=lambda _, x: isinstance(x, PartitionSpec))
        for path in flat_shapes:
            if self.is_trainable(path):
                leaf = flat_shapes[path]
                flat_shapes[path] = jax.ShapeDtypeStruct((self.num,) + tuple(leaf.shape), leaf.dtype)
                flat_axes[path] = PartitionSpec(BANK_AXIS, *flat_axes[path])
        return traverse_util.unflatten_dict(flat_shapes), traverse_util.unflatten_dict(flat_axes)

    def _blocks(self, params: dict, batch: dict):
        trainable, frozen = split_params(params, self.is_trainable)
        batch = {k: v for k, v in batch.items() if k not in ("prompt_id", EXAMPLE_WEIGHT)}
        blocks = jax.tree.map(lambda x: x.reshape((self.num, x.shape[0] // self.num) + x.shape[1:]), batch)
        return trainable, frozen, blocks

    def loss(self, params, batch, rng, *, train: bool):
        """rng: uint32 [num, 2], each variant's own step key (or None)."""
        trainable, frozen, blocks = self._blocks(params, batch)

        def one(entry, block, key):
            return self.single.loss(merge_params(entry, frozen), block, key, train=train)

        losses, aux = jax.vmap(one)(trainable, blocks, rng) if rng is not None else jax.vmap(
            lambda e, b: one(e, b, None))(trainable, blocks)
        aux = {k: jnp.asarray(v, jnp.float32) for k, v in aux.items() if k != "weight"}
        return jnp.sum(losses.astype(jnp.float32)), {**aux, "variant_loss": losses.astype(jnp.float32)}

    def variant_grad_norms(self, grads: dict) -> jax.Array:
        """float32 [num]: the global norm of each variant's own gradient (every trainable leaf has
        the variant axis first), what its separate run logs as grad_norm."""
        squares = [jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(self.num, -1), axis=1)
                   for g in jax.tree.leaves(grads)]
        return jnp.sqrt(sum(squares))

    def predict(self, params, batch):
        trainable, frozen, blocks = self._blocks(params, batch)
        outputs = jax.vmap(lambda e, b: self.single.predict(merge_params(e, frozen), b))(trainable, blocks)
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), outputs)


def entry_optimizer(config, trainable_shapes: dict, model: VariantModel, *, total_steps: int, steps_per_epoch: int):
    """The optimizer of a separate run, per entry: each variant's gradient clipped by the global
    norm of its own leaves, all groups together (prompt and head, as its run clips them; the
    bank's own clipping would clip each group apart), then the per-entry optimizer with its rate."""
    unclipped = copy.deepcopy(config)
    unclipped.optimizer.clip_norm = 0.0
    optimizer = build_optimizer(unclipped, trainable_shapes, model.is_trainable, total_steps=total_steps,
                                steps_per_epoch=steps_per_epoch, bank=model.bank)
    clip = config.optimizer.clip_norm
    if not clip:
        return optimizer

    def update(updates, state, params=None, **extra):
        del params, extra
        clipped = jax.vmap(lambda g: optax.clip_by_global_norm(clip).update(g, optax.EmptyState())[0])(updates)
        return clipped, state

    clip_each = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)
    return dataclasses.replace(optimizer, transform=optax.chain(clip_each, optimizer.transform))
