"""The train step and the eval step: pure functions of (trainable, frozen, ...), jitted once.

    step(trainable, frozen, opt_state, batch, rng) -> (trainable, opt_state, metrics)

Gradients are taken with respect to `trainable` only; the frozen tree is an input like the batch
(no gradient buffers, no optimizer state). The two trees are disjoint parts of the model's
params tree and are merged inside the step. A step whose loss or new params are not finite
leaves the state unchanged and reports metrics["nonfinite"] = 1, so a saved checkpoint is
always a good one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from jax.sharding import NamedSharding

from ptjax.training.interfaces import Model

WEIGHT = "weight"


def split_params(params: dict, is_trainable: Callable[[tuple[str, ...]], bool]) -> tuple[dict, dict]:
    """(trainable, frozen): two nested dicts holding the leaves of params, disjointly."""
    flat = traverse_util.flatten_dict(params)
    trainable = {p: v for p, v in flat.items() if is_trainable(p)}
    frozen = {p: v for p, v in flat.items() if not is_trainable(p)}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge_params(trainable: dict, frozen: dict) -> dict:
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(trainable))
    return traverse_util.unflatten_dict(flat)


def as_float32(tree: Any) -> Any:
    """Floating leaves in float32 (trainable params and optimizer state are kept in float32)."""
    def cast(x):
        if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32:
            if isinstance(x, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding)
            return x.astype(jnp.float32)
        return x
    return jax.tree.map(cast, tree)


def microbatches(batch: dict, count: int) -> dict:
    """[B, ...] -> [count, B / count, ...], microbatch i holding rows i, i + count, ...

    Interleaving keeps every microbatch spread evenly over the data-parallel devices (each
    device's contiguous block of rows contributes to every microbatch)."""
    def split(x):
        rows = x.shape[0] // count
        return jnp.swapaxes(x.reshape((rows, count) + x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_train_step(model: Model, optimizer: optax.GradientTransformation, *,
                    grad_accum_steps: int = 1, dropout: bool = True):
    """The (un-jitted) train step; see the module docstring."""

    def loss_fn(trainable, frozen, batch, rng):
        loss, aux = model.loss(merge_params(trainable, frozen), batch, rng, train=dropout)
        return loss.astype(jnp.float32), aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def weighted(loss, aux, grads):
        weight = jnp.asarray(aux.get(WEIGHT, 1.0), jnp.float32)
        aux = {k: jnp.asarray(v, jnp.float32) * weight for k, v in aux.items() if k != WEIGHT}
        return loss * weight, aux, jax.tree.map(lambda g: g.astype(jnp.float32) * weight, grads), weight

    def accumulated(trainable, frozen, batch, rng):
        if grad_accum_steps == 1:
            (loss, aux), grads = grad_fn(trainable, frozen, batch, rng)
            aux = {k: jnp.asarray(v, jnp.float32) for k, v in aux.items() if k != WEIGHT}
            return loss, aux, jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        micro = microbatches(batch, grad_accum_steps)
        first = jax.tree.map(lambda x: x[0], micro)
        aux_shape = jax.eval_shape(lambda: grad_fn(trainable, frozen, first, rng)[0][1])
        zeros = (
            jnp.float32(0.0),
            {k: jnp.float32(0.0) for k in aux_shape if k != WEIGHT},
            jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable),
            jnp.float32(0.0),
        )

        def body(carry, inputs):
            index, mb = inputs
            (loss, aux), grads = grad_fn(trainable, frozen, mb, jax.random.fold_in(rng, index))
            parts = weighted(loss, aux, grads)
            return jax.tree.map(jnp.add, carry, parts), None

        (loss, aux, grads, total), _ = jax.lax.scan(
            body, zeros, (jnp.arange(grad_accum_steps), micro)
        )
        scale = 1.0 / total
        return loss * scale, {k: v * scale for k, v in aux.items()}, jax.tree.map(lambda g: g * scale, grads)

    bank = getattr(model, "bank", None)  # a prompt bank trained entry by entry (ptjax.prompts.banks)
    # A batched sweep job's model (ptjax/training/variants.py) also logs each variant's own norm.
    variant_grad_norms = getattr(model, "variant_grad_norms", None)

    def step(trainable, frozen, opt_state, batch, rng):
        extra = {}
        if bank is not None:  # per-entry loss weights; which entries have rows, for the optimizer
            batch, extra = bank.prepare(batch, grad_accum_steps)
        loss, aux, grads = accumulated(trainable, frozen, batch, rng)
        updates, new_opt_state = optimizer.update(grads, opt_state, trainable, **extra)
        if bank is not None:  # the loss summed the entries' means: log their mean
            loss_to_log = loss / jnp.maximum(jnp.sum(extra["entry_has_examples"]), 1)
        else:
            loss_to_log = loss
        new_trainable = optax.apply_updates(trainable, updates)
        finite = jnp.isfinite(loss) & _all_finite(new_trainable)
        keep = lambda new, old: jnp.where(finite, new, old)
        new_trainable = jax.tree.map(keep, new_trainable, trainable)
        new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        metrics = {
            "loss": loss_to_log,
            "grad_norm": optax.global_norm(grads),
            "nonfinite": (~finite).astype(jnp.float32),
            **aux,
        }
        if variant_grad_norms is not None:
            metrics["variant_grad_norm"] = variant_grad_norms(grads)
        return new_trainable, new_opt_state, metrics

    return step


# XLA:CPU by default pulls the elementwise work around a product (the GELU and LayerNorm
# gradients, dtype conversions) into the YNNPACK kernel that runs the product, which then gets
# broadcast constants as whole tensors and makes a pass over memory per operation. Around bf16
# products its own loop fusions do that work faster: MiniLM Lester bf16 steps of 1.27-1.31 s
# against 1.40-1.43 on a 2-core EPYC (BENCHMARKS.md "bf16 compute"). Float32 train steps measured
# 4% slower with it, and bf16 forward passes (eval) the same or 5% slower: those keep the default.
# XLA:CPU also splits each reduction longer than 32 into windows of 32 and a reduction of their
# sums (its tree reduction rewriter), for the accuracy of long float sums; those window loops cost
# the bf16 MiniLM step 6-10% (1.06-1.14 against 1.17-1.21 s). A bf16 step's reductions are
# float32: norm statistics and softmax rows (hundreds of terms) and at most a vocabulary-size
# softmax (LAMA's loss: a float32 sum of 49,152 terms measured 4e-5 relative off), all below the
# bf16 rounding of the products that feed them.
CPU_BF16_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xla_disable_hlo_passes": "tree_reduction_rewriter",  # float32 steps: 1.85 vs 1.88 s, not applied
}


def step_compiler_options(compute_dtype) -> dict | None:
    """XLA options for the train step of a backbone computing in `compute_dtype` on the default
    backend."""
    if jax.default_backend() == "cpu" and jnp.dtype(compute_dtype) == jnp.bfloat16:
        return CPU_BF16_COMPILER_OPTIONS
    return None


def jit_train_step(step, *, trainable: dict, frozen: dict, opt_state: Any, batch: NamedSharding | dict,
                   replicated: NamedSharding, compiler_options: dict | None = None):
    """jit with explicit in/out shardings; trainable and opt_state buffers are donated.

    Each argument is the NamedSharding tree (or prefix) of the corresponding input."""
    return jax.jit(
        step,
        in_shardings=(trainable, frozen, opt_state, batch, replicated),
        out_shardings=(trainable, opt_state, replicated),
        donate_argnums=(0, 2),
        compiler_options=compiler_options,
    )


def make_eval_step(model: Model):
    def predict(trainable, frozen, batch):
        return model.predict(merge_params(trainable, frozen), batch)
    return predict


def jit_eval_step(predict, *, trainable: dict, frozen: dict, batch: NamedSharding | dict):
    return jax.jit(predict, in_shardings=(trainable, frozen, batch))


def step_rng(base: jax.Array, step: int) -> jax.Array:
    """The dropout key of a step: a pure function of the run's key and the step number."""
    return jax.random.fold_in(base, step)
