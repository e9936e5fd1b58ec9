"""Generation with trained prompts: KV-cache decoding on causal LMs and T5, many prompts per batch.

    search.py      DecodeSettings; greedy / sampled decoding and beam search as while_loops
    backbones.py   prefill and one step per backbone kind, prompts injected into a KVCache
    bank.py        PromptBank: exports' soft vectors and deep prefixes, one entry per prompt
    generator.py   Generator: batches of token ids (any lengths, any prompt each) -> generated ids
    text.py        TextGenerator: prompt exports + texts rendered with their templates -> texts
The command is ptjax/generate.py: python -m ptjax.generate --restore DIR/export --input in.jsonl
"""

from ptjax.generation.bank import PromptBank
from ptjax.generation.generator import Generated, Generator
from ptjax.generation.search import DecodeSettings

__all__ = ["DecodeSettings", "Generated", "Generator", "PromptBank"]
