"""A small real experiment for engine tests: a frozen tiny BERT, a trainable soft prompt
inserted after [CLS] through inputs_embeds, a trainable linear head on [CLS], and a synthetic
classification task (label = parity of the first real token, learnable from the input).

It implements ptjax.training.interfaces.Model / TaskData independently of ptjax.methods and
ptjax.tasks, so the engine is tested on its own. tests/toy_run.py runs it in a subprocess.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.models.loading import open_backbone

NUM_LABELS = 2


class SoftPromptClassifier:
    """Model protocol: {"backbone": frozen BERT, "prompt": {"embedding"}, "head": {"kernel", "bias"}}."""

    def __init__(self, model_dir, *, prompt_length: int = 4, dtype: str = "float32",
                 train_backbone: bool = False, scan_layers: bool = True, remat_policy: str = "none",
                 trace_counter: list | None = None):
        self.model_dir = str(model_dir)
        self.prompt_length = prompt_length
        self.dtype = dtype
        self.train_backbone = train_backbone
        self.scan_layers, self.remat_policy = scan_layers, remat_policy
        self.backbone = open_backbone(self.model_dir, dtype=jnp.dtype(dtype), scan_layers=scan_layers,
                                      remat_policy=remat_policy, with_tokenizer=False)
        self.module = self.backbone.module
        self.hidden = self.backbone.config.hidden_size
        self.trace_counter = trace_counter

    def abstract_params(self):
        P = jax.sharding.PartitionSpec
        shapes = {
            "backbone": self.backbone.shapes,
            "prompt": {"embedding": jax.ShapeDtypeStruct((self.prompt_length, self.hidden), jnp.float32)},
            "head": {"kernel": jax.ShapeDtypeStruct((self.hidden, NUM_LABELS), jnp.float32),
                     "bias": jax.ShapeDtypeStruct((NUM_LABELS,), jnp.float32)},
        }
        axes = {
            "backbone": self.backbone.logical_axes,
            "prompt": {"embedding": P("prompt", "embed")},
            "head": {"kernel": P("embed", None), "bias": P(None)},
        }
        return shapes, axes

    def init_params(self, rng, shardings):
        backbone = self.backbone.load_weights(shardings["backbone"])
        prompt_rng, head_rng = jax.random.split(rng)
        prompt = 0.5 * jax.random.normal(prompt_rng, (self.prompt_length, self.hidden), jnp.float32)
        kernel = 0.1 * jax.random.normal(head_rng, (self.hidden, NUM_LABELS), jnp.float32)
        return {
            "backbone": backbone.params,
            "prompt": {"embedding": jax.device_put(prompt, shardings["prompt"]["embedding"])},
            "head": {"kernel": jax.device_put(kernel, shardings["head"]["kernel"]),
                     "bias": jax.device_put(jnp.zeros((NUM_LABELS,)), shardings["head"]["bias"])},
        }

    @property
    def fingerprint(self):
        return self.backbone.fingerprint  # known once the weights are read

    def is_trainable(self, path):
        return self.train_backbone or path[0] in ("prompt", "head")

    def _logits(self, params, batch, rng, train):
        if self.trace_counter is not None:
            self.trace_counter.append(tuple(batch["input_ids"].shape))
        variables = {"params": params["backbone"]}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = self.module.apply(variables, ids, method=self.module.embed_tokens)
        batch_size = ids.shape[0]
        prompt = jnp.broadcast_to(params["prompt"]["embedding"].astype(embeds.dtype),
                                  (batch_size, self.prompt_length, self.hidden))
        inputs = jnp.concatenate([embeds[:, :1], prompt, embeds[:, 1:]], axis=1)
        mask = jnp.concatenate([mask[:, :1], jnp.ones((batch_size, self.prompt_length), mask.dtype),
                                mask[:, 1:]], axis=1)
        out = self.module.apply(variables, inputs_embeds=inputs, attention_mask=mask, compute_logits=False,
                                deterministic=not train, rngs={"dropout": rng} if train else {})
        cls = out.last_hidden_state[:, 0].astype(jnp.float32)
        return cls @ params["head"]["kernel"] + params["head"]["bias"]

    def loss(self, params, batch, rng, *, train):
        logits = self._logits(params, batch, rng, train)
        log_probs = jax.nn.log_softmax(logits)
        picked = jnp.take_along_axis(log_probs, batch["label"][:, None], axis=1)[:, 0]
        valid = batch["valid"].astype(jnp.float32)
        count = jnp.maximum(valid.sum(), 1.0)
        loss = -(picked * valid).sum() / count
        if "poison" in batch:  # NaN in the data makes the loss NaN (divergence tests)
            loss = loss + 0.0 * batch["poison"].sum()
        accuracy = ((jnp.argmax(logits, -1) == batch["label"]) * valid).sum() / count
        return loss, {"accuracy": accuracy}

    def predict(self, params, batch):
        logits = self._logits(params, batch, None, False)
        return {"label": jnp.argmax(logits, -1), "index": batch["index"]}

    def export_metadata(self):
        return {"method": "toy_soft_prompt", "prompt_length": self.prompt_length}


class ParityTask:
    """TaskData protocol: random token sequences, label = parity of the first real token."""

    pad_values: ClassVar[dict] = {"input_ids": 0, "attention_mask": 0}
    length_groups: ClassVar[dict] = {}
    primary_metric = "accuracy"

    def __init__(self, sizes: dict[str, int], *, min_length: int = 3, max_length: int = 20,
                 vocab: int = 100, poison: dict[str, int] | None = None, seed: int = 0):
        self.sizes, self.min_length, self.max_length, self.vocab = sizes, min_length, max_length, vocab
        self.poison, self.seed = poison or {}, seed
        self.feature_calls: list[str] = []

    def features(self, split):
        self.feature_calls.append(split)
        rng = np.random.default_rng([self.seed, sum(map(ord, split))])
        out = []
        for i in range(self.sizes[split]):
            length = int(rng.integers(self.min_length, self.max_length + 1))
            ids = rng.integers(5, self.vocab, size=length).astype(np.int32)
            ids[0] = 2  # a fixed [CLS]-like first token
            feature = {"input_ids": ids, "attention_mask": np.ones(length, np.int32),
                       "label": int(ids[1] % 2)}
            if self.poison:
                feature["poison"] = np.float32(np.nan if self.poison.get(split) == i else 0.0)
            out.append(feature)
        return out

    def evaluate(self, split, predictions):
        labels = np.array([f["label"] for f in self.features(split)])
        predicted = np.array([p["label"] for p in predictions])
        indices = np.array([p["index"] for p in predictions])
        return {"accuracy": float((predicted == labels).mean()), "count": float(len(predictions)),
                "indices_in_order": float(np.array_equal(indices, np.arange(len(labels))))}


def toy_config(model_dir, data_dir, **overrides):
    """The base config set up for the toy experiment; overrides like {"train.num_steps": 3}."""
    from configs import base

    config = base.get_config()
    config.model.name = str(model_dir)
    config.data_dir = str(data_dir)
    config.task.name = "toy_parity"
    config.task.length_buckets = (8, 16, 32)
    config.task.eval_splits = ("validation",)
    config.prompt.length = 4
    config.optimizer.learning_rate = 1e-2
    config.train.batch_size = 8
    config.train.eval_batch_size = 8
    config.train.num_steps = 3
    config.train.log_every = 1
    config.train.dropout = False
    config.checkpoint.every_steps = 0
    config.logging.progress = False
    config.logging.tensorboard = False
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def build(config, *, sizes=None, poison=None, trace_counter=None):
    model = SoftPromptClassifier(
        config.model.name, prompt_length=config.prompt.length, dtype=config.model.dtype,
        train_backbone=config.method.train_backbone or config.method.name == "fine_tune",
        scan_layers=config.model.scan_layers, remat_policy=config.model.remat_policy,
        trace_counter=trace_counter)
    data = ParityTask(sizes or {"train": 64, "validation": 20}, poison=poison)
    return model, data


def prepared(config, model, data, *, devices=None, total_steps: int = 10):
    """(engine, trainable, frozen, opt_state, jitted step, list of the first batches' arrays):
    the pieces of a training run without the loop, for step-level tests."""
    from ptjax.data import pipeline
    from ptjax.training.engine import Engine
    from ptjax.training.optimizer import build_optimizer

    engine = Engine(config, model, devices=devices)
    trainable, frozen = engine.init_params(jax.random.PRNGKey(config.seed))
    optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable,
                                total_steps=total_steps, steps_per_epoch=5)
    opt_shardings = engine.opt_state_shardings(optimizer.transform)
    opt_state = engine.init_opt_state(optimizer.transform, trainable, opt_shardings)
    step = engine.compile_train_step(optimizer.transform, opt_shardings)
    split = pipeline.prepare_split("train", data.features("train"), data.pad_values, data.length_groups,
                                   tuple(config.task.length_buckets))
    order = pipeline.TrainOrder(len(split), config.train.batch_size, config.seed)
    batch_size = config.train.batch_size
    batches = [b.arrays for b in pipeline.train_batches(
        split, order, start_step=0, stop_step=total_steps, host_range=engine.host_rows(batch_size),
        to_device=engine.to_device(batch_size))]
    return engine, trainable, frozen, opt_state, step, batches
