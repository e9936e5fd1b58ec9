"""A bank of fully independent prompt encoders: one table, BiLSTM and MLP per prompt.

    bank = PromptEncoderBank(num_prompts=41, num_tokens=6, embed_dim=768, reparam="lstm")
    params = bank.init({"params": rng})["params"]
    vectors = bank.apply({"params": params})        # [41, 6, 768], prompt k from encoder k

`PromptEncoder(num_prompts=n)` keeps n tables but shares one LSTM/MLP among them (a multi-task
prompt). P-tuning's LAMA setting trains one encoder per relation; this bank gives each prompt its
own encoder (the same module vmapped over a leading "prompt_bank" axis), so that several
relations train in one job while a prompt's parameters get gradient only from its own examples.
Drop-in for PromptModel.soft_prompt: same output shape as a banked PromptEncoder, and a
`table_init` field that PromptModel.init_params sets (each prompt draws its own rows).
"""

from __future__ import annotations

import flax.linen as nn

from ptjax.errors import InputError
from ptjax.prompts.encoders import Initializer, PromptEncoder


class PromptEncoderBank(nn.Module):
    """num_prompts independent PromptEncoders; __call__() -> float32 [num_prompts, num_tokens, embed_dim].

    reparam, hidden_dim, activation, lstm_layers, table_init: as in PromptEncoder (per prompt).
    Parameters have a leading [num_prompts] axis (logical name "prompt_bank").
    """

    num_prompts: int
    num_tokens: int
    embed_dim: int
    reparam: str = "lstm"
    hidden_dim: int | None = None
    activation: str = "relu"
    lstm_layers: int = 2
    table_init: Initializer | None = None

    @nn.compact
    def __call__(self):
        if self.num_prompts < 1:
            raise InputError(f"a prompt bank needs at least one prompt, got num_prompts={self.num_prompts}")
        encoders = nn.vmap(
            PromptEncoder, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=(), out_axes=0,
            axis_size=self.num_prompts, metadata_params={nn.PARTITION_NAME: "prompt_bank"},
        )
        return encoders(
            num_tokens=self.num_tokens, embed_dim=self.embed_dim, reparam=self.reparam, hidden_dim=self.hidden_dim,
            activation=self.activation, lstm_layers=self.lstm_layers, table_init=self.table_init, name="encoder",
        )()
