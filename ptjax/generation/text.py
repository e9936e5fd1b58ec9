"""Text in, text out: prompt exports on their backbone, each input rendered with its prompt's template.

    generator = TextGenerator.from_exports(["runs/rte/export", "runs/boolq/export"])
    generator.generate([{"text": "The capital of France is", "prompt": "rte"}, ...], max_new_tokens=20)

An input is rendered with the template its export was trained with (its soft tokens in place,
Lester's prepended, P-tuning's in the pattern); generation continues from the template's answer
slot ([MASK]) when it has one (causal LMs: the text before the slot; T5: the input with its
sentinel, the decoder writing the answer), else from the end of the rendered input. A template
given to the generator replaces the exports' (its soft tokens must number as the prompt's).
Exports must share the backbone (fingerprints are checked) and one prompt kind; they form one
PromptBank, so a batch mixes inputs of every export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from ptjax.errors import InputError
from ptjax.generation.bank import PromptBank
from ptjax.generation.generator import Generator, default_stop_tokens
from ptjax.generation.search import DecodeSettings
from ptjax.prompts.templates import parse_template


@dataclasses.dataclass
class PromptEntry:
    """One export: its name (for inputs to pick it), model, trainable params, template and renderer."""

    name: str
    model: object
    trainable: dict
    template: object
    renderer: object
    fields: tuple[str, ...]


def restore_export(path: str | Path, overrides: Mapping | None = None, backbone=None):
    """(config, experiment, trainable params) of a prompt export, built with the settings it
    records (as ptjax.load_prompt does); backbone: a loaded one to share."""
    from ptjax.api import get_config
    from ptjax.experiment import build
    from ptjax.training import checkpoints as ckpt
    from ptjax.training.export_config import config_for_export
    from ptjax.training.step import as_float32, split_params

    path = ckpt.resolve_export(path)
    if not ckpt.read_export_metadata(path).get("config"):
        raise InputError(f"{path}: the export records no config (written by an older ptjax)")
    config = get_config("base", overrides)
    config.mode, config.restore = "eval", str(path)
    config = config_for_export(config, str(path), explicit=tuple(overrides or ()))
    experiment = build(config, backbone=backbone) if backbone is not None else build(config)
    if experiment.backbone.params is None:
        experiment.backbone.load_weights()
    model = experiment.model
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = as_float32(split_params(model.abstract_params()[0], model.is_trainable)[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
    trainable, _ = ckpt.read_export(path, target, fingerprint=experiment.backbone.fingerprint)
    return config, experiment, trainable


def entry_from_experiment(name: str, experiment, trainable: dict, template: str = "") -> PromptEntry:
    return entry_from_parts(name, experiment.model, experiment.data, trainable, template)


def entry_from_parts(name: str, model, data, trainable: dict, template: str = "") -> PromptEntry:
    """A prompt entry from a task's model, data (its formulation's template and renderer) and
    trained params; `template` replaces the formulation's."""
    formulation = data.formulation
    renderer = getattr(formulation, "renderer", None)
    chosen = parse_template(template, "template") if template else getattr(formulation, "template", None)
    if renderer is None or chosen is None:
        raise InputError(f"{name}: task {data.spec.name} has no single template to generate from; "
                         "give one (--template / template=)")
    return PromptEntry(name, model, trainable, parse_template(chosen), renderer, tuple(data.spec.fields))


