"""Model-agnostic prompt pieces: templates and their rendering, prompt encoders, deep prompts,
soft-prompt insertion and verbalizers. `ptjax.methods` combines them with backbones and heads.

Generating prompt vectors (encoders, deep) and inserting them (insertion, PrefixKV) are
separate pieces: a task renders its examples once with a template; a method inserts the
vectors inside the jitted step.
"""

from ptjax.prompts.deep import DeepPrompt, materialize_deep_prompt
from ptjax.prompts.encoders import (
    PromptEncoder,
    embedding_std,
    label_init,
    materialize_encoder,
    random_init,
    text_init,
    vectors_init,
    vocab_init,
)
from ptjax.prompts.insertion import insert_soft_prompts
from ptjax.prompts.rendering import KINDS, Rendered, Renderer, TruncationStats, collate, render
from ptjax.prompts.templates import Template, parse_template
from ptjax.prompts.verbalizers import Verbalizer, build_verbalizer, tokenize_word

__all__ = [
    "KINDS",
    "DeepPrompt",
    "PromptEncoder",
    "Rendered",
    "Renderer",
    "Template",
    "TruncationStats",
    "Verbalizer",
    "build_verbalizer",
    "collate",
    "embedding_std",
    "insert_soft_prompts",
    "label_init",
    "materialize_deep_prompt",
    "materialize_encoder",
    "parse_template",
    "random_init",
    "render",
    "text_init",
    "tokenize_word",
    "vectors_init",
    "vocab_init",
]
