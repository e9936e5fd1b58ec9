"""One model on one mesh: shardings, parameter init and split, batch placement, compiled steps.

Shared by training (ptjax.training.loop), evaluation and the benchmark (ptjax.benchmarks.train_step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ptjax.data import pipeline
from ptjax.errors import InputError
from ptjax.training import sharding as shd
from ptjax.training.config import compute_dtype, logical_axis_rules
from ptjax.training.interfaces import Model
from ptjax.training.step import (
    as_float32,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    make_train_step,
    split_params,
    step_compiler_options,
)


class Engine:
    """Mesh, logical rules and the shardings of one model's params and batches."""

    def __init__(self, config: ml_collections.ConfigDict, model: Model, *, devices: list | None = None):
        self.config = config
        self.model = model
        self.mesh = shd.build_mesh(config, devices)
        self.rules = logical_axis_rules(config)
        shapes, logical = model.abstract_params()
        self.shapes = shapes
        self.shardings = shd.param_shardings(self.mesh, self.rules, shapes, logical)
        self.trainable_shapes, self.frozen_shapes = split_params(shapes, model.is_trainable)
        self.trainable_shapes = as_float32(self.trainable_shapes)
        self.trainable_shardings, self.frozen_shardings = split_params(self.shardings, model.is_trainable)
        self.replicated = shd.replicated(self.mesh)
        self.batch_sharding = jax.sharding.NamedSharding(self.mesh, shd.batch_spec(self.rules, 1))
        self.train_compiler_options = step_compiler_options(compute_dtype(config))

    # ---------------------------------------------------------------- parameters

    def init_params(self, rng: jax.Array) -> tuple[dict, dict]:
        """(trainable in float32, frozen) materialized on the mesh."""
        params = self.model.init_params(rng, self.shardings)
        trainable, frozen = split_params(params, self.model.is_trainable)
        if not jax.tree.leaves(trainable) and self.config.mode == "train":
            raise InputError(
                f"config.method.name={self.config.method.name!r} leaves no parameter trainable; "
                f"nothing to train (use --config.mode=eval)"
            )
        return as_float32(trainable), frozen

    def trainable_target(self) -> dict:
        """Abstract trainable tree with shardings (restore target)."""
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            self.trainable_shapes, self.trainable_shardings)

    def opt_state_shardings(self, transform) -> Any:
        abstract = jax.eval_shape(transform.init, self.trainable_shapes)
        return shd.opt_state_shardings(abstract, self.trainable_shardings, self.trainable_shapes, self.mesh)

    def init_opt_state(self, transform, trainable: dict, opt_shardings: Any) -> Any:
        return jax.jit(transform.init, in_shardings=(self.trainable_shardings,),
                       out_shardings=opt_shardings)(trainable)

    def opt_state_target(self, transform, opt_shardings: Any) -> Any:
        abstract = jax.eval_shape(transform.init, self.trainable_shapes)
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            abstract, opt_shardings)

    # ---------------------------------------------------------------- batches

    def host_rows(self, global_batch: int) -> tuple[int, int]:
        return shd.host_rows(self.mesh, self.rules, global_batch)

    def to_device(self, global_size: int):
        """local numpy batch -> global arrays sharded over the batch axes."""
        shardings: dict = {}

        def put(local: dict) -> dict:
            for key, value in local.items():
                if key not in shardings:
                    shardings[key] = jax.sharding.NamedSharding(
                        self.mesh, shd.batch_spec(self.rules, np.ndim(value)))
            return shd.global_batch(local, shardings, global_size)

        return put

    def gather(self, tree: Any) -> Any:
        """Global arrays -> full numpy arrays on every process."""
        if jax.process_count() > 1:
            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree.map(np.asarray, jax.device_get(tree))

    # ---------------------------------------------------------------- steps

    def compile_train_step(self, transform, opt_shardings: Any):
        step = make_train_step(
            self.model, transform, grad_accum_steps=self.config.optimizer.grad_accum_steps,
            dropout=self.config.train.dropout,
        )
        return self._activated(jit_train_step(
            step, trainable=self.trainable_shardings, frozen=self.frozen_shardings, opt_state=opt_shardings,
            batch=self.batch_sharding, replicated=self.replicated, compiler_options=self.train_compiler_options))

    def compile_eval_step(self):
        return self._activated(jit_eval_step(make_eval_step(self.model), trainable=self.trainable_shardings,
                                             frozen=self.frozen_shardings, batch=self.batch_sharding))

    def _activated(self, jitted):
        """Call `jitted` with the mesh and rules active, so that tracing (on the first call per
        batch shape) sees them; `.jitted` is the jax.jit object (lower/compile for the bench)."""
        def call(*args):
            with self.activate():
                return jitted(*args)
        call.jitted = jitted
        return call

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Mesh and logical-axis rules for tracing: the models' activation sharding constraints
        (nn.with_logical_constraint) resolve against them."""
        flax_rules = tuple(
            (name, None if not axes else axes[0] if len(axes) == 1 else axes) for name, axes in self.rules
        )
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(flax_rules):
            yield

    # ---------------------------------------------------------------- evaluation

    def predict_split(self, eval_step, trainable: dict, frozen: dict, split: pipeline.SplitData,
                      batch_size: int) -> list[dict[str, np.ndarray]]:
        """Model.predict outputs for every example of `split`, in split order."""
        predictions: list[dict | None] = [None] * len(split)
        batches = pipeline.eval_batches(split, batch_size, host_range=self.host_rows(batch_size),
                                        to_device=self.to_device(batch_size))
        with pipeline.Prefetch(batches) as prefetched:
            for batch in prefetched:
                outputs = self.gather(eval_step(trainable, frozen, batch.arrays))
                for row, (index, valid) in enumerate(zip(batch.rows, batch.valid)):
                    if valid:
                        predictions[index] = {k: v[row] for k, v in outputs.items()}
        missing = [i for i, p in enumerate(predictions) if p is None]
        if missing:
            raise RuntimeError(f"split {split.name!r}: no prediction for examples {missing[:10]}")
        return predictions
