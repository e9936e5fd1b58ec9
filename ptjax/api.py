"""The Python API (what `import ptjax` offers notebooks and other programs).

    config = ptjax.get_config("base", overrides={"task.name": "sst2", "train.num_steps": 100})
    results = ptjax.train(config, "runs/sst2")          # as `ptjax --config ... --workdir runs/sst2`
    metrics = ptjax.evaluate("runs/sst2/export", "runs/sst2-eval", overrides={"data_dir": "/data"})
    report = ptjax.plan("plan_t5xxl", devices=8)        # as mode "plan"
    prompt = ptjax.load_prompt("runs/sst2/export")
    prompt.predict(["a gripping film"])  # [{"label": "1", "probabilities": {"0": 0.1, "1": 0.9}}]

The calls run the same code as the command line (ptjax/commands.py) and raise
ptjax.InputError where the command prints its one-line `error: ...`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from ptjax.errors import InputError


def get_config(name: str | ml_collections.ConfigDict, overrides: Mapping[str, Any] | None = None
               ) -> ml_collections.ConfigDict:
    """A config file ("configs/x.py", or the name of one that ships: "quickstart",
    "lama_paper.py:manual" passes "manual" to its get_config) with "a.b" -> value overrides.
    A key the config does not have is an InputError, as on the command line."""
    from ptjax.console import resolve_config_path

    if isinstance(name, ml_collections.ConfigDict):
        config = name.copy_and_resolve_references()
    else:
        path, colon, argument = resolve_config_path(str(name)).partition(":")
        if not Path(path).is_file():
            raise InputError(f"config {name!r}: no such file or packaged config (ptjax list configs)")
        spec = importlib.util.spec_from_file_location(f"ptjax_config_{Path(path).stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(argument) if colon else module.get_config()
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = config
        try:
            for part in parents:
                node = node[part]
            node[leaf] = value  # a locked section refuses a new key; task.options takes any
        except (AttributeError, KeyError):
            raise InputError(f"config.{key}: no such key") from None
        except TypeError as err:
            raise InputError(f"config.{key}={value!r}: {err}") from None
    return config


def _run(config: ml_collections.ConfigDict, workdir: str | Path | None, mode: str,
         explicit: Sequence[str] = ()) -> dict:
    from ptjax.commands import run

    config.mode = mode
    return run(config, None if workdir is None else str(workdir), explicit=tuple(explicit))


def train(config: str | ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Train (or, for a sweep config, run the sweep) in workdir; rerunning resumes. Returns the
    run's results.json content: status, metrics per eval split, best step, export folder."""
    config = get_config(config)
    return _run(config, workdir, "sweep" if config.mode == "sweep" else "train")


def evaluate(config_or_export: str | Path | ml_collections.ConfigDict, workdir: str | Path,
             overrides: Mapping[str, Any] | None = None) -> dict:
    """Evaluate a prompt export (a DIR/export folder or a workdir holding one) with the settings
    it records; overrides give data and evaluation options ("data_dir", "task.eval_splits",
    "task.max_eval_examples", ...). A config (or config file) is evaluated as it stands, from its
    config.restore when set. Returns results.json's content."""
    from ptjax.training.checkpoints import resolve_export

    source = config_or_export
    is_export = not isinstance(source, ml_collections.ConfigDict) and (
        (Path(source) / "metadata").is_dir() or (Path(source) / "export" / "metadata").is_dir())
    config = get_config("base" if is_export else source, overrides)
    if is_export:
        config.restore = str(resolve_export(source))
    return _run(config, workdir, "eval", explicit=tuple(overrides or ()))


def plan(config: str | ml_collections.ConfigDict, *, devices: int | None = None,
         device_memory_gib: float | None = None, workdir: str | Path | None = None) -> dict:
    """Mode "plan": compile the train step with abstract weights; returns the report (per-device
    memory, FLOPs, "fits"). devices: simulated CPU devices, only before JAX has started."""
    from ptjax.planning import use_simulated_devices

    config = get_config(config)
    if devices is not None:
        config.plan.devices = devices
    if device_memory_gib is not None:
        config.plan.device_memory_gib = device_memory_gib
    use_simulated_devices(config.plan.devices)
    return _run(config, workdir, "plan")


