"""LM adaptation (Lester et al. 2021 §3.1; PPT §4's "LM Adaption" baseline): continue training the
whole backbone on unlabeled text with a language-model objective for N steps, save it in the
format the loader reads, then prompt-tune from it.

    python main.py --config configs/lm_adaptation_t5.py --workdir runs/lm_adapted
    python main.py --config configs/ppt_t5xxl.py --workdir runs/pt_on_adapted \\
        --config.model.name=runs/lm_adapted/backbone

Objective. The corpus's documents are tokenized and packed into one stream (an EOS between
documents) cut into windows of `lm_adaptation.sequence_length - 1` tokens. T5 (seq2seq): T5's
prefix-LM objective, as Lester et al. adapt T5 - each window is split at a uniformly random point
(at least one token on each side); the encoder reads the prefix, the decoder predicts the rest
(both end with EOS). A causal LM: plain next-token prediction over the window. The loss is the
mean cross-entropy over predicted tokens.

Training: config.train.num_steps steps of config.train.batch_size windows (shuffled with
config.seed, reshuffled each pass over the corpus), config.optimizer and config.schedule (PPT
and Lester et al. used Adafactor for T5), every backbone parameter trained in float32 on the
config's mesh. DIR/metrics.jsonl gets the loss every train.log_every steps, DIR/results.json
the first and last losses, and DIR/backbone the adapted weights (ptjax/models/saving.py). One
process (any number of local devices); no mid-run checkpoint: an interrupted run starts over.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding

from ptjax.errors import InputError
from ptjax.models.loading import Backbone
from ptjax.prompts.word_init import corpus_texts
from ptjax.training import sharding as shard_lib
from ptjax.training.config import logical_axis_rules
from ptjax.training.optimizer import build_optimizer
from ptjax.training.reporting import write_json_atomic

log = logging.getLogger(__name__)

KINDS = ("seq2seq", "causal_lm")
IGNORE = -1  # label of padding: no loss


def token_windows(tokenizer, texts, window: int, eos_id: int) -> np.ndarray:
    """int32 [num_windows, window]: the documents' tokens, an EOS after each, packed and cut (the
    last partial window is dropped unless it is the only one, then it is kept padded with -1)."""
    stream: list[int] = []
    batch: list[str] = []

    def flush():
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos_id)
        batch.clear()

    for text in texts:
        if text.strip():
            batch.append(text)
        if len(batch) == 512:
            flush()
    if batch:
        flush()
    if len(stream) < 2:
        raise InputError("config.lm_adaptation.corpus: the corpus has no text")
    count = max(1, len(stream) // window)
    stream = stream[:count * window] + [IGNORE] * max(0, count * window - len(stream))
    return np.asarray(stream, np.int32).reshape(count, window)


def seq2seq_batch(windows: np.ndarray, rng: np.random.Generator, eos_id: int, pad_id: int,
                  start_id: int) -> dict[str, np.ndarray]:
    """Prefix-LM rows: [batch, window + 1] encoder ids / mask, decoder ids / mask and labels."""
    rows, width = windows.shape[0], windows.shape[1] + 1
    out = {name: np.full((rows, width), fill, np.int32) for name, fill in (
        ("input_ids", pad_id), ("attention_mask", 0), ("decoder_input_ids", pad_id),
        ("decoder_attention_mask", 0), ("labels", IGNORE))}
    for row, window in enumerate(windows):
        tokens = window[window != IGNORE]
        split = int(rng.integers(1, len(tokens))) if len(tokens) > 1 else 1
        prefix, target = list(tokens[:split]) + [eos_id], list(tokens[split:]) + [eos_id]
        out["input_ids"][row, :len(prefix)] = prefix
        out["attention_mask"][row, :len(prefix)] = 1
        out["labels"][row, :len(target)] = target
        out["decoder_input_ids"][row, :len(target)] = [start_id] + target[:-1]
        out["decoder_attention_mask"][row, :len(target)] = 1
    return out


def causal_batch(windows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """Next-token rows: [batch, window] ids / mask and labels (the next token, -1 at the end)."""
    valid = windows != IGNORE
    labels = np.full_like(windows, IGNORE)
    labels[:, :-1] = np.where(valid[:, 1:], windows[:, 1:], IGNORE)
    return {"input_ids": np.where(valid, windows, pad_id).astype(np.int32),
            "attention_mask": valid.astype(np.int32), "labels": labels}


def lm_loss(backbone: Backbone, params: dict, batch: dict, rng, *, train: bool) -> jax.Array:
    """Mean cross-entropy of the labelled tokens."""
    rngs = {"dropout": rng} if train else {}
    inputs = {k: batch[k] for k in ("decoder_input_ids", "decoder_attention_mask") if k in batch}
    out = backbone.module.apply({"params": params}, batch["input_ids"], batch["attention_mask"], **inputs,
                                deterministic=not train, rngs=rngs)
    labels = batch["labels"]
    mask = labels != IGNORE
    losses = optax.softmax_cross_entropy_with_integer_labels(out.logits.astype(jnp.float32), jnp.maximum(labels, 0))
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1)


def check_config(config: ml_collections.ConfigDict) -> None:
    if config.train.num_steps < 1:
        raise InputError("config.mode='lm_adapt' needs config.train.num_steps >= 1 (PPT: 10,000; Lester et al.: 100,000)")
    if config.model.dtype != "float32":
        raise InputError(f"config.mode='lm_adapt' trains the backbone: it needs config.model.dtype='float32', "
                         f"got {config.model.dtype!r} (use model.compute_dtype for bf16)")
    corpus = config.lm_adaptation.corpus
    if corpus and not Path(corpus).expanduser().is_file():
        raise InputError(f"config.lm_adaptation.corpus={corpus!r}: no such file")
    if config.lm_adaptation.sequence_length < 4:
        raise InputError(f"config.lm_adaptation.sequence_length={config.lm_adaptation.sequence_length}: must be >= 4")


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Adapt config.model.name for config.train.num_steps steps; returns results.json's content."""
    from ptjax.experiment import open_configured_backbone

    check_config(config)
    if jax.process_count() > 1:  # batches are placed from this host's memory (no per-host rows yet)
        raise InputError("config.mode='lm_adapt' runs in one process; start it without --distributed")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backbone = open_configured_backbone(config)
    if backbone.kind not in KINDS:
        raise InputError(f"config.mode='lm_adapt': {backbone.name} is a {backbone.kind} backbone; LM adaptation "
                         f"needs a seq2seq (T5) or causal LM")
    tokenizer = backbone.tokenizer
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise InputError(f"config.mode='lm_adapt': {backbone.name}'s tokenizer has no EOS token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    windows = token_windows(tokenizer, corpus_texts(config.lm_adaptation.corpus, config.data_dir),
                            config.lm_adaptation.sequence_length - 1, eos_id)

    mesh = shard_lib.build_mesh(config)
    rules = logical_axis_rules(config)
    shardings = shard_lib.param_shardings(mesh, rules, backbone.shapes, backbone.logical_axes)
    params = backbone.load_weights(shardings).params
    backbone.params = None  # the trained copy below is the only one kept
    optimizer = build_optimizer(config, {"backbone": params}, lambda path: True,
                                total_steps=config.train.num_steps,
                                steps_per_epoch=max(1, len(windows) // config.train.batch_size)).transform
    train = bool(config.train.dropout)

    @jax.jit
    def init_opt(params):
        return optimizer.init({"backbone": params})

    def step(params, opt_state, batch, rng):
        loss, grads = jax.value_and_grad(lambda p: lm_loss(backbone, p, batch, rng, train=train))(params)
        updates, opt_state = optimizer.update({"backbone": grads}, opt_state, {"backbone": params})
        return optax.apply_updates(params, updates["backbone"]), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    opt_state = init_opt(params)
    data_rng = np.random.default_rng(config.seed)
    key = jax.random.PRNGKey(config.seed)
    seq2seq = backbone.kind == "seq2seq"
    start_id = getattr(backbone.config, "decoder_start_token_id", pad_id)
    batch_sharding = NamedSharding(mesh, shard_lib.batch_spec(rules, 2))
    order, cursor = data_rng.permutation(len(windows)), 0
    losses, log_path = [], workdir / "metrics.jsonl"
    started = time.time()
    with open(log_path, "a", buffering=1) as metrics:
        for number in range(1, config.train.num_steps + 1):
            rows = []
            while len(rows) < config.train.batch_size:  # a pass over the corpus, then a new order
                if cursor == len(order):
                    order, cursor = data_rng.permutation(len(windows)), 0
                take = min(config.train.batch_size - len(rows), len(order) - cursor)
                rows.extend(order[cursor:cursor + take])
                cursor += take
            chosen = windows[np.asarray(rows)]
            batch = seq2seq_batch(chosen, data_rng, eos_id, pad_id, start_id) if seq2seq else causal_batch(chosen, pad_id)
            batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
            params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, number))
            if number == 1 or number % config.train.log_every == 0 or number == config.train.num_steps:
                value = float(loss)
                if not np.isfinite(value):
                    raise InputError(f"config.mode='lm_adapt': the loss is {value} at step {number}; lower "
                                     f"config.optimizer.learning_rate")
                losses.append((number, value))
                metrics.write(json.dumps({"kind": "train", "step": number, "loss": value}) + "\n")
                log.info("lm_adapt step %d: loss %.4f", number, value)
    from ptjax.models.saving import save_backbone

    out = save_backbone(backbone, params, workdir / "backbone", provenance={
        "made_by": "ptjax lm_adapt", "objective": "prefix_lm" if seq2seq else "next_token",
        "steps": config.train.num_steps, "corpus": config.lm_adaptation.corpus or "local_corpus",
        "sequence_length": config.lm_adaptation.sequence_length, "seed": config.seed})
    results = {"mode": "lm_adapt", "backbone": backbone.name, "adapted_backbone": str(out),
               "objective": "prefix_lm" if seq2seq else "next_token", "steps": config.train.num_steps,
               "windows": len(windows), "trainable_params": backbone.num_params(), "first_loss": losses[0][1], "last_loss": losses[-1][1],
               "seconds": round(time.time() - started, 1), "config": config.to_dict()}
    write_json_atomic(workdir / "results.json", results)
    return results
