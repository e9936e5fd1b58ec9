"""The config a workdir was started with (DIR/config.json), and what a rerun may change.

A rerun in the same workdir resumes from its checkpoints. Before anything is restored, its config
is compared with the recorded one:

- a change to a key that shapes the saved state (STATE_KEYS: the backbone, the task, the method,
  the prompt and head, the optimizer kind) is refused with one line naming the keys: the
  checkpoint would not fit, or would mean something else;
- any other change (learning rate, seed, steps, batch size, ...) is allowed, named in one warning
  line and recorded in metrics.jsonl as {"kind": "config_change", "changed": {key: [old, new]}}.

A key the record lacks and the config holds at configs/base.py's default is no change: a newer
ptjax added it, with a default that keeps what the older one did, so its workdirs still resume.

    changed = compare(workdir, config, resuming=True)   # raises InputError; else {key: (old, new)}
    record(workdir, config)                              # written once, by a run that starts afresh
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import ml_collections

from ptjax.errors import InputError
from ptjax.training.export_config import flatten

CONFIG_FILE = "config.json"

# Keys (a trailing "." marks a section) whose change makes the saved state unusable: other
# parameter shapes or names, another optimizer state tree, or the same shapes meaning something
# else (another backbone, another label set). The prompt's initialization is read at step 0 only.
STATE_KEYS = ("model.name", "task.name", "task.train_split", "task.options.", "method.", "prompt.", "head.",
              "optimizer.name")
INIT_ONLY = ("prompt.init", "prompt.init_text", "prompt.init_from")
# Keys whose zero and non-zero values build different optimizer state trees (a momentum trace,
# a clipping or weight-decay stage), while any two non-zero values share one.
ZERO_CHANGES_STATE = ("optimizer.momentum", "optimizer.clip_norm", "optimizer.weight_decay")
# Keys that never change what a resumed run computes (how often and how many checkpoints are
# kept does not either: logging windows and the data position come from the checkpoint itself).
IGNORED = ("mode", "restore", "logging.", "compilation_cache_dir", "sweep.", "plan.", "checkpoint.")
# Keys that choose how a run executes or what it writes beside its results, never its metrics:
# a sweep keeps its finished runs when they change (ptjax/sweep.py). (checkpoint.keep_best and
# checkpoint.export do count: which step's parameters the results report.)
NOT_RESULTS = ("logging.", "compilation_cache_dir", "sweep.", "plan.", "mesh.", "predictions.",
               "checkpoint.every_steps", "checkpoint.keep", "checkpoint.async_save")


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists, placeholders None)."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def changes(recorded: dict, config: ml_collections.ConfigDict,
            ignored: tuple[str, ...] = IGNORED) -> dict[str, tuple[Any, Any]]:
    """{key: (recorded value, new value)} for every key that differs, `ignored` keys and keys
    added since the record (absent from it, at their default now) left out."""
    old, new = flatten(recorded), flatten(as_json(config))
    defaults = _defaults()
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) and not _matches(key, ignored)
            and not (key not in old and key in defaults and new[key] == defaults[key])}


@functools.cache
def _defaults() -> dict[str, Any]:
    from ptjax.configs import base

    return flatten(as_json(base.get_config()))


def changes_state(key: str, old: Any, new: Any, config: ml_collections.ConfigDict) -> bool:
    if _matches(key, INIT_ONLY):
        return False
    if key in ZERO_CHANGES_STATE:
        return bool(old) != bool(new)
    if key == "model.scan_layers":  # stacked or per-layer backbone weights, when they train
        return config.method.name == "fine_tune" or bool(config.method.train_backbone)
    return _matches(key, STATE_KEYS)


def compare(workdir: str | Path, config: ml_collections.ConfigDict, *, resuming: bool) -> dict[str, tuple]:
    """The allowed changes since the workdir's recorded config (empty when there is no record, or
    nothing to resume: a run that stopped before its first checkpoint starts afresh). Raises an
    InputError naming the keys whose change makes the saved state unusable."""
    path = Path(workdir) / CONFIG_FILE
    if not resuming or not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the config this workdir was started with ({err}); "
                         f"delete the file to resume without the check") from None
    changed = changes(recorded, config)
    refused = {k: v for k, v in changed.items() if changes_state(k, *v, config)}
    if refused:
        raise InputError(
            f"{Path(workdir)}: its checkpoints were made with another "
            + ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, (a, b) in refused.items())
            + "; they cannot be resumed with this config (use a new --workdir, or set these back)"
        )
    return changed


def describe(changed: dict[str, tuple]) -> str:
    return ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changed.items())


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def record(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    """Write DIR/config.json (atomically; a rerun keeps the first run's record while it resumes)."""
    from ptjax.training.reporting import write_json_atomic

    write_json_atomic(Path(workdir) / CONFIG_FILE, as_json(config))
