"""The methods: where trainable prompts go and which parameters train.

    fine_tune   no prompt; backbone and head train                      (the usual baseline)
    manual      a hand-written pattern; nothing trains (zero-shot), or the backbone with
                method.train_backbone (PET-style manual prompt + fine-tuning)
    lester      soft tokens prepended to the input (Lester et al.), frozen backbone
    ptuning     soft tokens inside the template, produced by a prompt encoder (P-tuning),
                frozen backbone, or tuned jointly with method.train_backbone
    ptuning_v2  deep prefixes at every (chosen) layer (P-tuning v2), frozen backbone

A method decides the template's soft tokens (through `method_template`) and builds the
PromptModel; it never sees the task.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ptjax.errors import InputError
from ptjax.methods.model import PromptModel, embedding_rows, embedding_width
from ptjax.models.loading import Backbone
from ptjax.prompts import encoders, pretrained, word_init
from ptjax.prompts.deep import DeepPrompt
from ptjax.prompts.encoders import PromptEncoder
from ptjax.prompts.templates import Template, parse_template


@dataclasses.dataclass(frozen=True)
class Method:
    soft_tokens: str  # "" (none), "prefix" (prepended), "template" (slots in the pattern)
    deep: bool
    trains: frozenset


METHODS = {
    "fine_tune": Method("", False, frozenset({"backbone", "head"})),
    "manual": Method("", False, frozenset({"head"})),
    "lester": Method("prefix", False, frozenset({"prompt", "head"})),
    "ptuning": Method("template", False, frozenset({"prompt", "head"})),
    "ptuning_v2": Method("", True, frozenset({"prompt", "head"})),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"config.method.name={name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_template(config: ml_collections.ConfigDict, plain: str, with_slots: str, origin: str) -> Template:
    """The template a method uses: config.prompt.template when set, else the task's default.

    plain: the task's template without soft tokens (manual pattern or classifier input);
    with_slots: its P-tuning variant with [P] slots. Lester prepends config.prompt.length slots.
    config.prompt.soft_prefix_first puts the template's opening soft tokens before the
    tokenizer's leading special tokens (PEFT's and Lester et al.'s placement).
    """
    method = get_method(config.method.name)
    if config.prompt.template:
        template = parse_template(config.prompt.template, "config.prompt.template")
    elif method.soft_tokens == "prefix":
        template = parse_template(f"[P*{config.prompt.length}] {plain}", origin)
    elif method.soft_tokens == "template":
        template = parse_template(with_slots or f"[P*{config.prompt.length}] {plain}", origin)
    else:
        template = parse_template(plain, origin)
    has_slots = template.num_soft_tokens > 0
    if method.soft_tokens and not has_slots:
        raise InputError(f"{template.describe()}: method {config.method.name} needs [P] soft-token slots")
    if not method.soft_tokens and has_slots:
        raise InputError(f"{template.describe()}: method {config.method.name} has no soft tokens; remove the [P] slots")
    if config.prompt.get("soft_prefix_first", False) and has_slots:
        template = template.with_soft_prefix_first()
    return template


def prefix_dims(backbone: Backbone) -> tuple[int, int, int, int]:
    """(encoder or decoder layers, kv heads, head dim, T5 decoder layers or 0) for deep prompts."""
    cfg = backbone.config
    kv_heads = getattr(cfg, "num_kv_heads", None) or cfg.num_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.d_kv
    return cfg.num_layers, kv_heads, head_dim, getattr(cfg, "num_decoder_layers", 0) or 0


# Families whose real tokens transformers numbers after past_key_values of the prefix's length
# (absolute position embeddings; Llama's rotary angles): there the P-tuning v2 code and PEFT
# prefix tuning shift positions. T5's relative buckets already put prefix keys before the first
# token; DeBERTa's relative positions have their own prefix rule (ptjax/models/deberta.py).
SHIFTING_FAMILIES = ("bert", "roberta", "albert", "gpt2", "llama")


def deep_positions_shift(asked: bool | None, backbone: Backbone) -> bool:
    """Whether real tokens' position ids start after a deep prefix: `asked`, or when it is None
    the reference behaviour of the backbone's family (SHIFTING_FAMILIES)."""
    family = backbone.family.name
    if asked is None:
        return family in SHIFTING_FAMILIES
    if asked and family not in SHIFTING_FAMILIES:
        raise InputError(f"config.prompt.deep.shift_positions: {family}'s relative positions have nothing to shift")
    return bool(asked)


