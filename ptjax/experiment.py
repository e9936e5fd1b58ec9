"""`build(config)`: the backbone, task, formulation and method of a config, as the engine's
(Model, TaskData) pair. It dispatches to ptjax.formulations (sentence_tasks, token_tasks, lama,
multitask), which never import this module back.

    experiment = build(config)
    loop.train(config, workdir, experiment.model, experiment.data)
"""

from __future__ import annotations

from typing import Any

import ml_collections

from ptjax.formulations import ppt
from ptjax.formulations.base import Experiment, FormulatedTask
from ptjax.formulations.sentence_tasks import build_formulation
from ptjax.methods.methods import build_prompt_model, get_method
from ptjax.models.loading import Backbone, open_backbone
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.sources import configured_task
from ptjax.training.config import DTYPES, compute_dtype


def backbone_options(config: ml_collections.ConfigDict) -> dict:
    """config.model's storage/compute dtypes, layer layout and kernels as the keyword arguments
    of open_backbone and architectures.open_architecture (one list, so no opener drops a knob)."""
    model = config.model
    return dict(
        dtype=DTYPES[model.dtype], compute_dtype=compute_dtype(config),
        scan_layers=model.scan_layers, remat_policy=model.remat_policy, attention_impl=model.attention_impl,
    )


def open_configured_backbone(config: ml_collections.ConfigDict) -> Backbone:
    return open_backbone(config.model.name, **backbone_options(config))


def build(config: ml_collections.ConfigDict, *, backbone: Backbone | None = None, num_prompts: int = 0) -> Experiment:
    """backbone: an already opened backbone to reuse (weights loaded or not). num_prompts > 0: a
    bank of that many independent prompts, one per example by its "prompt_id" (batched sweep
    variants, ptjax.training.variants; sentence tasks only)."""
    get_method(config.method.name)
    if config.task.name == "multi":  # MPT-2: several tasks, one shared prompt
        from ptjax.formulations.multitask import build_multitask

        return build_multitask(config, backbone or open_configured_backbone(config))
    spec = configured_task(config)  # the task's own files, or config.task.source
    backbone = backbone or open_configured_backbone(config)
    if spec.kind in ("tagging", "extractive_qa"):
        from ptjax.formulations.token_tasks import build_token_experiment

        return build_token_experiment(config, spec, backbone)
    if spec.kind == "fact_probe":  # LAMA
        from ptjax.formulations.lama import build_lama_experiment

        return build_lama_experiment(config, spec, backbone)
    renderer = Renderer(backbone.tokenizer, backbone.kind, config.task.max_length)
    formulation, template = build_formulation(config, spec, backbone, renderer)
    description = {"task": spec.name, "method": config.method.name, "backbone": backbone.name,
                   **formulation.describe()}
    if config.prompt.init == "pretrained":  # which PPT pre-training run a folder of runs offers
        description["prompt_source"] = ppt.source_task(spec.name, config.prompt.pattern)
    model = build_prompt_model(config, backbone, formulation.head, template, description, num_prompts=num_prompts)
    if config.prompt.init == "pretrained" and config.method.name == "ptuning_v2":
        # Deep prompts have no initializer to read vectors into: the warm start replaces them.
        from ptjax.methods.warm_start import WarmStartedModel
        from ptjax.prompts import pretrained

        source = pretrained.resolve(config.prompt.init_from, description.get("prompt_source", ""))
        model = WarmStartedModel.wrap(model, str(source), spec.name)
    data = FormulatedTask(
        spec=spec, formulation=formulation, data_dir=config.data_dir, load_options=dict(config.task.options),
        max_examples={config.task.train_split: config.task.max_train_examples,
                      **{split: config.task.max_eval_examples for split in config.task.eval_splits}},
    )
    return Experiment(model=model, data=data, backbone=backbone, description=description)


def describe(experiment: Experiment) -> dict[str, Any]:
    return dict(experiment.description)
