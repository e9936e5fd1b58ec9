"""XLA's FLOP count of a train step, for plans (ptjax/planning.py) and the benchmarks.

    flops = cost_flops(step.jitted.lower(...))              # None where the backend has none
    flops = unrolled_flops(config, unrolled_model, batch, rng)  # every layer of a scanned stack
"""

from __future__ import annotations

import jax

from ptjax.training.engine import Engine
from ptjax.training.interfaces import Model
from ptjax.training.optimizer import build_optimizer


def cost_flops(compiled) -> float | None:
    """XLA's FLOP count of a lowered or compiled computation (multiply-add = 2), None when the
    backend has none. A scanned layer loop counts once: see unrolled_flops."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def unrolled_flops(config, model: Model, batch: dict, rng) -> float | None:
    """Cost analysis of the train step lowered (not compiled) with `model`, a build of the same
    experiment with model.scan_layers=False: every layer's FLOPs are counted."""
    engine = Engine(config, model)
    optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable, total_steps=1,
                                steps_per_epoch=1)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    frozen = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          engine.frozen_shapes, engine.frozen_shardings)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
    step = engine.compile_train_step(optimizer.transform, opt_shardings)
    with engine.activate():
        lowered = step.jitted.lower(engine.trainable_target(), frozen,
                                    engine.opt_state_target(optimizer.transform, opt_shardings), batch, rng)
    return cost_flops(lowered)
