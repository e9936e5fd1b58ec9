"""What the training engine needs from a method ("Model") and a task ("TaskData").

The engine (ptjax.training) knows nothing else about either: `ptjax.experiment.build(config)`
pairs one Model with one TaskData, and the engine trains, evaluates, checkpoints and exports.

Parameter trees are nested dicts with string keys. A path is the tuple of keys from the root to
a leaf, e.g. ("prompt", "embedding") or ("backbone", "layers", "query", "kernel").
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

Params = dict
Batch = dict  # field name -> array with a leading batch axis
Feature = dict  # field name -> np.ndarray | int | float, one example


@runtime_checkable
class Model(Protocol):
    """A method on a backbone: its parameters, which of them train, its loss and predictions.

    The full parameter tree is {"backbone": ..., "prompt": ..., "head": ...}; a method may omit
    groups it does not have. The engine splits it into a trainable and a frozen tree with
    `is_trainable`, differentiates only the trainable one, keeps trainable params and optimizer
    state in float32, and passes the merged tree back to `loss` / `predict`. Optimizer groups
    (for per-group learning rates) are the top-level keys.
    """

    fingerprint: str
    """The backbone's fingerprint (Backbone.fingerprint from load_backbone); prompt exports carry
    it so that a prompt is never restored onto another backbone. Read only after init_params."""

    def abstract_params(self) -> tuple[Params, Params]:
        """(shapes, logical_axes) of the full params tree, without reading weights.

        shapes: jax.ShapeDtypeStruct per leaf (the dtype the leaf will have).
        logical_axes: jax.sharding.PartitionSpec of logical axis names per leaf (names from
          ptjax.models.layers, plus "prompt" for prompt-length axes), used to shard it.
        """
        ...

    def init_params(self, rng: jax.Array, shardings: Params) -> Params:
        """Materialize the full params tree, each leaf placed by `shardings` (a NamedSharding
        tree matching abstract_params). The backbone part is read from its checkpoint straight
        into its shards (load_backbone(..., shardings=shardings["backbone"]))."""
        ...

    def is_trainable(self, path: tuple[str, ...]) -> bool:
        """Whether the leaf at `path` trains (the method's label function)."""
        ...

    def loss(self, params: Params, batch: Batch, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        """(scalar float32 loss, {name: scalar float32} auxiliary metrics).

        batch: the task's fields padded to bucket lengths, plus "valid" (bool [batch], False on
          padding rows) and "index" (int32 [batch], the example's position in its split, -1 on
          padding). The loss must ignore rows with valid=False.
        rng: dropout key for this step (and microbatch); use it only when `train` is True.
        train: True in training steps with dropout on (config.train.dropout).

        The loss should be a mean over the batch (rows or tokens). With gradient accumulation
        the engine averages microbatch losses and gradients; to weight microbatches exactly
        (e.g. a mean over a varying number of tokens), put the denominator in aux["weight"]
        and the engine uses sum(loss_i * weight_i) / sum(weight_i).
        """
        ...

    def predict(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        """Per-example outputs {name: [batch, ...]} (e.g. predicted label ids, scores)."""
        ...

    def export_metadata(self) -> dict[str, Any]:
        """JSON-able description of the method and prompt (config values, template, label words),
        written into prompt-only exports next to the trainable params."""
        ...


@runtime_checkable
class TaskData(Protocol):
    """A task's examples as model inputs, and its metrics.

    A feature is a dict of numpy arrays and Python scalars. Fields named in `pad_values` are
    variable-length sequences: the engine pads them on their last axis with that value to a
    bucket length. Every other field has the same shape in every example of a split.
    """

    pad_values: dict[str, int | float]
    """Sequence field -> padding value (e.g. {"input_ids": pad_id, "attention_mask": 0})."""

    length_groups: dict[str, str]
    """Sequence field -> length group (e.g. "length" for encoder fields, "target_length" for
    decoder fields). Fields of one group share a padded length; each group is bucketed on its
    own. Fields not listed belong to the group "length"."""

    primary_metric: str
    """The metric that selects the best checkpoint when config.train.best_metric is empty."""

    # Optional: `cache_key: str`, identifying the data files and tokenization (e.g. a hash of
    # file sizes and mtimes). The engine caches features(split) in DIR/cache under a key of the
    # config (model, task, method, prompt, head sections) plus this; delete DIR/cache after
    # changing data files in place when the task has no cache_key.

    def features(self, split: str) -> list[Feature]:
        """Tokenized examples of `split` (already limited to config.task.max_*_examples)."""
        ...

    def evaluate(self, split: str, predictions: list[dict[str, np.ndarray]]) -> dict[str, float]:
        """Metrics of `split`; predictions[i] holds Model.predict's outputs for features(split)[i]."""
        ...