def load_prompt(export: str | Path, overrides: Mapping[str, Any] | None = None) -> LoadedPrompt:
    """A trained prompt on its backbone (the one the export names), ready to classify raw text.
    overrides: as evaluate's (e.g. {"model.dtype": "bfloat16"})."""
    import jax

    from ptjax.experiment import build
    from ptjax.training import checkpoints as ckpt
    from ptjax.training.export_config import config_for_export
    from ptjax.training.step import as_float32, split_params

    path = ckpt.resolve_export(export)
    if not ckpt.read_export_metadata(path).get("config"):
        raise InputError(f"{path}: the export records no config (written by an older ptjax); evaluate it "
                         "with its training config and --config.restore")
    config = get_config("base", overrides)
    config.mode, config.restore = "eval", str(path)
    config = config_for_export(config, str(path), explicit=tuple(overrides or ()))
    experiment = build(config)
    backbone = experiment.backbone
    if backbone.params is None:
        backbone.load_weights()
    model = experiment.model
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = as_float32(split_params(model.abstract_params()[0], model.is_trainable)[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
    trainable, _ = ckpt.read_export(path, target, fingerprint=backbone.fingerprint)
    return LoadedPrompt(config, experiment, trainable)


class LoadedPrompt:
    """A prompt export with its model: predict() classifies raw inputs, generate() writes text."""

    def __init__(self, config: ml_collections.ConfigDict, experiment, trainable: dict):
        import jax

        self.config = config
        self.model, self.data = experiment.model, experiment.data
        self.task = self.data.spec
        self.labels: tuple[str, ...] = tuple(self.task.labels)
        params = {"backbone": experiment.backbone.params, **trainable}
        self._params = params
        self._predict = jax.jit(self.model.predict)
        self._experiment, self._trainable, self._generator = experiment, trainable, None  # for generate()

    def _example(self, index: int, value: str | Sequence[str] | Mapping[str, str]):
        from ptjax.tasks.base import Example

        fields = self.task.fields
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, Mapping):
            if len(value) != len(fields):
                raise InputError(f"input {index}: task {self.task.name} takes {len(fields)} fields "
                                 f"{list(fields)}; give a tuple in that order or a dict")
            value = dict(zip(fields, value))
        missing = [f for f in fields if f not in value]
        if missing:
            raise InputError(f"input {index}: missing field(s) {missing} of task {self.task.name}")
        return Example(guid=f"input-{index}", fields=dict(value), meta={"where": f"input {index}"})

    def predict(self, inputs: Sequence[str | Sequence[str] | Mapping[str, str]],
                batch_size: int = 0) -> list[dict]:
        """One {"label": ..., "probabilities": {label: p}} per input: a string (tasks of one text
        field), a tuple in the task's field order, or a dict of fields (self.task.fields)."""
        import jax

        from ptjax.data import pipeline

        if self.task.kind not in ("classification", "multiple_choice"):
            raise InputError(f"{self.config.restore}: task {self.task.name} is {self.task.kind}; predict() "
                             "classifies text (classification and multiple-choice tasks); generate() writes text")
        examples = [self._example(i, value) for i, value in enumerate(inputs)]
        formulation = self.data.formulation
        features = formulation.featurize(examples)
        if len(features) != len(examples):
            raise InputError(f"task {self.task.name}: {len(features)} model inputs for {len(examples)} "
                             "examples; predict() needs one input per example")
        split = pipeline.prepare_split("predict", features, self.data.pad_values, self.data.length_groups,
                                       tuple(self.config.task.length_buckets))
        outputs: list[dict | None] = [None] * len(features)
        batch_size = batch_size or self.config.train.eval_batch_size
        for rows, valid, lengths in pipeline.eval_plan(split, batch_size):
            batch = pipeline.collate(split, rows, lengths, valid)
            arrays = {k: v for k, v in batch.items() if k not in (pipeline.VALID, pipeline.INDEX)}
            result = jax.tree.map(np.asarray, self._predict(self._params, arrays))
            for row, (index, ok) in enumerate(zip(rows, valid)):
                if ok:
                    outputs[index] = {k: v[row] for k, v in result.items()}
        answers = formulation.decode(examples, features, outputs)
        return [{"label": answer, "probabilities": self._probabilities(output)}
                for answer, output in zip(answers, outputs)]

    def generate(self, inputs: Sequence[str | Mapping[str, str]], *, template: str = "", batch_size: int = 8,
                 seed: int = 0, devices=None, **settings) -> list[dict]:
        """Text written after each input rendered with the prompt's template (causal LMs continue
        from its [MASK] slot, T5 decodes the slot): one {"text", "tokens", "prompt"} per input.
        devices: split each batch's rows over these local devices (a count or a list; Generator).
        settings: ptjax.generation.search.DecodeSettings fields (strategy="greedy" | "sample" |
        "beam", max_new_tokens, temperature, top_k, top_p, num_beams, stop_tokens, ...)."""
        from ptjax.generation.text import TextGenerator, entry_from_experiment, export_name

        key = (template, batch_size, devices if devices is None or isinstance(devices, int) else tuple(devices))
        if self._generator is None or self._generator[0] != key:
            entry = entry_from_experiment(export_name(self.config.restore), self._experiment, self._trainable,
                                          template)
            self._generator = (key, TextGenerator(self._experiment.backbone, [entry], batch_size=batch_size,
                                                  devices=devices))
        return self._generator[1].generate(inputs, seed=seed, **settings)

    def _probabilities(self, output: dict) -> dict[str, float]:
        """Softmax of the head's label scores (empty for heads without them, such as WSC's referent)."""
        if "scores" not in output:
            return {}
        scores = np.asarray(output["scores"], np.float64)[: len(self.labels)]
        shifted = np.exp(scores - scores.max())
        return {label: float(p) for label, p in zip(self.labels, shifted / shifted.sum())}
