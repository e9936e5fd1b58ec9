"""The last layer computed at the positions a head reads: a head that reads one position per
example ([CLS], a verbalizer's target) needs the last layer's keys and values at every position
but its queries, attention output and feed-forward only there (heads: read_positions; models:
Family.query_positions; config.model.prune_last_layer)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptjax.models.layer_stacks import REMAT_POLICIES, layer_stack
from ptjax.models.layers import Array


def query_rows(x: Array, query_index: Array, axis: int = 1) -> Array:
    """x [batch or 1, ..., length (at `axis`), ...] at the positions query_index [batch, n] ->
    the same with n rows on `axis` (a mask or table shared by the batch is broadcast first)."""
    batch = query_index.shape[0]
    x = jnp.broadcast_to(x, (batch,) + x.shape[1:])
    index = query_index.reshape((batch,) + (1,) * (axis - 1) + (query_index.shape[1],) + (1,) * (x.ndim - axis - 1))
    return jnp.take_along_axis(x, index, axis=axis)


def rows_only(query_positions: Array | None, other_stack: bool, output_hidden_states: bool = False) -> bool:
    """Whether a backbone call computes its last layer at query_positions only
    (stack_computing_rows): asked for, no per-layer outputs wanted, and none of the family's
    stacks that compute every row (`other_stack`: decoding's per-layer parameters or cache, a
    one-layer DeBERTa-v2 convolution)."""
    return query_positions is not None and not other_stack and not output_hidden_states


def pooled_at_first(pool: Callable[[Array], Array], last: Array, positions: Array | None) -> Array:
    """pool(hidden at position 0) [batch, embed] ([CLS] poolers) from last [batch, length, embed],
    or from rows last [batch, n, embed] computed at positions [batch, n]: NaN for an example whose
    rows lack position 0, so a misuse shows."""
    if positions is None:
        return pool(last[:, 0])
    has_first = positions == 0
    column = jnp.argmax(has_first, axis=1)
    pooled = pool(jnp.take_along_axis(last, column[:, None, None], axis=1)[:, 0])
    return jnp.where(jnp.any(has_first, axis=1)[:, None], pooled, jnp.nan)


def _layer_at(index: Array, variables: dict) -> dict:
    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, keepdims=False), variables)


_RECOMPUTED = (jax.lax.dynamic_slice_p, jax.lax.squeeze_p, jax.lax.reshape_p)


def _without_slices(policy: Callable | None) -> Callable:
    """A remat policy (None: save everything) that also saves no slice or reshape, which are done
    again from their (saved or stacked) input. A layer's weights read out of the stack are such a
    slice: saved, each iteration's would be stacked, a copy of the stack."""
    def saveable(primitive, *args, **params) -> bool:
        if primitive in _RECOMPUTED:
            return False
        return True if policy is None else policy(primitive, *args, **params)
    return saveable


def indexed_scan(layer_cls: type[nn.Module], *, num_layers: int, remat_policy: str = "none",
                 in_axes: tuple = ()) -> Callable[..., nn.Module]:
    """layer_cls scanned over the first `num_layers` entries of parameters stacked for more
    layers: build(*args, name=..., **kwargs)(hidden, jnp.arange(num_layers), *layer_args). The
    module's parameters are {"layer": the whole stack}; each iteration reads its layer's entries
    by index, where slicing the stack to num_layers first would copy every weight of it each step
    (XLA materializes the slice before the loop). Each iteration is rematerialized with
    `remat_policy`, and never saves a slice (_without_slices)."""

    class _Indexed(nn.Module):
        layer_args: tuple
        layer_kwargs: tuple  # (name, value) pairs

        @nn.compact
        def __call__(self, hidden, index, *args):
            layer = nn.map_variables(layer_cls, "params", trans_in_fn=functools.partial(_layer_at, index),
                                     mutable=False)
            return layer(*self.layer_args, name="layer", **dict(self.layer_kwargs))(hidden, *args)

    body = nn.remat(_Indexed, policy=_without_slices(REMAT_POLICIES[remat_policy]), prevent_cse=False)
    scanned = nn.scan(body, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                      in_axes=(0,) + tuple(in_axes), length=num_layers)

    def build(*args, name=None, **kwargs):
        return scanned(tuple(args), tuple(sorted(kwargs.items())), name=name)
    return build


