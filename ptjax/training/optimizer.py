"""Learning-rate schedules and the optimizer over the trainable tree.

The optimizer only ever sees the trainable tree (the frozen backbone has no gradient buffers or
optimizer state). Each leaf gets a label: its top-level group ("prompt", "head", "backbone", or
"other") when the method's label function says it trains, else "frozen". An
`optax.multi_transform` maps "frozen" to `set_to_zero` twice: before clipping (so the global
norm reads trainable leaves only) and in place of the update.

A model that trains a bank of prompts entry by entry (its `bank`, ptjax.prompts.banks.BankTraining)
gets its banked leaves labelled "<group>@bank": the bank clips and optimizes each entry alone
(and skips entries without examples); the global clipping norm reads the other leaves only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

GROUPS = ("prompt", "head", "backbone")
FROZEN = "frozen"
BANKED = "@bank"  # label suffix of leaves a bank optimizes entry by entry


def label_tree(tree: dict, is_trainable: Callable[[tuple[str, ...]], bool],
               is_bank_leaf: Callable[[tuple[str, ...]], bool] | None = None) -> dict:
    """Same structure as tree, each leaf replaced by its optimizer label."""
    flat = traverse_util.flatten_dict(tree)

    def label(path):
        if not is_trainable(path):
            return FROZEN
        group = path[0] if path[0] in GROUPS else "other"
        return group + BANKED if is_bank_leaf is not None and is_bank_leaf(path) else group

    return traverse_util.unflatten_dict({path: label(path) for path in flat})


def make_schedule(config: ml_collections.ConfigDict, peak: float, total_steps: int,
                  steps_per_epoch: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer's update count (0 for the first update).

    Warm-up rises linearly to `peak` over the first W updates (the first update uses peak / W).
    linear: decays linearly after warm-up, reaching peak / (total - W) at the last update.
    exponential: peak * decay_rate ** floor((count - W) / period), period = decay_every_steps
      or one epoch. inverse_sqrt: peak * sqrt(W / (count + 1)) after warm-up.
    """
    sched = config.schedule
    warmup = sched.warmup_steps or round(sched.warmup_ratio * total_steps)
    name = sched.name
    period = max(1, sched.decay_every_steps or steps_per_epoch)
    decay_steps = max(1, total_steps - warmup)

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0  # the 1-based number of this update
        warm = jnp.minimum(1.0, step / warmup) if warmup else jnp.float32(1.0)
        after = jnp.maximum(step - warmup, 1.0)  # 1 for the first update after warm-up
        if name == "constant":
            factor = warm
        elif name == "linear":
            factor = jnp.where(step <= warmup, warm,
                               jnp.clip((decay_steps - after + 1.0) / decay_steps, 0.0, 1.0))
        elif name == "exponential":
            decays = jnp.floor((after - 1.0) / period)
            factor = jnp.where(step <= warmup, warm, sched.decay_rate ** decays)
        elif name == "inverse_sqrt":
            factor = jnp.where(step <= warmup, warm, jnp.sqrt(warmup / step))
        else:
            raise ValueError(f"unknown schedule {name!r}")
        return peak * factor

    return schedule


def _decay_mask(tree):
    """Weight decay on matrices and prompt tables, never on biases and norm scales (1-D)."""
    return jax.tree.map(lambda x: x.ndim >= 2, tree)


def _base_optimizer(config: ml_collections.ConfigDict, learning_rate: optax.Schedule):
    opt = config.optimizer
    if opt.name == "adamw":
        return optax.adamw(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=_decay_mask)
    if opt.name == "adam":
        return optax.adam(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.name == "adafactor":
        # Absolute learning rate (no scaling by the parameter's norm), as prompt-tuning recipes
        # use it (e.g. lr 0.3 for T5 soft prompts).
        return optax.adafactor(
            learning_rate, multiply_by_parameter_scale=False,
            momentum=opt.momentum or None,
            weight_decay_rate=opt.weight_decay or None, weight_decay_mask=_decay_mask,
        )
    if opt.name == "sgd":
        sgd = optax.sgd(learning_rate, momentum=opt.momentum or None)
        if opt.weight_decay:
            return optax.chain(optax.add_decayed_weights(opt.weight_decay, _decay_mask), sgd)
        return sgd
    raise ValueError(f"unknown optimizer {opt.name!r}")


@dataclasses.dataclass
class Optimizer:
    transform: optax.GradientTransformation
    schedules: dict[str, optax.Schedule]  # label -> learning-rate schedule (for logging)
    labels: dict  # label tree over the trainable params


def group_learning_rate(config: ml_collections.ConfigDict, group: str) -> float:
    value = config.optimizer.get(f"{group}_learning_rate") if group in GROUPS else None
    return config.optimizer.learning_rate if value is None else value


def build_optimizer(config: ml_collections.ConfigDict, trainable: dict,
                    is_trainable: Callable[[tuple[str, ...]], bool], *, total_steps: int,
                    steps_per_epoch: int, bank=None) -> Optimizer:
    """The gradient transformation for `trainable` (arrays or ShapeDtypeStructs).
    bank: the model's BankTraining (ptjax.prompts.banks), or None."""
    labels = label_tree(trainable, is_trainable, bank.is_bank_leaf if bank is not None else None)
    used = sorted(set(jax.tree.leaves(labels)) - {FROZEN})
    groups = sorted({label.removesuffix(BANKED) for label in used})
    schedules = {
        group: make_schedule(config, group_learning_rate(config, group), total_steps, steps_per_epoch)
        for group in groups
    }
    clip = config.optimizer.clip_norm

    def transform(label):
        if label.endswith(BANKED) and bank.learning_rates is not None:
            # Each entry its own peak rate (batched sweep variants), the config's schedule shape.
            return bank.wrap(lambda peak: _base_optimizer(
                config, make_schedule(config, peak, total_steps, steps_per_epoch)), clip)
        base = _base_optimizer(config, schedules[label.removesuffix(BANKED)])
        return bank.wrap(base, clip) if label.endswith(BANKED) else base

    guard = optax.multi_transform(
        {FROZEN: optax.set_to_zero(), **{g: optax.identity() for g in used}}, labels
    )
    update = optax.multi_transform({FROZEN: optax.set_to_zero(), **{g: transform(g) for g in used}}, labels)
    parts = [guard]
    if clip:
        shared = jax.tree.map(lambda label: not label.endswith(BANKED), labels)
        # Banked leaves are clipped entry by entry inside their transform.
        parts.append(optax.clip_by_global_norm(clip) if all(jax.tree.leaves(shared))
                     else optax.masked(optax.clip_by_global_norm(clip), shared))
    parts.append(update)
    return Optimizer(optax.chain(*parts), schedules, labels)
