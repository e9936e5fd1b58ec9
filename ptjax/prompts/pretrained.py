"""Start a soft prompt from a pre-trained one (PPT transfer): config.prompt.init="pretrained".

    config.prompt.init_from = "runs/ppt_pretrain/ppt_nsp"      # a workdir, or its export/ folder
    config.prompt.init_from = "runs/ppt_pretrain"              # a folder of pre-training workdirs:
                                                               # the one named after the task's
                                                               # pre-training format is used

The export (ptjax.training.checkpoints.write_export) must come from the same backbone (its
fingerprint is compared) and hold a plain soft-prompt table [tokens, width] of exactly the size the
configured template asks for; anything else is refused with an InputError naming both sizes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.prompts.encoders import Initializer
from ptjax.training import checkpoints as ckpt

log = logging.getLogger(__name__)

SOFT_TABLE = "prompt/soft/embedding"


def resolve(init_from: str | Path, source_task: str = "") -> Path:
    """The export folder config.prompt.init_from names; `source_task` picks a subfolder of a
    folder of pre-training runs (e.g. "ppt_nsp")."""
    path = Path(init_from).expanduser()
    if source_task and (path / source_task).is_dir() and not (path / "metadata").is_dir():
        path = path / source_task
    if (path / "export" / "metadata").is_dir():
        path = path / "export"
    if not path.exists():
        raise InputError(f"config.prompt.init_from={str(init_from)!r}: no such file or folder")
    if not (path / "metadata").is_dir() or not (path / "params").is_dir():
        wanted = f" (or a folder holding {source_task}/export)" if source_task else ""
        raise InputError(f"config.prompt.init_from={str(init_from)!r}: {path} is not a prompt export; give a "
                         f"pre-training workdir or its export/ folder{wanted}")
    return path.resolve()


def read_prompt(init_from: str | Path, *, fingerprint: str, num_tokens: int, width: int,
                source_task: str = "") -> np.ndarray:
    """float32 [num_tokens, width]: the soft prompt of a prompt export, checked against the
    configured backbone (fingerprint) and prompt size."""
    path = resolve(init_from, source_task)
    table, info = ckpt.read_export_arrays(path, fingerprint=fingerprint)  # a prompt export is small
    shape = info["params"].get(SOFT_TABLE)
    if shape is None:
        raise InputError(f"{path}: holds no soft prompt table {SOFT_TABLE!r} (it has {sorted(info['params'])}); "
                         f"PPT transfer starts from a Lester-style prompt with config.prompt.encoder='none'")
    if list(shape) != [num_tokens, width]:
        raise InputError(
            f"{path}: the pre-trained prompt has {shape[0]} tokens of width {shape[-1]}, but the configured prompt "
            f"has {num_tokens} tokens of width {width}; set config.prompt.length={shape[0]} (the backbone's width "
            f"is fixed)" if len(shape) == 2 else
            f"{path}: the soft prompt is a bank {shape}, not one prompt [tokens, width]")
    trained_on = (info.get("method") or {}).get("task")
    if source_task and trained_on and trained_on != source_task:
        log.warning("%s was trained on %s, not on %s (the task's PPT format)", path, trained_on, source_task)
    for key in SOFT_TABLE.split("/"):
        table = table[key]
    return table


def pretrained_init(vectors) -> Initializer:
    """An initializer that returns `vectors` [tokens, width] (for every prompt of a bank)."""
    vectors = jnp.asarray(vectors, jnp.float32)

    def init(rng, shape, dtype=jnp.float32):
        if tuple(shape[-2:]) != tuple(vectors.shape):
            raise InputError(f"pre-trained prompt {list(vectors.shape)} does not fit a prompt of shape {list(shape)}")
        return jnp.broadcast_to(vectors, shape).astype(dtype)

    return init
