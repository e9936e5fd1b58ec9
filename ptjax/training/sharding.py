"""Device mesh, logical-axis rules and the NamedShardings of params, optimizer state and batches.

    mesh = build_mesh(config)                       # axes ("data", "fsdp", "tensor")
    rules = logical_axis_rules(config)              # (("embed", ("fsdp",)), ...)
    shardings = param_shardings(mesh, rules, shapes, logical_axes)

Each parameter dimension takes the mesh axes its logical name maps to, as many of them (in rule
order) as divide the dimension and are not already used by another dimension of the same
parameter; the rest stays replicated. Everything under params["prompt"] is replicated: prompts
are tiny and every device reads all of them.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ptjax.training.config import MESH_AXES, mesh_shape

Rules = tuple[tuple[str, tuple[str, ...]], ...]
REPLICATED_GROUPS = ("prompt",)
BATCH = "batch"


def build_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """Mesh over `devices` (default: all, every process) shaped by config.mesh."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config.mesh, len(devices))
    sizes = tuple(shape[a] for a in MESH_AXES)
    if devices[0].platform == "tpu":
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(sizes, devices)
    else:
        # Processes own contiguous blocks of the leading (data) axis, so each host's batch rows
        # are one contiguous slice.
        ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
        grid = np.array(ordered, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _names(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def mesh_spec(logical: PartitionSpec | tuple, shape: tuple[int, ...], mesh: Mesh,
              rules: Rules) -> PartitionSpec:
    """Logical PartitionSpec -> mesh PartitionSpec for an array of `shape` (see module doc)."""
    rule_map = dict(rules)
    used: set[str] = set()
    spec = []
    logical = tuple(logical) + (None,) * (len(shape) - len(tuple(logical)))
    for dim, entry in zip(shape, logical):
        axes = []
        for name in _names(entry):
            for axis in rule_map.get(name, ()):
                size = mesh.shape[axis]
                if axis in used or size == 1:
                    continue
                if dim % (math.prod(mesh.shape[a] for a in axes) * size):
                    continue
                axes.append(axis)
                used.add(axis)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def param_shardings(mesh: Mesh, rules: Rules, shapes: dict, logical_axes: dict) -> dict:
    """NamedSharding tree for a params tree ({"backbone": ..., "prompt": ..., "head": ...})."""
    flat_shapes = traverse_util.flatten_dict(shapes)
    flat_logical = traverse_util.flatten_dict(
        logical_axes, is_leaf=lambda _, x: isinstance(x, PartitionSpec) or x is None
    )
    out = {}
    for path, shape in flat_shapes.items():
        logical = flat_logical.get(path)
        if path[0] in REPLICATED_GROUPS or logical is None:
            out[path] = replicated(mesh)
        else:
            out[path] = NamedSharding(mesh, mesh_spec(logical, tuple(shape.shape), mesh, rules))
    return traverse_util.unflatten_dict(out)


def opt_state_shardings(opt_state_shapes: Any, trainable_shardings: dict, trainable_shapes: dict,
                        mesh: Mesh) -> Any:
    """Shardings for an optimizer state: a leaf shaped like the param it belongs to (Adam
    moments, found by the trailing dict keys of its tree path) takes that param's sharding;
    counters, factored statistics and other small leaves are replicated."""
    flat_shardings = traverse_util.flatten_dict(trainable_shardings)
    flat_shapes = traverse_util.flatten_dict(trainable_shapes)

    def pick(key_path, leaf):
        keys = []
        for entry in reversed(key_path):
            if not isinstance(entry, jax.tree_util.DictKey):
                break
            keys.insert(0, entry.key)
        for start in range(len(keys)):
            path = tuple(keys[start:])
            if path in flat_shardings and tuple(flat_shapes[path].shape) == tuple(leaf.shape):
                return flat_shardings[path]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, opt_state_shapes)


def batch_spec(rules: Rules, ndim: int) -> PartitionSpec:
    axes = dict(rules).get(BATCH, ())
    first = None if not axes else axes[0] if len(axes) == 1 else tuple(axes)
    return PartitionSpec(first, *([None] * (ndim - 1)))


def batch_shardings(mesh: Mesh, rules: Rules, batch_shapes: dict) -> dict:
    """field -> NamedSharding with the leading (batch) axis over the batch rule's mesh axes."""
    return {k: NamedSharding(mesh, batch_spec(rules, len(s))) for k, s in batch_shapes.items()}


def host_rows(mesh: Mesh, rules: Rules, global_batch: int) -> tuple[int, int]:
    """[start, stop) of the global batch rows this process feeds (its devices' shards)."""
    sharding = NamedSharding(mesh, batch_spec(rules, 1))
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((global_batch,)).values():
        rows = index[0]
        start, stop, _ = rows.indices(global_batch)
        starts.append(start)
        stops.append(stop)
    start, stop = min(starts), max(stops)
    covered = set()
    for a, b in zip(starts, stops):
        covered.update(range(a, b))
    if len(covered) != stop - start:
        raise RuntimeError("this process's batch shards are not one contiguous block of rows")
    return start, stop


def global_batch(local: dict[str, np.ndarray], shardings: dict[str, NamedSharding],
                 global_size: int) -> dict[str, jax.Array]:
    """Assemble global arrays from this process's rows (all rows when single-process)."""
    out = {}
    for key, value in local.items():
        shape = (global_size,) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(shardings[key], value, shape)
    return out
