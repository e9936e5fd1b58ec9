"""Where a small encoder's CPU train step goes: attention against the dense layers, in JAX and in
torch, at one bench_peft case's shapes.

    python -m ptjax.benchmarks.attention [--case minilm_lester] [--repeats 10] [--dropout 0.1]

Times (median of `repeats`, float32, all cores, the train step's allocator settings) and FLOP/s
of: one layer's attention forward and backward with a padding mask and attention dropout, by
ptjax's kernel (ptjax.models.attention), by jax.nn.dot_product_attention (no dropout: it has
none) and by torch (matmul, softmax, dropout); the score matmul alone (heads x batch small
matmuls of length x head_dim x length); and the layer's widest dense matmul (tokens x width x
intermediate). Prints one JSON line. Needs torch (test requirements).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def median_time(fn, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import jax
    import jax.numpy as jnp
    import torch

    from ptjax.benchmarks.sides import CASES
    from ptjax.models.attention import dot_product_attention, make_attention_mask
    from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

    parser = argparse.ArgumentParser(prog="python -m ptjax.benchmarks.attention",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="minilm_lester", choices=sorted(CASES))
    parser.add_argument("--batch", type=int, default=0, help="replace the case's batch size")
    parser.add_argument("--length", type=int, default=0, help="replace the case's sequence length (prompt included)")
    parser.add_argument("--model", default=None, help="replace the case's backbone (e.g. a tiny model folder)")
    parser.add_argument("--dropout", type=float, default=0.1, help="attention dropout (BERT's 0.1)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    case = CASES[args.case]
    hf, _ = load_hf_config_and_tokenizer(resolve_checkpoint(args.model or case.backbone))
    batch = args.batch or case.batch
    length = args.length or case.length + (case.prompt_length if case.method == "lester" else 0)
    heads, width = hf.num_attention_heads, hf.hidden_size
    head_dim, inner = width // heads, hf.intermediate_size
    attention_flops = 2 * batch * heads * length * length * head_dim  # one of its matmuls
    real = jnp.arange(length)[None, :] < jnp.maximum(length - jnp.arange(batch)[:, None] % 8, 1)  # some padding

    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    q, k, v, d_out = (jax.random.normal(key, (batch, length, heads, head_dim)) for key in keys[:4])
    mask = make_attention_mask(real, query_length=length, key_length=length, causal=False)

    def fwd_bwd(attention):
        def run(q, k, v, d_out, rng):
            return jax.vjp(lambda q, k, v: attention(q, k, v, rng), q, k, v)[1](d_out)
        return jax.jit(run)

    ptjax_step = fwd_bwd(lambda q, k, v, rng: dot_product_attention(q, k, v, mask, dropout_rate=args.dropout,
                                                                    dropout_rng=rng))
    jax_nn_step = fwd_bwd(lambda q, k, v, rng: jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla"))
    scores = jax.jit(lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k))
    x = jax.random.normal(keys[4], (batch * length, width))
    w = jax.random.normal(keys[5], (width, inner))
    dense = jax.jit(jnp.matmul)
    jax_times = {
        "attention_fwd_bwd": median_time(lambda: ptjax_step(q, k, v, d_out, keys[5]), args.repeats),
        "nn_attention_fwd_bwd": median_time(lambda: jax_nn_step(q, k, v, d_out, keys[5]), args.repeats),
        "scores": median_time(lambda: scores(q, k), args.repeats),
        "dense": median_time(lambda: dense(x, w), args.repeats),
    }

    tq, tk, tv = (torch.randn(batch, heads, length, head_dim, requires_grad=True) for _ in range(3))
    t_out = torch.randn(batch, heads, length, head_dim)
    t_mask = torch.tensor(jax.device_get(real))[:, None, None, :]
    tx, tw = torch.randn(batch * length, width), torch.randn(width, inner)

    def torch_attention():
        logits = (tq @ tk.transpose(-1, -2) * head_dim**-0.5).masked_fill(~t_mask, torch.finfo(torch.float32).min)
        probs = torch.nn.functional.dropout(torch.softmax(logits, dim=-1), args.dropout, training=True)
        (probs @ tv).backward(t_out)

    torch_times = {"attention_fwd_bwd": median_time(torch_attention, args.repeats),
                   "scores": median_time(lambda: tq.detach() @ tk.detach().transpose(-1, -2), args.repeats),
                   "dense": median_time(lambda: tx @ tw, args.repeats)}
    flops = {"attention_fwd_bwd": 6 * attention_flops, "nn_attention_fwd_bwd": 6 * attention_flops,
             "scores": attention_flops, "dense": 2 * batch * length * width * inner}
    result = {"case": args.case, "batch": batch, "length": length, "heads": heads, "head_dim": head_dim,
              "width": width, "intermediate": inner, "attention_dropout": args.dropout,
              "threads": torch.get_num_threads(), "statistic": f"median of {args.repeats}"}
    for side, times in (("jax", jax_times), ("torch", torch_times)):
        for name, seconds in times.items():
            result[f"{side}_{name}_ms"] = 1e3 * seconds
            result[f"{side}_{name}_gflops_per_s"] = flops[name] / seconds / 1e9
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    keep_freed_memory()  # as in training: without it each call page-faults its large outputs in again
    sys.exit(main())
