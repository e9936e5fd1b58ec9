"""Generation with trained prompts: KV-cache decoding on causal LMs and T5, many prompts per batch.

    search.py      DecodeSettings; greedy / sampled decoding and beam search as while_loops
    backbones.py   prefill and one step per backbone kind, prompts injected into a KVCache
    bank.py        PromptBank: exports' soft vectors and deep prefixes, one entry per prompt
    generator.py   Generator: batches of token ids (any lengths, any prompt each) -> generated ids
    text.py        TextGenerator: prompt exports + texts rendered with their templates -> texts
    __main__.py    python -m ptjax.generation --restore DIR/export --input in.jsonl --output out.jsonl
"""