class TextGenerator:
    """entries: the prompts (one bank); backbone: their shared loaded backbone; devices: split each
    batch's rows over them (Generator's devices: None, a count or a list)."""

    def __init__(self, backbone, entries: Sequence[PromptEntry], *, batch_size: int = 8, devices=None):
        self.backbone, self.entries = backbone, list(entries)
        self.names = [e.name for e in self.entries]
        if not self.entries:
            raise InputError("text generation needs at least one prompt (an export)")
        if len(set(self.names)) != len(self.names):
            raise InputError(f"prompt names repeat: {self.names}")
        prompts = [(e.model, e.trainable) for e in self.entries]
        bank = PromptBank.from_prompts(prompts)
        self.generator = Generator(backbone, bank, batch_size=batch_size, devices=devices)

    @classmethod
    def from_exports(cls, exports: Sequence[str | Path] | Mapping[str, str | Path], *, template: str = "",
                     overrides: Mapping | None = None, batch_size: int = 8, devices=None) -> TextGenerator:
        """exports: paths (named by their folder) or {name: path}."""
        named = dict(exports) if isinstance(exports, Mapping) else {export_name(p): p for p in exports}
        if not named:
            raise InputError("generation needs at least one prompt export")
        backbone, entries = None, []
        for name, path in named.items():
            _, experiment, trainable = restore_export(path, overrides, backbone)
            backbone = experiment.backbone
            entries.append(entry_from_experiment(name, experiment, trainable, template))
        return cls(backbone, entries, batch_size=batch_size, devices=devices)

    def render(self, value: str | Mapping[str, str], entry: PromptEntry, where: str) -> tuple[list[int], list[int]]:
        """(input ids, soft index) of one input rendered with its prompt's template."""
        fields = dict(value) if isinstance(value, Mapping) else None
        if fields is None:
            names = entry.template.field_names
            if len(names) != 1:
                raise InputError(f"{where}: template {entry.template.source!r} takes fields {sorted(names)}; "
                                 "give an object with them")
            fields = {next(iter(names)): value}
        missing = [f for f in entry.template.field_names if f not in fields]
        if missing:
            raise InputError(f"{where}: missing field(s) {missing} of template {entry.template.source!r}")
        rendered = entry.renderer(entry.template, fields)
        ids, soft = rendered.input_ids, rendered.soft_index
        if self.backbone.kind == "causal_lm" and rendered.target_index >= 0:
            ids, soft = ids[:rendered.target_index + 1], soft[:rendered.target_index + 1]
        return [int(i) for i in ids], [int(i) for i in soft]

    def generate(self, inputs: Sequence[str | Mapping], prompts: Sequence[str | int] | None = None, *,
                 where: Sequence[str] | None = None, seed: int = 0, **settings) -> list[dict]:
        """One {"text", "tokens", "prompt"(, "score")} per input. inputs: strings (templates of one
        field) or field dicts; prompts: per input, the name or index of its prompt (default:
        the first). settings: DecodeSettings fields (stop_tokens default to the tokenizer's eos)."""
        settings.setdefault("stop_tokens", default_stop_tokens(self.backbone))
        settings["stop_tokens"] = tuple(int(t) for t in settings["stop_tokens"])
        decode = DecodeSettings(**settings)
        where = where or [f"input {i}" for i in range(len(inputs))]
        prompt_ids = [self._prompt_index(p, w) for p, w in zip(prompts or [0] * len(inputs), where)]
        rendered = [self.render(value, self.entries[p], w)
                    for value, p, w in zip(inputs, prompt_ids, where)]
        out = self.generator.generate_ids([r[0] for r in rendered], soft_index=[r[1] for r in rendered],
                                          prompt_ids=prompt_ids, settings=decode, seed=seed)
        tokenizer = self.backbone.tokenizer
        results = []
        for i, tokens in enumerate(out.tokens):
            text_ids = [t for t in tokens if t not in decode.stop_tokens]
            result = {"text": tokenizer.decode(text_ids, skip_special_tokens=True), "tokens": tokens,
                      "prompt": self.names[prompt_ids[i]]}
            if out.scores is not None:
                result["score"] = out.scores[i]
            results.append(result)
        return results

    def _prompt_index(self, prompt: str | int, where: str) -> int:
        if isinstance(prompt, (int, np.integer)) and 0 <= prompt < len(self.entries):
            return int(prompt)
        if prompt in self.names:
            return self.names.index(prompt)
        raise InputError(f"{where}: unknown prompt {prompt!r}; known: {self.names}")


def export_name(path: str | Path) -> str:
    path = Path(path)
    return path.parent.name if path.name == "export" else path.name
