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

import ml_collections

from ptjax.errors import InputError
from ptjax.eval.scoring import score_predictions
from ptjax.formulations.base import Experiment, FormulatedTask
from ptjax.formulations.qa import ExtractiveQA
from ptjax.formulations.tagging import WORDS_FIELD, TokenTagging
from ptjax.methods.methods import build_prompt_model, method_template
from ptjax.methods.warm_start import WarmStartedModel
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
        answers = self.last_answers[split] = self.answers(split, predictions)
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
    """The Experiment of a tagging or extractive-QA task."""

    data, template = build_token_task(config, spec, backbone)
    description = {"task": spec.name, "method": config.method.name, "backbone": backbone.name,
                   **data.formulation.describe()}
    model = build_prompt_model(config, backbone, data.formulation.head, template, description)
    if config.prompt.init == "pretrained":
        model = WarmStartedModel.wrap(model, config.prompt.init_from, spec.name)
    return Experiment(model=model, data=data, backbone=backbone, description=description)
