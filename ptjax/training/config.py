"""Checks on a config before anything is built or compiled, and small readers of config values.

Every problem is an InputError naming the key (`config.train.batch_size`) and what is wrong, so
main.py can print one line.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import ml_collections

from ptjax.errors import InputError
from ptjax.models.products import native_bf16_products

MODES = ("train", "eval", "sweep", "plan", "lm_adapt")
METHODS = ("fine_tune", "manual", "lester", "ptuning", "ptuning_v2")
OPTIMIZERS = ("adamw", "adam", "adafactor", "sgd")
SCHEDULES = ("constant", "linear", "exponential", "inverse_sqrt")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MESH_AXES = ("data", "fsdp", "tensor")
PROMPT_ENCODERS = ("none", "mlp", "lstm")
PROMPT_INITS = ("random", "vocab", "text", "label_words", "frequent_words", "task_words", "pretrained")
LABEL_INIT_FILLS = ("cycle", "vocab")
PROMPT_PATTERNS = ("task", "format", "hybrid", "unified")
HEADS = ("auto", "verbalizer", "cls", "token", "span", "choice")
ATTENTION_IMPLS = ("auto", "", "xla", "cudnn")


def _choice(value, allowed, key):
    if value not in allowed:
        raise InputError(f"config.{key}={value!r}: choose one of {', '.join(map(repr, allowed))}")


def _positive(value, key, *, zero_ok=False):
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise InputError(f"config.{key}={value!r}: must be {bound}")


def dtype(name: str, key: str = "model.dtype"):
    _choice(name, tuple(DTYPES), key)
    return DTYPES[name]


def mesh_shape(mesh: ml_collections.ConfigDict, device_count: int) -> dict[str, int]:
    """{axis: size} with the -1 axis filled; InputError when it cannot cover device_count."""
    sizes = {axis: int(mesh[axis]) for axis in MESH_AXES}
    fill = [axis for axis, size in sizes.items() if size == -1]
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise InputError(f"config.mesh.{axis}={size}: must be a positive size or -1 (fill)")
    if len(fill) > 1:
        raise InputError(f"config.mesh: only one axis may be -1, got {', '.join(fill)}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    shape_text = "x".join(str(sizes[a]) for a in MESH_AXES)
    if fill:
        if device_count % fixed:
            raise InputError(
                f"config.mesh {shape_text} (data x fsdp x tensor): {fixed} does not divide the "
                f"{device_count} devices"
            )
        sizes[fill[0]] = device_count // fixed
    elif fixed != device_count:
        raise InputError(
            f"config.mesh {shape_text} (data x fsdp x tensor) uses {fixed} devices, but there are "
            f"{device_count}; make the product {device_count} or set one axis to -1"
        )
    return sizes


def logical_axis_rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """config.mesh.logical_axis_rules as (logical name, mesh axes) pairs."""
    rules = []
    for entry in config.mesh.logical_axis_rules:
        if len(entry) != 2 or not isinstance(entry[0], str) or not isinstance(entry[1], str):
            raise InputError(
                f"config.mesh.logical_axis_rules: entry {entry!r} must be (logical name, "
                f"'mesh axes separated by commas' or '')"
            )
        axes = tuple(a.strip() for a in entry[1].split(",") if a.strip())
        for axis in axes:
            _choice(axis, MESH_AXES, f"mesh.logical_axis_rules[{entry[0]!r}]")
        rules.append((entry[0], axes))
    return tuple(rules)


def compute_dtype(config: ml_collections.ConfigDict):
    """The dtype the backbone computes in: model.compute_dtype, "auto" resolved (bf16 where the
    hardware multiplies it natively), "" meaning model.dtype."""
    name = config.model.compute_dtype or config.model.dtype
    if name == "auto":
        name = "bfloat16" if native_bf16_products() else "float32"
    return dtype(name, "model.compute_dtype")


def data_parallel_size(config: ml_collections.ConfigDict, device_count: int) -> int:
    """How many ways the batch is split (the mesh axes the 'batch' rule names)."""
    shape = mesh_shape(config.mesh, device_count)
    axes = dict(logical_axis_rules(config)).get("batch", ())
    return math.prod(shape[a] for a in axes)


def validate(config: ml_collections.ConfigDict, device_count: int) -> None:
    """Refuse unknown values and impossible combinations with one clear InputError."""
    _choice(config.mode, MODES, "mode")
    dtype(config.model.dtype)
    if config.model.compute_dtype and config.model.compute_dtype != "auto":
        dtype(config.model.compute_dtype, "model.compute_dtype")
    _choice(config.model.remat_policy, REMAT_POLICIES, "model.remat_policy")
    _choice(config.model.attention_impl, ATTENTION_IMPLS, "model.attention_impl")
    if not config.model.name:
        raise InputError("config.model.name is empty: name a backbone (package, folder or hub id)")

    task = config.task
    _positive(task.max_length, "task.max_length")
    for bucket in task.length_buckets:
        if not isinstance(bucket, int) or bucket <= 0:
            raise InputError(f"config.task.length_buckets={task.length_buckets!r}: positive integers only")
    if task.length_buckets and max(task.length_buckets) > task.max_length:
        raise InputError(
            f"config.task.length_buckets={tuple(task.length_buckets)!r}: a bucket is longer than "
            f"config.task.max_length={task.max_length}"
        )
    _positive(task.max_train_examples, "task.max_train_examples", zero_ok=True)
    _positive(task.max_eval_examples, "task.max_eval_examples", zero_ok=True)
    if isinstance(task.eval_splits, str):
        raise InputError(f"config.task.eval_splits={task.eval_splits!r}: give a tuple of split names")

    method = config.method
    _choice(method.name, METHODS, "method.name")
    if config.mode == "train" and method.name == "manual" and not method.train_backbone:
        raise InputError("config.method.name='manual' has nothing to train: use --config.mode=eval")
    if (method.train_backbone or method.name == "fine_tune") and config.model.dtype != "float32":
        raise InputError(
            f"training the backbone (fine_tune or config.method.train_backbone) needs config.model.dtype='float32' (trainable weights "
            f"are kept in float32), got {config.model.dtype!r}; use model.compute_dtype for bf16"
        )

    prompt = config.prompt
    _positive(prompt.length, "prompt.length", zero_ok=True)
    _choice(prompt.encoder, PROMPT_ENCODERS, "prompt.encoder")
    _choice(prompt.init, PROMPT_INITS, "prompt.init")
    if prompt.init == "text" and not prompt.init_text:
        raise InputError("config.prompt.init='text' needs config.prompt.init_text")
    if prompt.init == "pretrained" and not prompt.init_from:
        raise InputError("config.prompt.init='pretrained' needs config.prompt.init_from (a prompt export or workdir)")
    if prompt.init == "pretrained" and prompt.encoder != "none":
        raise InputError(f"config.prompt.init='pretrained' loads prompt vectors; config.prompt.encoder="
                         f"{prompt.encoder!r} would re-encode them (use 'none')")
    _choice(prompt.get("label_init_fill", "cycle"), LABEL_INIT_FILLS, "prompt.label_init_fill")
    _positive(prompt.get("init_top_k", 1000), "prompt.init_top_k")
    if prompt.init in ("label_words", "frequent_words", "task_words") and method.name not in ("lester", "ptuning"):
        raise InputError(f"config.prompt.init={prompt.init!r} starts soft tokens from word embeddings; method "
                         f"{method.name!r} has none (use 'lester' or 'ptuning')")
    _choice(prompt.pattern, PROMPT_PATTERNS, "prompt.pattern")
    deep = prompt.deep
    _positive(deep.length, "prompt.deep.length", zero_ok=True)
    _positive(deep.reparam_hidden, "prompt.deep.reparam_hidden")
    _positive(deep.layer_start, "prompt.deep.layer_start", zero_ok=True)
    if deep.layer_end != -1 and deep.layer_end <= deep.layer_start:
        raise InputError(
            f"config.prompt.deep: layer_end={deep.layer_end} must be > layer_start={deep.layer_start} (or -1)"
        )
    if method.name == "ptuning_v2" and deep.length == 0:
        raise InputError("config.method.name='ptuning_v2' needs config.prompt.deep.length > 0")
    _choice(config.head.type, HEADS, "head.type")

    opt = config.optimizer
    _choice(opt.name, OPTIMIZERS, "optimizer.name")
    _positive(opt.learning_rate, "optimizer.learning_rate", zero_ok=True)
    for group in ("prompt", "head", "backbone"):
        value = opt[f"{group}_learning_rate"]
        if value is not None:
            _positive(value, f"optimizer.{group}_learning_rate", zero_ok=True)
    _positive(opt.weight_decay, "optimizer.weight_decay", zero_ok=True)
    if opt.name == "adam" and opt.weight_decay:
        raise InputError("config.optimizer.weight_decay: 'adam' has no weight decay; use 'adamw'")
    for key in ("b1", "b2"):
        if not 0.0 <= opt[key] < 1.0:
            raise InputError(f"config.optimizer.{key}={opt[key]}: must be in [0, 1)")
    _positive(opt.eps, "optimizer.eps", zero_ok=True)
    if not 0.0 <= opt.momentum < 1.0:
        raise InputError(f"config.optimizer.momentum={opt.momentum}: must be in [0, 1)")
    _positive(opt.clip_norm, "optimizer.clip_norm", zero_ok=True)
    _positive(opt.grad_accum_steps, "optimizer.grad_accum_steps")

    sched = config.schedule
    _choice(sched.name, SCHEDULES, "schedule.name")
    _positive(sched.warmup_steps, "schedule.warmup_steps", zero_ok=True)
    if not 0.0 <= sched.warmup_ratio < 1.0:
        raise InputError(f"config.schedule.warmup_ratio={sched.warmup_ratio}: must be in [0, 1)")
    if sched.warmup_steps and sched.warmup_ratio:
        raise InputError("config.schedule: set warmup_steps or warmup_ratio, not both")
    if sched.name == "inverse_sqrt" and not (sched.warmup_steps or sched.warmup_ratio):
        raise InputError("config.schedule.name='inverse_sqrt' needs warmup_steps or warmup_ratio > 0")
    if not 0.0 < sched.decay_rate <= 1.0:
        raise InputError(f"config.schedule.decay_rate={sched.decay_rate}: must be in (0, 1]")
    _positive(sched.decay_every_steps, "schedule.decay_every_steps", zero_ok=True)

    train = config.train
    _positive(train.batch_size, "train.batch_size")
    _positive(train.eval_batch_size, "train.eval_batch_size")
    _positive(train.num_epochs, "train.num_epochs", zero_ok=True)
    _positive(train.num_steps, "train.num_steps", zero_ok=True)
    if config.mode == "train" and train.num_steps == 0 and train.num_epochs == 0:
        raise InputError("config.train: num_steps and num_epochs are both 0; nothing to train")
    _positive(train.eval_every, "train.eval_every", zero_ok=True)
    _positive(train.log_every, "train.log_every")
    _positive(train.early_stopping_patience, "train.early_stopping_patience", zero_ok=True)
    _choice(train.best_mode, ("max", "min"), "train.best_mode")
    if train.early_stopping_patience and not task.eval_splits:
        raise InputError("config.train.early_stopping_patience needs an eval split (config.task.eval_splits)")

    shape = mesh_shape(config.mesh, device_count)
    rules = logical_axis_rules(config)
    names = [name for name, _ in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"config.mesh.logical_axis_rules: {duplicates} mapped more than once")
    parallel = data_parallel_size(config, device_count)
    if train.batch_size % opt.grad_accum_steps:
        raise InputError(
            f"config.train.batch_size={train.batch_size} is not divisible by "
            f"config.optimizer.grad_accum_steps={opt.grad_accum_steps}"
        )
    micro = train.batch_size // opt.grad_accum_steps
    if micro % parallel:
        raise InputError(
            f"config.train.batch_size={train.batch_size} (microbatch {micro} with grad_accum_steps="
            f"{opt.grad_accum_steps}) must be divisible by the {parallel} data-parallel devices "
            f"(mesh {shape})"
        )
    if train.eval_batch_size % parallel:
        raise InputError(
            f"config.train.eval_batch_size={train.eval_batch_size} must be divisible by the "
            f"{parallel} data-parallel devices (mesh {shape})"
        )

    ckpt = config.checkpoint
    _positive(ckpt.every_steps, "checkpoint.every_steps", zero_ok=True)
    _positive(ckpt.keep, "checkpoint.keep")
    _positive(ckpt.keep_best, "checkpoint.keep_best", zero_ok=True)

    plan = config.plan
    _positive(plan.devices, "plan.devices", zero_ok=True)
    _positive(plan.device_memory_gib, "plan.device_memory_gib")
    if not 0.0 <= plan.memory_margin < 1.0:
        raise InputError(f"config.plan.memory_margin={plan.memory_margin}: must be in [0, 1)")
    _positive(plan.examples, "plan.examples")

    if config.mode == "eval" and not task.eval_splits:
        raise InputError("config.mode='eval' needs at least one split in config.task.eval_splits")

    # Last: the config's own mistakes are reported even where the data is not there yet. A task
    # with its own source (hub name, save_to_disk folder, files) does not read data_dir.
    data_dir = Path(config.data_dir).expanduser()
    reads_data_dir = not task.source and not (config.mode == "lm_adapt" and config.lm_adaptation.corpus)
    if reads_data_dir and not data_dir.is_dir():
        raise InputError(
            f"data directory {data_dir} does not exist (set it with --config.data_dir=PATH or "
            f"the PTJAX_DATA_DIR environment variable)"
        )


def check_names(config: ml_collections.ConfigDict) -> None:
    """Refuse options that name nothing, or that the chosen mode would ignore, before any backbone
    loads: `restore` outside mode "eval", `prompt.init_from` / `init_text` without the init that
    reads them, a prompt source that does not exist, and split and metric names the task does
    not have (registered tasks; a task defined in code is checked when its data is read)."""
    if config.restore and config.mode in ("train", "plan"):
        raise InputError(
            f"config.restore={config.restore!r} is read only in mode 'eval' (mode {config.mode!r} "
            f"would ignore it; a rerun with the same --workdir resumes training by itself)"
        )
    prompt = config.prompt
    if prompt.init_from and prompt.init != "pretrained":
        raise InputError(f"config.prompt.init_from={prompt.init_from!r} is read only with "
                         f"config.prompt.init='pretrained' (it is {prompt.init!r})")
    if prompt.init_text and prompt.init != "text":
        raise InputError(f"config.prompt.init_text={prompt.init_text!r} is read only with "
                         f"config.prompt.init='text' (it is {prompt.init!r})")
    corpus = prompt.get("init_corpus", "")
    if corpus and prompt.init != "frequent_words":
        raise InputError(f"config.prompt.init_corpus={corpus!r} is read only with "
                         f"config.prompt.init='frequent_words' (it is {prompt.init!r})")
    if corpus and not Path(corpus).expanduser().is_file():
        raise InputError(f"config.prompt.init_corpus={corpus!r}: no such file")
    if prompt.init == "pretrained" and config.mode != "plan" and not Path(prompt.init_from).expanduser().exists():
        raise InputError(f"config.prompt.init_from={prompt.init_from!r}: no such file or folder")
    spec = _registered_task(config.task.name)
    if spec is None:
        return
    known = set(spec.splits) | set(spec.split_aliases)
    if spec.splits and not config.task.get("source"):  # a data source names its own splits
        for key, names in (("task.train_split", (config.task.train_split,) if config.mode != "eval" else ()),
                           ("task.eval_splits", tuple(config.task.eval_splits))):
            unknown = [name for name in names if name not in known]
            if unknown:
                aliases = f"; also {', '.join(spec.split_aliases)}" if spec.split_aliases else ""
                raise InputError(f"config.{key}: task {spec.name} has no split {unknown[0]!r} "
                                 f"(splits: {', '.join(spec.splits)}{aliases})")
    metric = config.train.best_metric
    if metric and config.mode in ("train", "sweep") and not _task_reports(spec, metric):
        raise InputError(
            f"config.train.best_metric={metric!r}: task {spec.name} reports {', '.join(spec.metrics)} "
            f"and 'score' (their mean)"
        )


def _registered_task(name: str):
    from ptjax.tasks.base import get_task

    try:
        return get_task(name) if name else None
    except InputError:  # a task built in code (tests, scripts) or the multi-task "multi"
        return None


# Metric families: an official metric that comes with siblings of the same prefix (entity_f1
# with entity_precision and entity_recall, p_at_1 with p_at_1_micro and p_at_1/<relation>).
_FAMILIES = {"entity_f1": "entity_", "srl_f1": "srl_", "squad_v2_f1": "squad_v2_", "squad_v2_exact": "squad_v2_",
             "p_at_1": "p_at_1", "multirc_em": "multirc_", "record_em": "record_", "squad_em": "squad_"}


def _task_reports(spec, metric: str) -> bool:
    """Whether evaluating `spec` can report `metric` (ptjax.eval.scoring's names)."""
    if metric in (*spec.metrics, "score", "unseen_words"):
        return True
    return any(metric.startswith(_FAMILIES[m]) for m in spec.metrics if m in _FAMILIES)