def stack_computing_rows(
    layer_cls: type[nn.Module], *, num_layers: int, remat_policy: str = "none", in_axes: tuple = (),
    scan_layers: bool = False, shared_stack: Callable[[int], type[nn.Module]] | None = None,
) -> Callable[..., nn.Module]:
    """layer_stack's stack (the same parameters, stacked on `layers`) whose last layer computes
    only some rows: build(*args, name=..., **kwargs)(hidden, *layer_args,
    query_index=[batch, n]) -> [batch, n, embed], the last layer's output at those positions.

    A head that reads one position per example ([CLS], a verbalizer's target) needs the last
    layer's keys and values at every position but its queries, attention output and
    feed-forward only there: the rest of that layer, forward and backward, is work whose result
    nobody reads. `layer_cls.__call__` takes `query_index` (None: every row) for the last layer.
    Its dropout draws differ from the full stack's (other random streams, fewer rows), so a
    training run is another draw of the same computation; without dropout the outputs equal the
    full stack's rows up to float rounding. scan_layers: the first L-1 layers scanned
    (indexed_scan: they read the stacked parameters in place), else unrolled, the first of them
    outside the stack's loop (see below). shared_stack(n):
    the stack of n layers for a model whose layers share one parameter set (ALBERT), which then
    goes whole to both parts.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
    one_layer_cls = layer_cls if remat_policy == "none" else nn.remat(
        layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)

    def split(variables):
        params = variables["params"]
        if shared_stack is not None:
            return {"params": {"first": params, "last": params}}
        last = jax.tree.map(lambda x: x[-1], params)
        if scan_layers:
            return {"params": {"first": {"layer": params}, "last": last}}
        return {"params": {"layer0": jax.tree.map(lambda x: x[0], params),
                           "first": jax.tree.map(lambda x: x[1:-1], params), "last": last}}

    def layers(args, part):
        return [a if axis is nn.broadcast else jax.tree.map(lambda x: x[part], a) for a, axis in zip(args, in_axes)]

    class _Rows(nn.Module):
        layer_args: tuple
        layer_kwargs: tuple  # (name, value) pairs

        @nn.compact
        def __call__(self, hidden, *args, query_index):
            kwargs = dict(self.layer_kwargs)
            first = None
            if shared_stack is not None:
                first = shared_stack(num_layers - 1)(*self.layer_args, name="first", **kwargs)
                head_args = layers(args, slice(0, -1))
            elif scan_layers:
                first = indexed_scan(layer_cls, num_layers=num_layers - 1, remat_policy=remat_policy,
                                     in_axes=in_axes)(
                    *self.layer_args, name="first", **kwargs)
                head_args = [jnp.arange(num_layers - 1), *layers(args, slice(0, -1))]
            else:
                # Unrolled: the first layer on its own, outside the stack's loop, so that autodiff
                # sees which of its inputs carry a gradient (inside a loop every layer's do if one
                # layer's do). P-tuning v2's first layer reads only frozen embeddings and its
                # prefix: the attention's backward pass there computes the prefix's gradients alone
                # (ptjax.models.attention).
                if num_layers > 1:
                    hidden, _ = one_layer_cls(*self.layer_args, name="layer0", **kwargs)(hidden, *layers(args, 0))
                if num_layers > 2:
                    first = layer_stack(layer_cls, num_layers=num_layers - 2, remat_policy=remat_policy,
                                        scan_layers=False, in_axes=in_axes)(*self.layer_args, name="first", **kwargs)
                    head_args = layers(args, slice(1, -1))
            if num_layers > 1 and first is not None:
                hidden, _ = first(hidden, *head_args)
            out, _ = one_layer_cls(*self.layer_args, name="last", **kwargs)(hidden, *layers(args, -1),
                                                                            query_index=query_index)
            return out

    mapped = nn.map_variables(_Rows, "params", trans_in_fn=split, mutable=False)

    def build(*args, name=None, **kwargs):
        return mapped(tuple(args), tuple(sorted(kwargs.items())), name=name)
    return build