def _soft_prompt_init(config: ml_collections.ConfigDict, num_tokens: int, source_task: str = "",
                      label_words: dict | None = None):
    """(backbone) -> (make, arrays): `make(*arrays)` is the soft-token table's initializer, per
    config.prompt.init. The arrays it reads (the embedding matrix for "vocab") are returned apart
    so PromptModel.init_params passes them into its jit as arguments: closed over, a vocabulary's
    embeddings would become a constant of the compiled program (a slow compile, a copy in memory).
    source_task: the PPT pre-training task whose prompt "pretrained" picks from a folder of runs.
    label_words: the formulation's label -> word(s), which "label_words" starts from.

    PPT's real-word inits (§2, Table 2; ptjax/prompts/word_init.py): "label_words" gives each
    label one vector, the mean of its words' token embeddings (as Lester et al. average a
    multi-token class label), and with config.prompt.label_init_fill="cycle" repeats the labels in
    order over the whole prompt (label 0, 1, 0, 1, ...); "vocab" puts them first and samples the
    rest from the vocabulary (Lester et al.'s rule; PPT does not say which it used).
    "frequent_words" / "task_words" sample soft tokens without replacement (with replacement when
    the prompt is longer than the pool) among the corpus's top-K tokens / the tokens of the task's
    training examples, with the run's seeded key."""
    init, text = config.prompt.init, config.prompt.init_text

    def make(backbone: Backbone):
        if init == "pretrained":
            vectors = pretrained.read_prompt(config.prompt.init_from, fingerprint=backbone.fingerprint,
                                             num_tokens=num_tokens, width=embedding_width(backbone),
                                             source_task=source_task)
            return pretrained.pretrained_init, (vectors,)
        vocab = np.arange(backbone.config.vocab_size)
        if init == "random":
            std = encoders.embedding_std(embedding_rows(backbone, vocab))
            return (lambda: encoders.random_init(std)), ()
        if init == "vocab":
            return encoders.vocab_init, (embedding_rows(backbone, vocab),)
        if init == "text":
            ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise InputError("config.prompt.init='text' needs a non-empty config.prompt.init_text")
            return (lambda rows: encoders.text_init(rows, list(range(len(ids))))), (embedding_rows(backbone, ids),)
        if init == "label_words":
            if not label_words:
                raise InputError("config.prompt.init='label_words' needs a task read through label words "
                                 "(a verbalizer or word choice); this formulation has none")
            ids = word_init.label_token_ids(backbone.tokenizer, label_words)
            if config.prompt.label_init_fill == "vocab":
                return (lambda rows: encoders.label_init(rows, ids)), (embedding_rows(backbone, vocab),)
            vectors = np.stack([embedding_rows(backbone, label).mean(0) for label in ids])
            return encoders.vectors_init, (vectors,)
        if init == "frequent_words":
            cache = config.prompt.init_cache_dir
            cache = word_init.default_cache_dir() if cache == "auto" else (cache or None)
            ids = word_init.frequent_token_ids(backbone.tokenizer, config.prompt.init_corpus, config.data_dir,
                                               config.prompt.init_top_k, cache)
            return encoders.vocab_init, (embedding_rows(backbone, ids),)
        if init == "task_words":
            ids = word_init.task_token_ids(backbone.tokenizer, config)
            return encoders.vocab_init, (embedding_rows(backbone, ids),)
        raise InputError(f"config.prompt.init={init!r}: choose 'random', 'vocab', 'text', 'label_words', "
                         "'frequent_words', 'task_words' or 'pretrained'")

    return make


def build_prompt_model(config: ml_collections.ConfigDict, backbone: Backbone, head, template: Template,
                       metadata: dict, *, num_prompts: int = 0) -> PromptModel:
    """The PromptModel of config.method for this backbone, head and (already chosen) template."""
    method = get_method(config.method.name)
    trains = set(method.trains)
    if config.method.train_backbone:
        trains.add("backbone")
    soft = deep = decoder_deep = None
    if template.num_soft_tokens:
        soft = PromptEncoder(
            num_tokens=template.num_soft_tokens, embed_dim=embedding_width(backbone),
            reparam=config.prompt.encoder, num_prompts=num_prompts,
        )
    if method.deep:
        layers, kv_heads, head_dim, decoder_layers = prefix_dims(backbone)
        deep_cfg = config.prompt.deep
        if deep_cfg.length < 1:
            raise InputError("method ptuning_v2 needs config.prompt.deep.length >= 1")
        if not 0.0 <= deep_cfg.get("dropout", 0.0) < 1.0:
            raise InputError(f"config.prompt.deep.dropout={deep_cfg.dropout} must be in [0, 1)")
        end = layers if deep_cfg.layer_end == -1 else deep_cfg.layer_end
        if not 0 <= deep_cfg.layer_start < end <= layers:
            raise InputError(f"config.prompt.deep layers [{deep_cfg.layer_start}, {deep_cfg.layer_end}) do not fit "
                             f"a backbone with {layers} layers")
        common = dict(num_kv_heads=kv_heads, head_dim=head_dim, length=deep_cfg.length,
                      reparam="mlp" if deep_cfg.reparam else "none", hidden_dim=deep_cfg.reparam_hidden,
                      num_prompts=num_prompts, dropout_rate=float(deep_cfg.get("dropout", 0.0)))
        deep = DeepPrompt(num_layers=layers, layer_range=(deep_cfg.layer_start, end), **common)
        if decoder_layers:
            decoder_deep = DeepPrompt(num_layers=decoder_layers, **common)
    shift_positions = method.deep and deep_positions_shift(config.prompt.deep.get("shift_positions"), backbone)
    metadata = {**metadata, "prompt_layout": {
        "template": template.source, "num_soft_tokens": template.num_soft_tokens,
        "soft_prefix_first": template.soft_prefix_first, "soft_encoder": config.prompt.encoder if soft else "",
        "deep_length": config.prompt.deep.length if deep else 0, "shift_positions": shift_positions,
    }}
    return PromptModel(
        backbone=backbone, head=head, soft_prompt=soft, deep_prompt=deep, decoder_deep_prompt=decoder_deep,
        trainable=frozenset(trains), metadata=metadata, shift_positions=shift_positions,
        prune_last_layer=config.model.prune_last_layer,
        soft_prompt_init=(_soft_prompt_init(config, soft.num_tokens, metadata.get("prompt_source", ""),
                                            metadata.get("label_words")) if soft is not None else None),
    )
