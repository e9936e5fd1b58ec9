"""The layer stack every backbone repeats its layer with: parameters stacked on a leading
`layers` axis, scanned or unrolled, with a remat policy; and decoding's variant with one parameter
tree per layer."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def layer_stack(
    layer_cls: type[nn.Module],
    *,
    num_layers: int,
    remat_policy: str = "none",
    scan_layers: bool = True,
    in_axes: tuple = (),
    per_layer_params: bool = False,
) -> type[nn.Module]:
    """`layer_cls` repeated `num_layers` times over a carried hidden state.

    Parameters are stacked on a leading `layers` axis (one layout whatever scan_layers says).
    scan_layers=True compiles one layer body inside a loop (fast compiles for deep models);
    False unrolls the loop (longer compiles, more room for XLA to schedule). The layer's
    __call__ is (hidden, *args) -> (hidden, per_layer_output); `in_axes` gives, per extra
    argument, 0 (sliced per layer) or nn.broadcast (same for every layer).

    per_layer_params=True is for decoding only: the same computation, unrolled, with one
    parameter tree per layer ("0", "1", ...; `unstack_layer_params` converts). A step that
    reads each layer from the stacked arrays copies every weight matrix out of them first
    (XLA:CPU slices into a new buffer before a dot), which costs a decoding step, whose dots
    read each weight once, much of its time.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
    if per_layer_params:
        def build(*args, name=None, **kwargs):
            return _LayerLoop(layer_cls, num_layers, tuple(in_axes), args, tuple(sorted(kwargs.items())), name=name)
        return build
    if remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)
    return nn.scan(
        layer_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=in_axes,
        length=num_layers,
        unroll=1 if scan_layers else num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


@struct.dataclass
class PerLayer:
    """Values one per layer, where arrays with a leading layer axis would copy: an argument of
    layer_stack(per_layer_params=True) (layer i gets layers[i]), or a layer's output (a one-entry
    PerLayer; the loop joins the layers' entries in order)."""

    layers: tuple


class _LayerLoop(nn.Module):
    """layer_stack(per_layer_params=True): the layers as submodules "0".."num_layers-1"."""

    layer_cls: Any
    num_layers: int
    in_axes: tuple
    layer_args: tuple
    layer_kwargs: tuple  # (name, value) pairs

    @nn.compact
    def __call__(self, carry, *args):
        outputs = []
        for i in range(self.num_layers):
            sliced = [arg if axis is nn.broadcast else arg.layers[i] if isinstance(arg, PerLayer)
                      else jax.tree.map(lambda x, i=i: x[i], arg) for arg, axis in zip(args, self.in_axes)]
            layer = self.layer_cls(*self.layer_args, name=str(i), **dict(self.layer_kwargs))
            carry, output = layer(carry, *sliced)
            outputs.append(output)
        return carry, jax.tree.map(_gather_layers, *outputs, is_leaf=lambda x: isinstance(x, PerLayer))


def _gather_layers(*outputs):
    """The layers' outputs as one: arrays stacked on a leading layer axis, PerLayer ones joined."""
    if isinstance(outputs[0], PerLayer):
        return PerLayer(tuple(value for output in outputs for value in output.layers))
    return jnp.stack(outputs)


def unstack_layer_params(params: dict) -> dict:
    """Parameters with stacked layer stacks (every "layers" subtree, leaves [layers, ...]) -> the
    layout of layer_stack(per_layer_params=True): {"layers": {"0": ..., "1": ...}}. Copies."""
    out = {}
    for key, value in params.items():
        if key == "layers":
            count = jax.tree.leaves(value)[0].shape[0]
            out[key] = {str(i): jax.tree.map(lambda x, i=i: x[i], value) for i in range(count)}
        elif isinstance(value, dict):
            out[key] = unstack_layer_params(value)
        else:
            out[key] = value
    return out
