"""Multi-task prompts (MPT-2 in P-tuning v2): one shared prompt, one head per data set.

    config.task.name = "multi"
    config.task.options.tasks = ("conll03", "conll04")

Every task is formulated as it would be alone (same backbone, template and method); the heads
become one head with a row per task (ptjax.heads.linear keeps a weight matrix per task and
picks it with batch["task_id"]); every feature carries its task's "task_id". The training split
is the concatenation of the tasks' training splits, so shuffled batches mix the data sets in
proportion to their sizes. Evaluation scores each task with its own metrics ("conll03/entity_f1",
...); "score" is the mean of the task scores.

Tasks mix when their formulations use the same head type with the same feature fields: any
tagging tasks (NER, SRL), extractive-QA tasks (SQuAD 1.1 with 2.0), or classification tasks with
a linear [CLS] head. Per-task tuning afterwards starts a single-task run from the export:
config.prompt.init = "pretrained", config.prompt.init_from = "MPT_WORKDIR" (see ptjax.formulations.token_tasks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

from ptjax.errors import InputError
from ptjax.formulations.base import Experiment, FormulatedTask
from ptjax.formulations.sentence_tasks import build_formulation
from ptjax.formulations.token_tasks import TOKEN_KINDS, build_token_task, split_options
from ptjax.methods.warm_start import WarmStartedModel
from ptjax.methods.methods import build_prompt_model
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import get_task

MULTI_TASK = "multi"
TASK_ID = "task_id"
MULTI_OPTIONS = ("tasks",)


@dataclasses.dataclass
class MultiTaskData:
    """The engine's TaskData over several FormulatedTasks that share one head (a row each)."""

    tasks: Sequence[FormulatedTask]
    names: Sequence[str]
    primary_metric: str = "score"

    def __post_init__(self):
        self.pad_values, self.length_groups = {}, {}
        for name, task in zip(self.names, self.tasks):
            for field, value in task.pad_values.items():
                if self.pad_values.setdefault(field, value) != value:
                    raise InputError(f"multi-task: {name} pads {field!r} with {value}, another task with "
                                     f"{self.pad_values[field]}")
            self.length_groups.update(task.length_groups)
        self._features: dict[str, list[dict]] = {}
        self._counts: dict[str, list[int]] = {}

    @property
    def cache_key(self) -> str:
        return "|".join(str(getattr(t, "cache_key", "")) for t in self.tasks)

    def features(self, split: str) -> list[dict]:
        if split not in self._features:
            out, counts, fields = [], [], None
            for task_id, (name, task) in enumerate(zip(self.names, self.tasks)):
                features = task.features(split)
                if features and fields is None:
                    fields = set(features[0])
                if features and set(features[0]) != fields:
                    raise InputError(f"multi-task: {name}'s features {sorted(features[0])} differ from "
                                     f"{sorted(fields)}; only tasks with the same kind of head mix")
                out += [{**feature, TASK_ID: np.int32(task_id)} for feature in features]
                counts.append(len(features))
            self._features[split], self._counts[split] = out, counts
        return self._features[split]

    def evaluate(self, split: str, predictions: list[dict]) -> dict[str, float]:
        features = self.features(split)
        if len(predictions) != len(features):
            raise ValueError(f"{len(predictions)} predictions for {len(features)} features of {split}")
        metrics, scores, start = {}, [], 0
        for name, task, count in zip(self.names, self.tasks, self._counts[split]):
            task_metrics = task.evaluate(split, predictions[start:start + count])
            start += count
            metrics.update({f"{name}/{k}": v for k, v in task_metrics.items()})
            if "score" in task_metrics:
                scores.append(task_metrics["score"])
        if scores:
            metrics["score"] = float(np.mean(scores))
        return metrics

    def prediction_records(self, split: str, predictions: list[dict]) -> list[dict]:
        """Each task's predictions-file lines (ptjax.eval.predictions), tagged with its name."""
        self.features(split)
        rows, start = [], 0
        for name, task, count in zip(self.names, self.tasks, self._counts[split]):
            rows += [{"task": name, **row} for row in task.prediction_records(split, predictions[start:start + count])]
            start += count
        return rows


def _single_config(config: ml_collections.ConfigDict, head_type: str) -> ml_collections.ConfigDict:
    single = config.copy_and_resolve_references()
    single.head.type = head_type
    return single


def build_multitask(config: ml_collections.ConfigDict, backbone):
    """The Experiment of config.task.options.tasks trained together with one shared prompt."""

    options = dict(config.task.options)
    names = options.get("tasks")
    if isinstance(names, str) or not names or len(names) < 2:
        raise InputError(f"config.task.options.tasks={names!r}: name at least two tasks for task.name='multi'")
    shared = {k: v for k, v in options.items() if k not in MULTI_OPTIONS}
    renderer = Renderer(backbone.tokenizer, backbone.kind, config.task.max_length)
    tasks, templates, descriptions = [], [], {}
    for name in names:
        spec = get_task(name)
        if spec.kind in TOKEN_KINDS:
            data, template = build_token_task(_single_config(config, TOKEN_KINDS[spec.kind]), spec, backbone,
                                              renderer=renderer, options=shared)
        elif spec.kind in ("classification", "multiple_choice"):
            loader_options, _ = split_options(shared, spec.kind)
            formulation, template = build_formulation(_single_config(config, "cls"), spec, backbone, renderer)
            data = FormulatedTask(
                spec=spec, formulation=formulation, data_dir=config.data_dir, load_options=loader_options,
                max_examples={config.task.train_split: config.task.max_train_examples,
                              **{split: config.task.max_eval_examples for split in config.task.eval_splits}})
        else:
            raise InputError(f"multi-task: task {name} is {spec.kind}, which has no linear head to share")
        tasks.append(data)
        templates.append(template)
        descriptions[name] = data.formulation.describe()
    heads = [t.formulation.head for t in tasks]
    if len({type(h) for h in heads}) != 1 or not all(hasattr(h, "label_counts") for h in heads):
        kinds = {name: type(h).__name__ for name, h in zip(names, heads)}
        raise InputError(f"multi-task: the tasks need one kind of linear head to share a prompt, got {kinds}")
    if len({t.num_soft_tokens for t in templates}) != 1:
        raise InputError(f"multi-task: the templates {[t.source for t in templates]} differ in soft tokens; "
                         "a shared prompt needs the same number in every task")
    head = dataclasses.replace(heads[0], label_counts=tuple(c for h in heads for c in h.label_counts))
    description = {"task": MULTI_TASK, "tasks": list(names), "method": config.method.name,
                   "backbone": backbone.name, "formulations": descriptions}
    model = build_prompt_model(config, backbone, head, templates[0], description)
    if config.prompt.init == "pretrained":
        model = WarmStartedModel.wrap(model, config.prompt.init_from, MULTI_TASK)
    data = MultiTaskData(tasks, list(names))
    return Experiment(model=model, data=data, backbone=backbone, description=description)
