"""Prompt exports carry the config they were trained with; evaluating one rebuilds it.

A training run records its whole config in DIR/export (checkpoints.write_export's `config`).
Mode "eval" with config.restore=EXPORT then runs with that config, and the caller's config only
supplies what it sets itself: data and evaluation options (data_dir, task.eval_splits,
task.max_eval_examples, task.length_buckets, task.options, train.eval_batch_size, model dtypes and
kernels, mesh, logging). The settings that shape the trained parameters and how examples become
inputs (CARRIED: the backbone, task, method, prompt and head) always come from the export; one
the caller sets to something else is refused, naming the key:

    config = config_for_export(config, "runs/rte/export", explicit=("method.name",))

"Set" means: different from configs/base.py's default, or named on the command line (explicit).
An export written before configs were recorded is evaluated with the caller's config as it is.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from ptjax.errors import InputError

# Keys (or key prefixes ending in ".") that an evaluation takes from the export.
CARRIED = ("model.name", "task.name", "task.max_length", "method.", "prompt.", "head.")


def recordable(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON-able values, for the export's metadata."""
    return config.to_dict()


def is_carried(key: str) -> bool:
    return any(key == c or (c.endswith(".") and key.startswith(c)) for c in CARRIED)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a nested dict or ConfigDict."""
    items = tree.items() if hasattr(tree, "items") else ()
    flat = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)) and (len(value) or key != "options"):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _same(a: Any, b: Any) -> bool:
    normal = lambda v: tuple(normal(x) for x in v) if isinstance(v, (list, tuple)) else v  # JSON lists
    return normal(a) == normal(b)


def _assign(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    if isinstance(node[leaf] if leaf in node else None, tuple) and isinstance(value, list):
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    node[leaf] = value


def config_for_export(config: ml_collections.ConfigDict, restore: str, *,
                      explicit: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """The config to evaluate the export `restore` with (see the module docstring)."""
    from ptjax.configs import base
    from ptjax.training.checkpoints import read_export_metadata, resolve_export

    info = read_export_metadata(restore)
    recorded = info.get("config")
    if not recorded:
        return config
    path = resolve_export(restore)
    defaults = flatten(base.get_config())
    given = flatten(config)
    rebuilt = base.get_config()
    for key, value in flatten(recorded).items():
        if key in defaults or key.startswith("task.options."):
            _assign(rebuilt, key, value)
    recorded = flatten(rebuilt)
    for key, value in given.items():
        set_here = key in explicit or key not in defaults or not _same(value, defaults[key])
        if not set_here:
            continue
        if is_carried(key):
            if not _same(value, recorded.get(key)):
                raise InputError(
                    f"config.{key}={value!r} contradicts the export {path}, trained with {key}="
                    f"{recorded.get(key)!r}; an export is evaluated with its own backbone, task, method, "
                    f"prompt and head settings: leave config.{key} out")
            continue
        _assign(rebuilt, key, value)
    if rebuilt.prompt.init in ("pretrained", "frequent_words", "task_words"):
        # The export's parameters replace the starting prompt, so the pre-trained prompt (or MPT-2
        # run), corpus or training data it started from is not read, and need not exist where the
        # export is evaluated.
        rebuilt.prompt.init, rebuilt.prompt.init_from, rebuilt.prompt.init_corpus = "random", "", ""
    return rebuilt
