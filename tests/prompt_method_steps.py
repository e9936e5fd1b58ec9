"""A few training steps of a method (Lester prompt tuning, P-tuning v2) on a loaded backbone
through the normal path: build_prompt_model -> PromptModel.loss, with a sequence-classification
head, one jitted Adam step on the trainable groups with dropout on.

    before, after = eval_loss_before_and_after(backbone, "ptuning_v2")
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

SENTENCES = ["the capital of france is paris .", "a man is playing a guitar in the park today ."]
SOFT_TOKENS = 4
# Compiling dominates; XLA's backend optimizations would double it for tiny models.
FAST_COMPILE = {"xla_backend_optimization_level": "0"}


def _config(method: str):
    from ptjax.configs import base

    config = base.get_config()
    config.method.name = method
    config.prompt.length = SOFT_TOKENS
    config.prompt.deep.length = 3
    return config


def _batch(tokenizer, soft: bool) -> dict:
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)
    soft_index = np.full(ids.shape, -1, np.int32)
    if soft:  # Lester: the soft prompt opens the input ([P*4] {text})
        batch = ids.shape[0]
        ids = np.concatenate([np.full((batch, SOFT_TOKENS), tokenizer.unk_token_id, np.int32), ids], 1)
        mask = np.concatenate([np.ones((batch, SOFT_TOKENS), np.int32), mask], 1)
        soft_index = np.concatenate([np.tile(np.arange(SOFT_TOKENS, dtype=np.int32), (batch, 1)), soft_index], 1)
    return {"input_ids": ids, "attention_mask": mask, "soft_index": soft_index,
            "label": np.array([0, 1], np.int32), "valid": np.array([True, True])}


def eval_loss_before_and_after(backbone, method: str, *, steps: int = 4, learning_rate: float = 0.01):
    """(evaluation loss before, after `steps` training steps, trainable leaves before, after)."""
    from ptjax.heads.linear import SequenceClassifier
    from ptjax.methods.methods import build_prompt_model
    from ptjax.prompts.templates import parse_template

    soft = method == "lester"
    template = parse_template(f"[P*{SOFT_TOKENS}] {{text}}" if soft else "{text}")
    head = SequenceClassifier((2,), dropout=0.0, pooling="mean")  # Lester's first token is a soft one
    model = build_prompt_model(_config(method), backbone, head, template, {})
    own, _ = model._init_own(jax.random.key(0))
    params = {"backbone": backbone.params, **own}
    flat = traverse_util.flatten_dict(params)
    trainable = traverse_util.unflatten_dict({p: v for p, v in flat.items() if model.is_trainable(p)})
    frozen = traverse_util.unflatten_dict({p: v for p, v in flat.items() if not model.is_trainable(p)})
    assert set(trainable) == {"prompt", "head"}
    batch = {k: jnp.asarray(v) for k, v in _batch(backbone.tokenizer, soft).items()}
    optimizer = optax.adam(learning_rate)

    def merged(t):
        return {**frozen, **t}

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(trainable, state, key):
        loss, grads = jax.value_and_grad(lambda t: model.loss(merged(t), batch, key, train=True)[0])(trainable)
        updates, state = optimizer.update(grads, state, trainable)
        return optax.apply_updates(trainable, updates), state, loss

    evaluate = jax.jit(compiler_options=FAST_COMPILE)(lambda t: model.loss(merged(t), batch, None, train=False)[0])
    before, initial = float(evaluate(trainable)), trainable
    state = optimizer.init(trainable)
    for number in range(steps):
        trainable, state, loss = step(trainable, state, jax.random.key(number))
        assert np.isfinite(float(loss))
    return before, float(evaluate(trainable)), initial, trainable
