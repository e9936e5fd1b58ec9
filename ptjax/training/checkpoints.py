"""Checkpoints for resuming, best-on-dev checkpoints and prompt-only exports (orbax).

    DIR/checkpoints/latest/<step>/   trainable params + optimizer state + run metadata (step,
                                     data position, rng, best metric so far); keep-N, async
    DIR/checkpoints/best/<step>/     trainable params of the best dev evaluations (keep_best)
    DIR/export/                      prompt-only export: trainable params + method metadata +
                                     backbone fingerprint, what `mode=eval restore=...` loads

The frozen backbone is never saved: it is read again from its own checkpoint. Every save goes
through orbax's temporary-directory-then-rename finalize, and the export is renamed into place
only once complete, so a crash never leaves a half-written checkpoint or export behind. A step
that still cannot be read (a damaged disk, a truncated copy) is skipped with one warning and
moved to DIR/checkpoints/unreadable/; the run resumes from the newest step that reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils

from ptjax.errors import InputError, write_failure

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


class _QuietWriteFailures(logging.Filter):
    """Orbax logs a save that fails on a full or read-only disk from each of its background
    threads, with a traceback apiece, before the same error reaches the training loop, which
    reports it as one line (ptjax/errors.py). Drop those log records; keep every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or "orbax" not in record.pathname:
            return True
        failure = record.exc_info[1] if record.exc_info else RuntimeError(record.getMessage())
        return write_failure(failure, None) is None


_QUIET_WRITE_FAILURES = _QuietWriteFailures()


def _quiet_closed_loop_callbacks() -> None:
    """A restore that fails on one array leaves tensorstore callbacks for the others, which find
    orbax's event loop closed and report it through sys.unraisablehook (a dozen tracebacks after
    the one real error). Those reports carry no information: drop them, pass on anything else."""
    previous = sys.unraisablehook
    if getattr(previous, "ptjax_quiet", False):
        return

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    hook.ptjax_quiet = True
    sys.unraisablehook = hook


def unreadable_reason(err: BaseException) -> str:
    """The first line of a read error, without tensorstore's spec dump."""
    text = " ".join(str(err).split(" [tensorstore_spec")[0].split())
    return f"{type(err).__name__}: {text[:300]}"


class Checkpoints:
    """The latest-N and best-K checkpoint managers of one workdir."""

    def __init__(self, workdir: str | Path, *, keep: int, keep_best: int, best_mode: str,
                 async_save: bool):
        root = self.root = Path(workdir).resolve() / "checkpoints"
        self.best_mode = best_mode
        logging.getLogger("absl").addFilter(_QUIET_WRITE_FAILURES)  # once: filters are a set
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

    def restore_latest(self, trainable_target: Any, opt_state_target: Any,
                       warn: Callable[[str], None] = print) -> tuple[dict, Any, dict] | None:
        """(trainable, opt_state, meta) of the newest checkpoint that reads, placed like the
        targets; None when there is none. Newer steps that do not read are named through `warn`
        and, once an older one has read, moved to checkpoints/unreadable/ (kept, not deleted);
        when no step reads, an InputError names the folder and nothing moves."""
        skipped = []
        _quiet_closed_loop_callbacks()
        self.latest.reload()
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                restored = self.latest.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore({"trainable": trainable_target, "opt_state": opt_state_target}),
                    meta=ocp.args.JsonRestore(),
                ))
                meta = dict(restored.meta)
                if meta.get("step") != step:
                    raise ValueError(f"its metadata names step {meta.get('step')!r}")
            except Exception as err:  # noqa: BLE001  any damage: try the next older step
                skipped.append(step)
                warn(f"warning: checkpoint {self.root / 'latest' / str(step)} cannot be read "
                     f"({unreadable_reason(err)}); skipping it")
                continue
            self._set_aside(skipped)
            return restored.state["trainable"], restored.state["opt_state"], meta
        if skipped:
            raise InputError(f"{self.root / 'latest'}: no checkpoint step can be read (tried "
                             f"{', '.join(map(str, skipped))}); move the folder away to start afresh")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Move unreadable `latest` steps out of the manager's folder, so that training past them
        saves those steps again; every process waits for the move."""
        if not steps:
            return
        if jax.process_index() == 0:
            aside = self.root / "unreadable"
            aside.mkdir(exist_ok=True)
            for step in steps:
                target = aside / f"latest-{step}"
                n = 1
                while target.exists():
                    target, n = aside / f"latest-{step}.{n}", n + 1
                (self.root / "latest" / str(step)).rename(target)
        multihost_utils.sync_global_devices("ptjax-unreadable-moved")
        self.latest.reload()

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

    def restore_best(self, trainable_target: dict,
                     warn: Callable[[str], None] = print) -> tuple[dict, dict] | None:
        """(trainable, meta) of the best checkpoint that reads (an unreadable one is named
        through `warn` and the next best tried); None when there is none."""
        if self.best_step() is None:
            return None
        _quiet_closed_loop_callbacks()
        scores = {step: (self.best.metrics(step) or {}).get("score") for step in self.best.all_steps()}
        scores = {step: score for step, score in scores.items() if score is not None}
        order = sorted(scores, key=lambda s: scores[s], reverse=self.best_mode == "max")
        for step in order:
            try:
                restored = self.best.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(trainable_target), meta=ocp.args.JsonRestore(),
                ))
                return restored.state, dict(restored.meta)
            except Exception as err:  # noqa: BLE001  any damage: the next best one
                warn(f"warning: best checkpoint {self.root / 'best' / str(step)} cannot be read "
                     f"({unreadable_reason(err)}); skipping it")
        return None

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
    prompt, head and task settings (ptjax/training/export_config.py)."""
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


@contextlib.contextmanager
def _reading_export(path: Path) -> Iterator[None]:
    """A damaged export (truncated or missing files) is bad input, one line naming it."""
    _quiet_closed_loop_callbacks()
    try:
        yield
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001  orbax, tensorstore and JSON errors alike
        raise InputError(f"{path}: the prompt export cannot be read ({unreadable_reason(err)}); "
                         f"write it again (rerun its training workdir) or restore another") from None


def read_export_metadata(path: str | Path) -> dict:
    path = resolve_export(path)
    with _reading_export(path), ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
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
    with _reading_export(path), ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
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
    with _reading_export(path), ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(trainable_target),
        ))
    return restored.params, info
