"""`save_backbone`: trained backbone weights written back as a transformers folder, the format
`open_backbone` reads (config.json, tokenizer files, model*.safetensors), so a backbone changed
by training (LM adaptation, ptjax/training/lm_adaptation.py) is then used as `model.name=FOLDER`.

    save_backbone(backbone, params, "runs/lm_adapted/backbone")

Each ptjax parameter was read from checkpoint tensors through a `TensorRule` (a transpose, a
reshape, a slice of a fused tensor, the GGUF RoPE row order). Those transforms only move
elements, so each one's inverse is found by applying it to the tensor's element indices: the
trained values are scattered back to where the checkpoint keeps them, in the transformers
layout. Every rewritten tensor is then read back through its rule and compared with the trained
parameter, so a transform that is not a rearrangement (or two parameters that share a tensor but
differ) is refused rather than saved wrong. Tensors no rule reads (buffers, unused heads) are
copied unchanged. Weights are written in float32, in shards of at most `shard_bytes`; the folder
appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from ptjax.models.loading import Backbone, _strip_prefixes, load_hf_config_and_tokenizer
from ptjax.models.tensor_sources import open_tensor_source

SHARD_BYTES = 2 << 30


def _uses(backbone: Backbone, params: dict, names: dict[str, str]) -> dict[str, list[tuple[tuple, int | None]]]:
    """checkpoint tensor name -> the (parameter path, layer or None) that read it."""
    rules = backbone.family.weight_map(backbone.config)
    uses: dict[str, list] = defaultdict(list)
    for path, value in traverse_util.flatten_dict(params).items():
        rule = rules[path]
        for layer in (range(value.shape[0]) if rule.per_layer else (None,)):
            uses[names[rule.source.format(i=layer) if rule.per_layer else rule.source]].append((path, layer))
    return uses


def _rewritten(name: str, original: np.ndarray, uses, flat_params: dict, rules: dict) -> np.ndarray:
    """float32 `original` with every parameter slice that reads it scattered back in place."""
    tensor = np.array(original, np.float32)
    positions = np.arange(tensor.size, dtype=np.int64).reshape(tensor.shape)
    trained = {}
    for path, layer in uses:
        rule = rules[path]
        value = flat_params[path] if layer is None else flat_params[path][layer]
        value = np.asarray(jax.device_get(value), np.float32)
        index = np.asarray(rule.transform(positions))
        if index.shape != value.shape or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"{name}: the rule for {'/'.join(path)} does not only move elements; cannot invert it")
        tensor.reshape(-1)[index.reshape(-1)] = value.reshape(-1)
        trained[(path, layer)] = (rule, value)
    for (path, layer), (rule, value) in trained.items():  # read back as the loader will
        if not np.array_equal(np.asarray(rule.transform(tensor), np.float32), value):
            raise ValueError(f"{name}: parameter {'/'.join(path)} (layer {layer}) does not read back unchanged; "
                             "two parameters share this tensor with different values")
    return tensor


def save_backbone(backbone: Backbone, params: dict, out: str | os.PathLike, *, shard_bytes: int = SHARD_BYTES,
                  provenance: dict[str, Any] | None = None) -> Path:
    """Write `params` (the backbone's parameter tree, trained) as a transformers folder at `out`.
    provenance: written beside it as ptjax_provenance.json (what made these weights)."""
    from safetensors.numpy import save_file

    if backbone.files is None:
        raise ValueError(f"{backbone.name}: an architecture without a checkpoint has no tensors to rewrite")
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf_config, tokenizer = load_hf_config_and_tokenizer(backbone.files)
    hf_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    source = open_tensor_source(backbone.files.weights)
    try:
        names = _strip_prefixes(source.names(), backbone.family.checkpoint_prefixes)
        rules = backbone.family.weight_map(backbone.config)
        flat_params = traverse_util.flatten_dict(params)
        uses = _uses(backbone, params, names)
        shard: dict[str, np.ndarray] = {}
        written: list[tuple[str, list[str], int]] = []  # (file, tensor names, bytes) per full shard

        def flush():  # one shard in memory at a time: written, then dropped
            file = f"shard-{len(written)}.safetensors"
            save_file(shard, str(tmp / file), metadata={"format": "pt"})
            written.append((file, list(shard), sum(t.nbytes for t in shard.values())))
            shard.clear()

        for name in sorted(source.names()):
            original = source.read(name)
            tensor = (_rewritten(name, original, uses[name], flat_params, rules) if name in uses
                      else np.ascontiguousarray(original if original.dtype.kind in "iub" else
                                                np.asarray(original, np.float32)))
            if shard and sum(t.nbytes for t in shard.values()) + tensor.nbytes > shard_bytes:
                flush()
            shard[name] = tensor
        flush()
        count = len(written)
        files = ["model.safetensors"] if count == 1 else [f"model-{k + 1:05d}-of-{count:05d}.safetensors"
                                                          for k in range(count)]
        for (file, _, _), final in zip(written, files):
            os.replace(tmp / file, tmp / final)
        if count > 1:
            weight_map = {name: final for (_, tensors, _), final in zip(written, files) for name in tensors}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": sum(size for _, _, size in written)}, "weight_map": weight_map}, indent=1))
    finally:
        source.close()
    (tmp / "ptjax_provenance.json").write_text(json.dumps({"base": backbone.name, **(provenance or {})}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
