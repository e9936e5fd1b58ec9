"""JAX's persistent compilation cache: a rerun (a resumed job, the next sweep point, the next
evaluation) loads the compiled train and eval steps from disk instead of compiling them again.

On GPU and TPU the compile of a large step takes minutes (autotuning included: 381 s for the
unrolled 1B step on an H100, BENCHMARKS.md), so "auto" turns the cache on there. On CPU "auto"
leaves it off: XLA:CPU compiles for the host's instruction set, and a cache folder shared by
different machines (a home directory on NFS) could hand one machine another's executable. Name a
folder to use it on CPU too.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from ptjax.errors import InputError


def resolve(setting: str, backend: str) -> Path | None:
    """The cache folder for config.compilation_cache_dir on a backend ("cpu", "gpu", "tpu"), or
    None when the cache stays off. setting: "auto" ($PTJAX_COMPILATION_CACHE, else
    $XDG_CACHE_HOME/ptjax/xla, else ~/.cache/ptjax/xla; off on CPU), "" (off) or a folder."""
    if setting == "auto":
        if backend == "cpu":
            return None
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ptjax" / "xla"
        return Path(os.environ.get("PTJAX_COMPILATION_CACHE", default)).expanduser()
    return Path(setting).expanduser() if setting else None


def enable(setting: str) -> Path | None:
    """Points JAX's persistent cache at resolve(setting, the default backend); call before the
    first compile. With "auto", a folder already given to JAX ($JAX_COMPILATION_CACHE_DIR) is
    kept. Steps that compile in under a second are not stored (JAX's own threshold,
    $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS)."""
    if setting == "auto" and jax.config.jax_compilation_cache_dir:  # $JAX_COMPILATION_CACHE_DIR
        return Path(jax.config.jax_compilation_cache_dir)
    folder = resolve(setting, jax.default_backend())
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"config.compilation_cache_dir={setting!r}: cannot create {folder}: {err}") from None
        jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder
