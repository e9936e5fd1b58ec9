"""The last layer computed at the positions a head reads: a head that reads one position per
example ([CLS], a verbalizer's target) needs the last layer's keys and values at every position
but its queries, attention output and feed-forward only there (heads: read_positions; models:
Family.query_positions; config.model.prune_last_layer)."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptjax.models.layers import REMAT_POLICIES, Array, layer_stack


def query_rows(x: Array, query_index: Array, axis: int = 1) -> Array:
    """x [batch or 1, ..., length (at `axis`), ...] at the positions query_index [batch, n] ->
    the same with n rows on `axis` (a mask or table shared by the batch is broadcast first)."""
    batch = query_index.shape[0]
    x = jnp.broadcast_to(x, (batch,) + x.shape[1:])
    index = query_index.reshape((batch,) + (1,) * (axis - 1) + (query_index.shape[1],) + (1,) * (x.ndim - axis - 1))
    return jnp.take_along_axis(x, index, axis=axis)


def rows_only(query_positions: Array | None, scan_layers: bool, output_hidden_states: bool = False) -> bool:
    """Whether a backbone call computes its last layer at query_positions only
    (stack_computing_rows): asked for, layers unrolled, and no per-layer outputs wanted."""
    return query_positions is not None and not scan_layers and not output_hidden_states


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


def stack_computing_rows(
    layer_cls: type[nn.Module], *, num_layers: int, remat_policy: str = "none", in_axes: tuple = (),
    shared_stack: Callable[[int], type[nn.Module]] | None = None,
) -> Callable[..., nn.Module]:
    """layer_stack's unrolled stack (the same parameters, stacked on `layers`) whose last layer
    computes only some rows: build(*args, name=..., **kwargs)(hidden, *layer_args,
    query_index=[batch, n]) -> [batch, n, embed], the last layer's output at those positions.

    A head that reads one position per example ([CLS], a verbalizer's target) needs the last
    layer's keys and values at every position but its queries, attention output and
    feed-forward only there: the rest of that layer, forward and backward, is work whose result
    nobody reads. `layer_cls.__call__` takes `query_index` (None: every row) for the last layer.
    Its dropout draws differ from the full stack's (other random streams, fewer rows), so a
    training run is another draw of the same computation; without dropout the outputs equal the
    full stack's rows up to float rounding. Unrolled only: splitting a scanned stack would copy
    its weights every step. shared_stack(n): the unrolled stack of n layers for a model whose
    layers share one parameter set (ALBERT), which then goes whole to both parts.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
    last_cls = layer_cls if remat_policy == "none" else nn.remat(
        layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)

    def split(variables):
        params = variables["params"]
        if shared_stack is not None:
            return {"params": {"first": params, "last": params}}
        return {"params": {"first": jax.tree.map(lambda x: x[:-1], params),
                           "last": jax.tree.map(lambda x: x[-1], params)}}

    class _Rows(nn.Module):
        layer_args: tuple
        layer_kwargs: tuple  # (name, value) pairs

        @nn.compact
        def __call__(self, hidden, *args, query_index):
            kwargs = dict(self.layer_kwargs)
            first = shared_stack(num_layers - 1) if shared_stack is not None else layer_stack(
                layer_cls, num_layers=num_layers - 1, remat_policy=remat_policy, scan_layers=False, in_axes=in_axes)
            head_args = [a if axis is nn.broadcast else jax.tree.map(lambda x: x[:-1], a) for a, axis in zip(args, in_axes)]
            last_args = [a if axis is nn.broadcast else jax.tree.map(lambda x: x[-1], a) for a, axis in zip(args, in_axes)]
            if num_layers > 1:
                hidden, _ = first(*self.layer_args, name="first", **kwargs)(hidden, *head_args)
            out, _ = last_cls(*self.layer_args, name="last", **kwargs)(hidden, *last_args, query_index=query_index)
            return out

    mapped = nn.map_variables(_Rows, "params", trans_in_fn=split, mutable=False)

    def build(*args, name=None, **kwargs):
        return mapped(tuple(args), tuple(sorted(kwargs.items())), name=name)
    return build
