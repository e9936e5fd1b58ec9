"""Deep prompts (P-tuning v2 / prefix tuning): trainable keys and values at every attention layer.

    deep = DeepPrompt(num_layers=12, num_kv_heads=12, head_dim=64, length=16, reparam="mlp")
    params = deep.init(rng)["params"]
    prefix = deep.apply({"params": params})       # PrefixKV, keys [12, 1, 16, 12, 64]
    backbone.apply({"params": frozen}, ids, mask, prefix=prefix)

reparam "none": the keys and values are parameters themselves, [length, layers, 2, kv_heads,
  head_dim]. "mlp": a [length, embed_dim] table goes through Linear -> tanh -> Linear to
  2 * layers * kv_heads * head_dim per prefix position, as the P-tuning v2 code does.
layer_range (start, end): only layers start .. end - 1 carry a prefix (and own parameters);
  the others are switched off through PrefixKV.layer_mask. Counted from the bottom (layer 0 is
  the first), or from the top with count_from_top: (0, 8) is then the last eight layers. This is
  the paper's depth ablation (the same number of prompted layers, ascending vs descending).
num_prompts > 0: a bank of prefixes, one picked per example by prompt_id.
dropout_rate: dropout on the prefix keys/values while training (P-tuning v2 uses the model's
  hidden dropout there); pass batch_size to draw a separate mask per example.
An encoder-decoder (T5) uses one DeepPrompt for its encoder stack and optionally another for
its decoder stack.

Parameter logical axes: ("prompt", "layers", None, "kv_heads", "kv") for direct keys/values,
("prompt", "embed") and "prompt_hidden" for the MLP path; "prompt_bank" leads for banks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.models.layers import Dense, PrefixKV
from ptjax.prompts.encoders import random_init, torch_linear_init, uniform_init

Array = jax.Array


class DeepPrompt(nn.Module):
    """Produces a PrefixKV for a stack of num_layers attentions with (num_kv_heads, head_dim).

    Output keys/values: [num_layers, 1 (or batch), length, num_kv_heads, head_dim] float32;
    the batch axis is the batch when prompt_id or batch_size is given.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    length: int
    reparam: str = "none"
    embed_dim: int | None = None   # MLP input width; default num_kv_heads * head_dim
    hidden_dim: int = 512          # MLP bottleneck (prefix_hidden_size in the P-tuning v2 code)
    layer_range: tuple[int, int] | None = None
    count_from_top: bool = False
    num_prompts: int = 0
    dropout_rate: float = 0.0
    init_std: float = 1.0          # normal init of the table (PyTorch nn.Embedding's default)

    @property
    def prompt_layers(self) -> tuple[int, int]:
        """[start, end) of the layers with a prefix, counted from the bottom."""
        start, end = self.layer_range if self.layer_range is not None else (0, self.num_layers)
        if not 0 <= start < end <= self.num_layers:
            raise InputError(
                f"deep prompt layer_range {self.layer_range} must satisfy "
                f"0 <= start < end <= {self.num_layers}"
            )
        if self.count_from_top:
            start, end = self.num_layers - end, self.num_layers - start
        return start, end

    @nn.compact
    def prefix_table(self) -> Array:
        """The prefix of each prompted layer: [*bank, length, prompted layers, 2, kv_heads, head_dim]
        (index 0 of the axis of size 2: keys, 1: values)."""
        if self.reparam not in ("none", "mlp"):
            raise InputError(f"unknown deep prompt reparameterization {self.reparam!r} (known: none, mlp)")
        if self.length < 1:
            raise InputError(f"a deep prompt needs length >= 1, got {self.length}")
        start, end = self.prompt_layers
        bank = (self.num_prompts,) if self.num_prompts else ()
        bank_axes = ("prompt_bank",) if self.num_prompts else ()
        per_position = (end - start, 2, self.num_kv_heads, self.head_dim)
        kv_axes = ("layers", None, "kv_heads", "kv")
        init = random_init(self.init_std)
        if self.reparam == "none":
            return self.param("prefix", nn.with_logical_partitioning(init, bank_axes + ("prompt",) + kv_axes),
                              bank + (self.length,) + per_position, jnp.float32)
        embed_dim = self.embed_dim or self.num_kv_heads * self.head_dim
        table = self.param("embedding", nn.with_logical_partitioning(init, bank_axes + ("prompt", "embed")),
                           bank + (self.length, embed_dim), jnp.float32)
        hidden = Dense(self.hidden_dim, ("embed",), ("prompt_hidden",), kernel_init=torch_linear_init,
                       name="hidden")(table)
        out_init = uniform_init(1.0 / self.hidden_dim**0.5)  # PyTorch nn.Linear's default
        output = Dense(per_position, ("prompt_hidden",), kv_axes, kernel_init=out_init, name="output")
        return output(jnp.tanh(hidden))

    def __call__(
        self, *, prompt_id: Array | None = None, batch_size: int | None = None, deterministic: bool = True
    ) -> PrefixKV:
        """prompt_id: int [batch], required with a bank. batch_size: broadcast to the batch
        (only useful with dropout, for per-example masks)."""
        table = self.prefix_table()
        if self.num_prompts:
            if prompt_id is None and self.is_initializing():
                prompt_id = jnp.zeros((1,), jnp.int32)
            if prompt_id is None:
                raise InputError("a deep prompt bank (num_prompts > 0) needs prompt_id per example")
            table = jnp.take(table, jnp.asarray(prompt_id, jnp.int32), axis=0)
        else:
            table = table[None]
        if batch_size is not None and table.shape[0] == 1:
            table = jnp.broadcast_to(table, (batch_size,) + table.shape[1:])
        if self.dropout_rate > 0.0 and not deterministic:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout_rate, (table.size,))
            keep = keep.reshape(table.shape)  # drawn flat: high-rank draws compile slowly on CPU
            table = jnp.where(keep, table / (1.0 - self.dropout_rate), 0.0)
        # [batch, length, k, 2, heads, dim] -> [k, 2, batch, length, heads, dim]
        table = jnp.transpose(table, (2, 3, 0, 1, 4, 5))
        start, end = self.prompt_layers
        layer_mask = None
        if (start, end) != (0, self.num_layers):
            table = jnp.pad(table, [(start, self.num_layers - end)] + [(0, 0)] * 5)
            layers = np.arange(self.num_layers)
            layer_mask = jnp.asarray((layers >= start) & (layers < end))
        return PrefixKV(keys=table[:, 0], values=table[:, 1], mask=None, layer_mask=layer_mask)


def materialize_deep_prompt(deep: DeepPrompt, params: Any) -> tuple[DeepPrompt, dict]:
    """The keys/values computed once: (deep with reparam="none", {"prefix": table}), which
    produces the same PrefixKV with no MLP at inference."""
    table = jax.device_get(deep.apply({"params": params}, method=DeepPrompt.prefix_table))
    return deep.clone(reparam="none", parent=None), {"prefix": np.asarray(table)}
