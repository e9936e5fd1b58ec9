"""Checkpoints for resuming, best-on-dev checkpoints and prompt-only exports (orbax).

    DIR/checkpoints/latest/<step>/   trainable params + optimizer state + run metadata (step,
                                     data position, rng, best metric so far); keep-N, async
    DIR/checkpoints/best/<step>/     trainable params of the best dev evaluations (keep_best)
    DIR/export/                      prompt-only export: trainable params + method metadata +
                                     backbone fingerprint, what `mode=eval restore=...` loads

The frozen backbone is never saved: it is read again from its own checkpoint. Every save goes
through orbax's temporary-directory-then-rename finalize, and the export is renamed into place
only once complete, so a crash never leaves a half-written checkpoint or export behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils

from ptjax.errors import InputError

EXPORT_FORMAT = "ptjax-prompt-export/1"


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a tree of arrays, as orbax restore targets."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def param_table(tree: dict) -> dict[str, list[int]]:
    """{"prompt/embedding": [20, 384], ...}: the layout an export holds, for clear mismatches."""
    return {"/".join(p): list(v.shape) for p, v in sorted(traverse_util.flatten_dict(tree).items())}


def _barriers(name: str) -> ocp.options.MultiprocessingOptions:
    """Each manager's own barrier names: with several processes, the async saves of `latest` and
    `best` at one step finalize concurrently, and shared names collide ("barrier already ongoing")."""
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


class Checkpoints:
    """The latest-N and best-K checkpoint managers of one workdir."""

    def __init__(self, workdir: str | Path, *, keep: int, keep_best: int, best_mode: str,
                 async_save: bool):
        root = Path(workdir).resolve() / "checkpoints"
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True, multiprocessing_options=_barriers("latest"),
            ),
        )
        self.best = None
        if keep_best:
            self.best = ocp.CheckpointManager(
                root / "best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=keep_best, create=True, enable_async_checkpointing=async_save,
                    best_fn=lambda metrics: metrics["score"], best_mode=best_mode,
                    keep_checkpoints_without_metrics=False, cleanup_tmp_directories=True,
                    multiprocessing_options=_barriers("best"),
                ),
            )

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, trainable: dict, opt_state: Any, meta: dict) -> None:
        self.latest.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"trainable": trainable, "opt_state": opt_state}),
            meta=ocp.args.JsonSave(meta),
        ), force=True)

    def restore_latest(self, trainable_target: Any, opt_state_target: Any) -> tuple[dict, Any, dict]:
        """(trainable, opt_state, meta) of the latest checkpoint, placed like the targets."""
        step = self.latest.latest_step()
        restored = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"trainable": trainable_target, "opt_state": opt_state_target}),
            meta=ocp.args.JsonRestore(),
        ))
        return restored.state["trainable"], restored.state["opt_state"], dict(restored.meta)

    def save_best(self, step: int, trainable: dict, score: float, meta: dict) -> None:
        if self.best is None:
            return
        if step in self.best.all_steps():
            # A run killed after this evaluation but before its next `latest` save replays the
            # step on resume: the replay's checkpoint replaces the first one.
            self.best.delete(step)
        self.best.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(trainable), meta=ocp.args.JsonSave(meta),
        ), metrics={"score": float(score)}, force=True)

    def best_step(self) -> int | None:
        if self.best is None:
            return None
        self.best.wait_until_finished()
        return self.best.best_step()

    def restore_best(self, trainable_target: dict) -> tuple[dict, dict] | None:
        step = self.best_step()
        if step is None:
            return None
        restored = self.best.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(trainable_target), meta=ocp.args.JsonRestore(),
        ))
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()


# --------------------------------------------------------------------------------------------
# Prompt-only exports.


def write_export(path: str | Path, trainable: dict, *, metadata: dict, fingerprint: str,
                 backbone: str, config: dict | None = None) -> Path:
    """Write trainable params + metadata to `path` (a folder), replacing an older export only
    after the new one is complete. Every process calls this (orbax saves collectively).
    config: the run's config as plain values, from which evaluation rebuilds the method,
    prompt, head and task settings (ptjax/train/export_config.py)."""
    path = Path(path).resolve()
    partial = path.with_name(path.name + ".partial")
    previous = path.with_name(path.name + ".previous")
    info = {
        "format": EXPORT_FORMAT,
        "backbone": backbone,
        "fingerprint": fingerprint,
        "params": param_table(trainable),
        "method": metadata,
    }
    if config is not None:
        info["config"] = config
    primary = jax.process_index() == 0
    if primary and partial.exists():
        shutil.rmtree(partial)
    multihost_utils.sync_global_devices("ptjax-export-start")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(partial, args=ocp.args.Composite(
            params=ocp.args.StandardSave(trainable), metadata=ocp.args.JsonSave(info),
        ))
    if primary:
        if path.exists():
            if previous.exists():
                shutil.rmtree(previous)
            path.rename(previous)
        partial.rename(path)
        if previous.exists():
            shutil.rmtree(previous)
    multihost_utils.sync_global_devices("ptjax-export-done")
    return path


def resolve_export(path: str | Path) -> Path:
    """An export folder, or a workdir that holds one in export/."""
    path = Path(path).expanduser()
    if (path / "export" / "metadata").is_dir():
        path = path / "export"
    if not path.exists():
        raise InputError(f"config.restore={str(path)!r}: no such file or folder")
    if not (path / "metadata").is_dir() or not (path / "params").is_dir():
        raise InputError(
            f"config.restore={str(path)!r}: not a prompt export (a training run writes one to "
            f"WORKDIR/export)"
        )
    return path.resolve()


def read_export_metadata(path: str | Path) -> dict:
    path = resolve_export(path)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
    info = dict(restored.metadata)
    if info.get("format") != EXPORT_FORMAT:
        raise InputError(f"{path}: unknown export format {info.get('format')!r} (expected {EXPORT_FORMAT})")
    return info


def check_fingerprint(path: str | Path, info: dict, fingerprint: str) -> None:
    if info["fingerprint"] != fingerprint:
        raise InputError(
            f"{path}: this prompt was trained on backbone {info.get('backbone')!r} (fingerprint "
            f"{info['fingerprint']}), but the configured backbone has fingerprint {fingerprint}; "
            f"set config.model.name to the backbone it was trained on"
        )


def read_export_arrays(path: str | Path, *, fingerprint: str | None = None) -> tuple[dict, dict]:
    """(trainable params as float32 numpy arrays, export info) of an export, whatever mesh wrote
    it (restored onto one device from the export's own parameter table). With `fingerprint`,
    refuses an export made on another backbone."""
    path = resolve_export(path)
    info = read_export_metadata(path)
    if fingerprint is not None:
        check_fingerprint(path, info, fingerprint)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = traverse_util.unflatten_dict({
        tuple(name.split("/")): jax.ShapeDtypeStruct(tuple(shape), np.float32, sharding=one_device)
        for name, shape in info["params"].items()})
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    return jax.tree.map(lambda x: np.asarray(x, np.float32), dict(restored.params)), info


def read_export(path: str | Path, trainable_target: dict, *, fingerprint: str) -> tuple[dict, dict]:
    """(trainable params placed like trainable_target, export info). Refuses an export made on
    another backbone or holding parameters of other names or shapes."""
    path = resolve_export(path)
    info = read_export_metadata(path)
    check_fingerprint(path, info, fingerprint)
    expected = param_table(trainable_target)
    if info["params"] != expected:
        missing = sorted(set(expected) - set(info["params"]))
        extra = sorted(set(info["params"]) - set(expected))
        shapes = sorted(k for k in set(expected) & set(info["params"]) if expected[k] != info["params"][k])
        details = "; ".join(part for part in (
            f"missing {missing}" if missing else "",
            f"unexpected {extra}" if extra else "",
            "shape differs for " + ", ".join(f"{k} {info['params'][k]} vs {expected[k]}" for k in shapes)
            if shapes else "",
        ) if part)
        raise InputError(
            f"{path}: the export's parameters do not match the configured method ({details}); "
            f"use the method/prompt config it was trained with: {json.dumps(info['method'])}"
        )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(trainable_target),
        ))
    return restored.params, info
