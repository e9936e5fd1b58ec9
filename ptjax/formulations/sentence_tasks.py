"""Formulations of sentence-level tasks (classification, multiple choice): which head a config
asks for, and the formulation and template that feed it.

    formulation, template = build_formulation(config, spec, backbone, renderer)

Used by ptjax.experiment.build and by MPT-2's multi-task builder (ptjax/formulations/multitask.py);
both import from here, so formulations never import the experiment module.
"""

from __future__ import annotations

import ml_collections

from ptjax.errors import InputError
from ptjax.formulations import ppt, wsc
from ptjax.formulations.choice import MultipleChoice, label_word_choice
from ptjax.formulations.classification import LinearClassification, VerbalizerClassification
from ptjax.formulations.patterns import patterns_for
from ptjax.heads.linear import choose_pooling
from ptjax.methods.methods import method_template
from ptjax.models.loading import Backbone
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.verbalizers import build_verbalizer
from ptjax.tasks.base import TaskSpec

# Heads that need the backbone's LM head.
LM_HEADS = ("verbalizer", "choice")


def head_type(config: ml_collections.ConfigDict, spec: TaskSpec, backbone: Backbone) -> str:
    """config.head.type, or for "auto": a [CLS] linear head for P-tuning v2 and fine-tuning (as
    P-tuning v2 does) or when the backbone has no LM head; the LM head otherwise."""
    chosen = config.head.type
    if chosen != "auto":
        return chosen
    linear = config.method.name in ("ptuning_v2", "fine_tune") or backbone.kind == "encoder"
    if spec.kind == "multiple_choice":
        return "cls" if linear else "choice"
    return "cls" if linear else "verbalizer"


def build_formulation(config, spec: TaskSpec, backbone: Backbone, renderer: Renderer):
    """(formulation, template) for a classification or multiple-choice task."""
    if ppt.handles(config, spec):  # PPT formats and pre-training tasks
        return ppt.build_formulation(config, spec, backbone, renderer, config.head.type)
    if spec.kind == "entity_choice":  # ReCoRD: the passage's entities fill the query's placeholder
        from ptjax.formulations.record import build_record_formulation

        return build_record_formulation(config, spec, backbone, renderer, head_type(config, spec, backbone))
    patterns = patterns_for(spec) if not (config.prompt.template and config.head.verbalizer) else None
    kind = head_type(config, spec, backbone)
    if kind in LM_HEADS and backbone.kind == "encoder":
        raise InputError(f"{backbone.name} has no LM head (an encoder without MLM weights): use config.head.type='cls'")
    if wsc.handles(config, spec, kind):  # WSC on an LM: the model names the referent (PET, P-tuning)
        return wsc.build_formulation(config, spec, backbone, renderer)
    decoder_start = getattr(backbone.config, "decoder_start_token_id", 0) or 0
    origin = f"task {spec.name}"
    label_words = dict(zip(spec.labels, config.head.verbalizer)) if config.head.verbalizer else patterns.label_words
    if config.head.verbalizer and len(config.head.verbalizer) != len(spec.labels):
        raise InputError(f"config.head.verbalizer has {len(config.head.verbalizer)} words for "
                         f"{len(spec.labels)} labels {list(spec.labels)}")
    fields_fn = patterns.fields if patterns and patterns.fields else (lambda example: example.fields)
    if spec.kind == "multiple_choice":
        if kind == "cls":
            template = method_template(config, patterns.linear_choice, "", origin)
            scoring = "linear"
        else:
            template = method_template(config, patterns.manual, patterns.ptuning, origin)
            scoring = "lm"
        formulation = MultipleChoice(
            template=template, renderer=renderer, options_fn=patterns.options, num_options=len(spec.choices),
            label_fn=lambda example: spec.labels.index(example.label), scoring=scoring,
            pooling=linear_pooling(config, backbone),
            answer_fn=lambda example, index: spec.labels[index], fields_fn=fields_fn, decoder_start_id=decoder_start,
        )
        return formulation, template
    if spec.kind != "classification":
        raise InputError(f"task {spec.name} is {spec.kind}; this pipeline handles classification and multiple choice")
    if kind == "cls":
        template = method_template(config, patterns.linear if patterns else config.prompt.template, "", origin)
        return LinearClassification(template=template, labels=spec.labels, renderer=renderer,
                                    pooling=linear_pooling(config, backbone),
                                    fields_fn=fields_fn), template
    template = method_template(config, patterns.manual if patterns else "", patterns.ptuning if patterns else "",
                               origin)
    if config.head.type == "auto" and kind == "verbalizer" and not single_token_words(
            label_words, renderer, template):
        kind = "choice"  # multi-token label words: score them as candidates
    if kind == "choice":
        return label_word_choice(template, renderer, spec.labels, label_words, fields_fn=fields_fn,
                                 decoder_start_id=decoder_start), template
    if kind != "verbalizer":
        raise InputError(f"config.head.type={kind!r} does not fit classification task {spec.name}")
    return VerbalizerClassification(template=template, labels=spec.labels, label_words=label_words,
                                    renderer=renderer, decoder_start_id=decoder_start, fields_fn=fields_fn), template


def linear_pooling(config, backbone: Backbone) -> str:
    """config.head.pooling for this backbone (a linear head's input: the pooler where there is one)."""
    try:
        return choose_pooling(config.head.get("pooling", "auto"), causal=backbone.kind == "causal_lm",
                              has_pooler=bool(getattr(backbone.config, "has_pooler", False)))
    except ValueError as err:
        raise InputError(f"config.head.pooling: {err}") from None


def single_token_words(label_words, renderer: Renderer, template) -> bool:
    verbalizer = build_verbalizer(dict(label_words), renderer.tokenizer, renderer.kind,
                                  follows_space=template.target_follows_space)
    return verbalizer.is_single_token and verbalizer.token_ids.shape[1] == 1
