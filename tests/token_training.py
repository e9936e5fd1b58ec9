"""A minimal trainer for formulation tests: featurize -> pipeline collate -> PromptModel.loss /
predict under jax.jit, on one CPU device, independent of the training loop under test elsewhere.

    params, before, after = train_and_measure(model, data, steps=20, learning_rate=1e-2)
    predictions = predict(model, params, data, "dev")
    metrics = data.evaluate("dev", predictions)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ptjax.data import pipeline


def init_params(model, seed: int = 0) -> dict:
    shapes, _ = model.abstract_params()
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return model.init_params(jax.random.PRNGKey(seed), jax.tree.map(lambda _: sharding, shapes))


def partition(model, params: dict) -> tuple[dict, dict]:
    flat = traverse_util.flatten_dict(params)
    trainable = {p: v for p, v in flat.items() if model.is_trainable(p)}
    frozen = {p: v for p, v in flat.items() if not model.is_trainable(p)}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge(trainable: dict, frozen: dict) -> dict:
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen),
                                         **traverse_util.flatten_dict(trainable)})


BUCKETS = (32, 64)  # few shapes: one compile per step function in most tests
# Tiny models run in milliseconds either way; XLA's backend optimizations would double the
# compile time that dominates these tests.
FAST_COMPILE = {"xla_backend_optimization_level": "0"}


def split_data(data, split: str) -> pipeline.SplitData:
    return pipeline.prepare_split(split, data.features(split), data.pad_values, data.length_groups, BUCKETS)


def _device(batch: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in batch.items()}


class Trainer:
    """Adam on the model's trainable parameters, one jitted step. Dropout is off by default:
    these tests check that the formulation learns, and a step without dropout compiles in half
    the time. `loss` runs the same compiled step with the update scaled to 0, so measuring a
    split's loss costs no second compile."""

    def __init__(self, model, data, *, learning_rate: float = 1e-2, batch_size: int = 8, dropout: bool = False):
        self.model, self.data, self.batch_size = model, data, batch_size
        optimizer = optax.adam(learning_rate)
        self.optimizer = optimizer

        @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
        def step(trainable, frozen, state, batch, rng, scale):
            def loss_fn(t):
                return model.loss(merge(t, frozen), batch, rng, train=dropout)

            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
            updates, state = optimizer.update(grads, state, trainable)
            updates = jax.tree.map(lambda u: u * scale, updates)
            return optax.apply_updates(trainable, updates), state, loss

        self.step = step

    def train(self, params: dict, *, steps: int, split: str = "train", seed: int = 0) -> tuple[dict, list[float]]:
        """(trained params, per-step losses)."""
        split_data_ = split_data(self.data, split)
        order = pipeline.TrainOrder(len(split_data_), self.batch_size, seed)
        trainable, frozen = partition(self.model, params)
        state = self.optimizer.init(trainable)
        losses = []
        for number in range(steps):
            rows = order.rows(number)
            batch = pipeline.collate(split_data_, rows, split_data_.batch_lengths(rows))
            trainable, state, loss = self.step(trainable, frozen, state, _device(batch), jax.random.PRNGKey(number),
                                               1.0)
            losses.append(float(loss))
        return merge(trainable, frozen), losses

    def loss(self, params: dict, split: str = "train") -> float:
        """Mean loss over every feature of `split`, comparable before and after training
        (unlike the losses of single shuffled batches)."""
        trainable, frozen = partition(self.model, params)
        state = self.optimizer.init(trainable)
        total = rows = 0.0
        for _, valid, batch in batches(self.data, split, self.batch_size):
            _, _, loss = self.step(trainable, frozen, state, _device(batch), jax.random.PRNGKey(0), 0.0)
            total += float(loss) * valid.sum()
            rows += valid.sum()
        return total / rows


def train_and_measure(model, data, *, steps: int, learning_rate: float) -> tuple[dict, float, float]:
    """(trained params, training-split loss before, after)."""
    trainer = Trainer(model, data, learning_rate=learning_rate)
    initial = init_params(model)
    before = trainer.loss(initial)
    params, _ = trainer.train(initial, steps=steps)
    return params, before, trainer.loss(params)


def batches(data, split: str, batch_size: int = 8):
    """(rows, valid, numpy batch) covering every feature of the split once."""
    split_data_ = split_data(data, split)
    for rows, valid, lengths in pipeline.eval_plan(split_data_, batch_size):
        yield rows, valid, pipeline.collate(split_data_, rows, lengths, valid)


def predict(model, params: dict, data, split: str, batch_size: int = 8) -> list[dict]:
    """Model.predict outputs per feature of `split`, in split order."""
    step = jax.jit(model.predict, compiler_options=FAST_COMPILE)
    predictions = [None] * len(data.features(split))
    for rows, valid, batch in batches(data, split, batch_size):
        outputs = jax.device_get(step(params, _device(batch)))
        for row, (index, ok) in enumerate(zip(rows, valid)):
            if ok:
                predictions[index] = {k: np.asarray(v[row]) for k, v in outputs.items()}
    return predictions
