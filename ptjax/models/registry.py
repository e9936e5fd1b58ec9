"""Architecture families: how a transformers config and checkpoint become a ptjax module.

Each family file (bert.py, gpt2.py, llama.py, t5.py, deberta.py, albert.py) defines a `Family`;
nothing here knows their internals. `family_for(model_type)` picks one by the `model_type` of a
transformers config.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import numpy as np

from ptjax.errors import InputError

Transform = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """How one ptjax parameter is read from a transformers checkpoint.

    source: the checkpoint tensor name without any model prefix (`bert.`, `model.` ...). A `{i}`
      in it marks a per-layer tensor: the ptjax leaf is then stacked, [layers, ...], and layer i
      comes from source.format(i=i).
    transform: maps one checkpoint tensor (one layer's, for stacked leaves) to the ptjax layout,
      e.g. a transpose of a PyTorch [out, in] weight to [in, out], a reshape to [embed, heads,
      head_dim], or a slice of a fused tensor.
    """

    source: str
    transform: Transform = _identity

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.source


@dataclasses.dataclass(frozen=True)
class Family:
    """An architecture family (BERT, GPT-2, Llama, T5).

    model_types: transformers `config.model_type` values it serves.
    config_from_hf(hf_config, tensor_names) -> our frozen config dataclass. tensor_names (prefix
      stripped) tells which optional parts exist (an MLM head, a pooler, an untied LM head).
    build(config, dtype, scan_layers, remat_policy) -> the Flax module.
    weight_map(config) -> {param path tuple: TensorRule}, one entry per parameter leaf.
    example_inputs(config) -> kwargs for module.init (shapes only matter).
    kind(config) -> "encoder" | "masked_lm" | "causal_lm" | "seq2seq".
    checkpoint_prefixes: prefixes a checkpoint may put before the rule names ("bert.", "model.").
    shared_layer: top-level parameter group that every layer applies (ALBERT's one layer), so a
      token meets it config.num_layers times (plan's FLOPs estimate); "" when layers own theirs.
    query_positions: the module's __call__ takes query_positions [batch, n] and then computes its
      last layer at those rows only (last_layer_rows.stack_computing_rows).
    """

    name: str
    model_types: tuple[str, ...]
    config_from_hf: Callable[[Any, frozenset[str]], Any]
    build: Callable[..., Any]
    weight_map: Callable[[Any], dict[tuple[str, ...], TensorRule]]
    example_inputs: Callable[[Any], dict]
    kind: Callable[[Any], str]
    checkpoint_prefixes: tuple[str, ...] = ()
    shared_layer: str = ""
    query_positions: bool = False


# Modules under ptjax/models/ that each define FAMILIES, a tuple of Family.
FAMILY_MODULES = ("bert", "gpt2", "llama", "t5", "deberta", "albert")


def all_families() -> list[Family]:
    # Imported here so that a family module may import this one without a cycle.
    return [f for m in FAMILY_MODULES for f in importlib.import_module(f"ptjax.models.{m}").FAMILIES]


def family_for(model_type: str, *, where: str = "config.json") -> Family:
    for family in all_families():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in all_families() for t in f.model_types)
    raise InputError(f"{where}: unknown architecture model_type={model_type!r}; ptjax supports {known}")
