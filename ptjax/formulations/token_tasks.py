"""Experiments for token-level tasks (tagging, extractive QA): formulation, template and model
from a config, and warm starts from an exported prompt (MPT-2's per-task tuning).

Options in config.task.options besides the task loader's own:
    extractive QA    doc_stride (128), max_question_length (64), max_answer_length (30),
                     n_best (20), null_threshold (0.0), allow_no_answer (default: SQuAD 2.0 tasks)
Warm start: config.prompt.init = "pretrained" and config.prompt.init_from = a prompt export (or a
workdir holding one): its prompt parameters (soft or deep) start this run; when it is a multi-task
export naming this task, its head row for the task starts this run's head too.
Head: config.head.type "token" for tagging, "span" for QA (or "auto").
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from ptjax.errors import InputError
from ptjax.eval.scoring import score_predictions
from ptjax.formulations.base import FormulatedTask
from ptjax.formulations.qa import ExtractiveQA
from ptjax.formulations.tagging import WORDS_FIELD, TokenTagging
from ptjax.methods.methods import build_prompt_model, method_template
from ptjax.methods.model import PromptModel
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import Example, TaskSpec, collect_labels

log = logging.getLogger(__name__)

TOKEN_KINDS = {"tagging": "token", "extractive_qa": "span"}
QA_OPTIONS = ("doc_stride", "max_question_length", "max_answer_length", "n_best", "null_threshold",
              "allow_no_answer")


def split_options(options: dict, kind: str) -> tuple[dict, dict]:
    """(loader options, formulation options) of config.task.options for a task of `kind`."""
    own = set(QA_OPTIONS) if kind == "extractive_qa" else set()
    mine = {k: v for k, v in options.items() if k in own}
    return {k: v for k, v in options.items() if k not in own}, mine


def check_head(config: ml_collections.ConfigDict, spec: TaskSpec) -> None:
    wanted = TOKEN_KINDS[spec.kind]
    if config.head.type not in ("auto", wanted):
        raise InputError(f"task {spec.name} is {spec.kind}: set config.head.type={wanted!r} "
                         f"(got {config.head.type!r})")


def plain_template(spec: TaskSpec) -> str:
    if spec.kind == "extractive_qa":
        return "{question} [SEP] {context}"
    others = [name for name in spec.fields if name != WORDS_FIELD]
    return " [SEP] ".join([f"{{{WORDS_FIELD}}}"] + [f"{{{name}}}" for name in others])


def token_formulation(config: ml_collections.ConfigDict, spec: TaskSpec, renderer: Renderer, options: dict,
                      train_examples: Callable[[], list[Example]]):
    """(formulation, template) for a tagging or extractive-QA task under config.method."""
    check_head(config, spec)
    template = method_template(config, plain_template(spec), "", f"task {spec.name}")
    if spec.kind == "tagging":
        labels = spec.labels
        if labels is None:  # SRL: the tag set of the training data
            labels = collect_labels(train_examples())
            if "O" not in labels:
                labels = ("O",) + labels
            log.info("%s: %d tags collected from the training data", spec.name, len(labels))
        return TokenTagging(template=template, labels=labels, renderer=renderer), template
    qa = {k: options[k] for k in QA_OPTIONS if k in options}
    qa.setdefault("allow_no_answer", any(m.startswith("squad_v2") for m in spec.metrics))
    return ExtractiveQA(template=template, renderer=renderer, **qa), template


@dataclasses.dataclass
class TokenTaskData(FormulatedTask):
    """FormulatedTask that also reports, for tagging, the words the model never saw (cut off by
    max_length or without a sub-token; predicted "O") and keeps each split's last answers for
    a per-type report; for SQuAD 2.0, the best F1 over no-answer thresholds and that threshold
    (the official script's best_f1 / best_f1_thresh; set it as task.options.null_threshold)."""

    def __post_init__(self):
        super().__post_init__()
        self.last_answers: dict[str, list] = {}

    def evaluate(self, split: str, predictions: list[dict]) -> dict[str, float]:
        examples, features = self.examples(split), self.features(split)
        if len(predictions) != len(features):
            raise ValueError(f"{len(predictions)} predictions for {len(features)} features of {split}")
        answers = self.last_answers[split] = self.formulation.decode(examples, features, predictions)
        labeled = [(e, a) for e, a in zip(examples, answers) if e.label is not None]
        metrics = score_predictions(self.spec, [e for e, _ in labeled], [a for _, a in labeled]) if labeled else {}
        if isinstance(self.formulation, TokenTagging):
            seen = sum(int((f["word_index"] >= 0).sum()) for f in features)
            metrics["unseen_words"] = float(sum(len(e.fields[WORDS_FIELD]) for e in examples) - seen)
        if isinstance(self.formulation, ExtractiveQA) and self.formulation.allow_no_answer and labeled:
            best_f1, threshold = self.formulation.best_null_threshold(examples)
            metrics.update(squad_v2_best_f1=best_f1, squad_v2_best_f1_threshold=min(threshold, 1e9))
        return metrics

    def entity_report(self, split: str) -> str:
        """Per-type precision / recall / F1 / support of the last evaluation of `split`
        (seqeval's classification_report layout)."""
        from ptjax.eval.entities import entity_scores

        labeled = [(e.label, a) for e, a in zip(self.examples(split), self.last_answers[split]) if e.label is not None]
        ignore = ("V",) if "srl_f1" in self.spec.metrics else ()
        return entity_scores([g for g, _ in labeled], [a for _, a in labeled], ignore_types=ignore).report()


def build_token_task(config: ml_collections.ConfigDict, spec: TaskSpec, backbone, *, renderer: Renderer | None = None,
                     options: dict | None = None) -> tuple[FormulatedTask, Any]:
    """(task data, template) of one tagging / QA task; options default to config.task.options."""
    loader_options, own = split_options(dict(config.task.options) if options is None else options, spec.kind)
    renderer = renderer or Renderer(backbone.tokenizer, backbone.kind, config.task.max_length)
    data = TokenTaskData(
        spec=spec, formulation=None, data_dir=config.data_dir, load_options=loader_options,
        max_examples={config.task.train_split: config.task.max_train_examples,
                      **{split: config.task.max_eval_examples for split in config.task.eval_splits}},
    )
    data.formulation, template = token_formulation(config, spec, renderer, own,
                                                   lambda: data.examples(config.task.train_split))
    return data, template


def build_token_experiment(config: ml_collections.ConfigDict, spec: TaskSpec, backbone):
    """The Experiment (ptjax.experiment) of a tagging or extractive-QA task."""
    from ptjax.experiment import Experiment

    data, template = build_token_task(config, spec, backbone)
    description = {"task": spec.name, "method": config.method.name, "backbone": backbone.name,
                   **data.formulation.describe()}
    model = build_prompt_model(config, backbone, data.formulation.head, template, description)
    if config.prompt.init == "pretrained":
        model = WarmStartedModel.wrap(model, config.prompt.init_from, spec.name)
    return Experiment(model=model, data=data, backbone=backbone, description=description)


# --------------------------------------------------------------------------------------------
# Warm starts from an exported prompt.


def read_export_params(source: str, fingerprint: str) -> tuple[dict, dict]:
    """(params as numpy arrays, export info) of a prompt export, whatever mesh wrote it (read
    onto one device from the export's own parameter table); refuses another backbone's."""
    import orbax.checkpoint as ocp
    from flax import traverse_util

    from ptjax.train import checkpoints as ckpt

    path = ckpt.resolve_export(source)
    info = ckpt.read_export_metadata(path)
    ckpt.check_fingerprint(path, info, fingerprint)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = traverse_util.unflatten_dict({
        tuple(name.split("/")): jax.ShapeDtypeStruct(tuple(shape), np.float32, sharding=one_device)
        for name, shape in info["params"].items()})
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    return jax.tree.map(np.asarray, dict(restored.params)), info


def _paths(tree: dict, prefix=()) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_paths(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _put(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def head_row(exported: np.ndarray, target_shape: tuple, row: int) -> np.ndarray | None:
    """A multi-task head leaf [tasks, ..., width] cut to one task's [1, ..., labels], or None
    when the shapes do not line up."""
    if exported.ndim != len(target_shape) or row >= exported.shape[0] or target_shape[0] != 1:
        return None
    if exported.shape[1:-1] != tuple(target_shape[1:-1]) or exported.shape[-1] < target_shape[-1]:
        return None
    return exported[row:row + 1, ..., : target_shape[-1]]


@dataclasses.dataclass
class WarmStartedModel(PromptModel):
    """A PromptModel whose fresh parameters take the prompt (and, from a multi-task export
    naming `task`, that task's head row) of an exported run. Resuming from a checkpoint still
    restores the checkpoint over them."""

    init_from: str = ""
    task: str = ""

    @classmethod
    def wrap(cls, model: PromptModel, source: str, task: str) -> WarmStartedModel:
        fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(PromptModel)}
        return cls(**fields, init_from=source, task=task)

    def init_params(self, rng, shardings: dict) -> dict:
        params = super().init_params(rng, shardings)
        exported, info = read_export_params(self.init_from, self.fingerprint)
        if "prompt" not in params or "prompt" not in exported:
            raise InputError(f"{self.init_from}: a warm start needs a method with a prompt on both sides "
                             f"(this run: {sorted(params)}, the export: {sorted(exported)})")
        current, saved = _paths(params["prompt"]), _paths(exported["prompt"])
        shapes = {p: tuple(v.shape) for p, v in current.items()}
        if shapes != {p: tuple(v.shape) for p, v in saved.items()}:
            raise InputError(f"{self.init_from}: its prompt {sorted((('/'.join(p), v.shape) for p, v in saved.items()))} "
                             f"does not match this method's {sorted(('/'.join(p), s) for p, s in shapes.items())}")
        for path, value in saved.items():
            leaf = current[path]
            _put(params["prompt"], path, jax.device_put(value.astype(leaf.dtype), leaf.sharding))
        tasks = list((info.get("method") or {}).get("tasks") or [])
        taken = "prompt"
        if self.task in tasks and "head" in params and "head" in exported:
            row = tasks.index(self.task)
            current_head, saved_head = _paths(params["head"]), _paths(exported["head"])
            rows = {p: head_row(saved_head[p], tuple(v.shape), row) for p, v in current_head.items() if p in saved_head}
            if len(rows) == len(current_head) and all(r is not None for r in rows.values()):
                for path, value in rows.items():
                    leaf = current_head[path]
                    _put(params["head"], path, jax.device_put(value.astype(leaf.dtype), leaf.sharding))
                taken = f"prompt and head row {row} ({self.task})"
        log.info("warm start from %s: %s", self.init_from, taken)
        return params
