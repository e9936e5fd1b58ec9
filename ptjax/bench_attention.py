"""Where a small encoder's CPU train step goes: attention against the dense layers, in JAX and in
torch, at one bench_peft case's shapes.

    python -m ptjax.bench_attention [--case minilm_lester] [--repeats 10]

Times (best of `repeats`, float32, all cores) and FLOP/s of: one layer's attention forward and
backward (jax.nn.dot_product_attention with a padding mask; torch: the same math with matmul and
softmax), its score matmul alone (heads x batch small matmuls of length x head_dim x length),
and the layer's widest dense matmul (tokens x width x intermediate). Prints one JSON line.
Needs torch (test requirements).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp


def best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    from ptjax.bench_sides import CASES
    from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

    parser = argparse.ArgumentParser(prog="python -m ptjax.bench_attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="minilm_lester", choices=sorted(CASES))
    parser.add_argument("--batch", type=int, default=0, help="replace the case's batch size")
    parser.add_argument("--length", type=int, default=0, help="replace the case's sequence length (prompt included)")
    parser.add_argument("--model", default=None, help="replace the case's backbone (e.g. a tiny model folder)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    case = CASES[args.case]
    hf, _ = load_hf_config_and_tokenizer(resolve_checkpoint(args.model or case.backbone))
    batch = args.batch or case.batch
    length = args.length or case.length + (case.prompt_length if case.method == "lester" else 0)
    heads, width = hf.num_attention_heads, hf.hidden_size
    head_dim, inner = width // heads, hf.intermediate_size
    attention_flops = 2 * batch * heads * length * length * head_dim  # one of its matmuls

    q = jax.random.normal(jax.random.PRNGKey(0), (batch, length, heads, head_dim))
    k, v = q + 1.0, q * 2.0
    mask = jnp.ones((batch, 1, length, length), bool)
    loss = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask).sum()  # noqa: E731
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    scores = jax.jit(lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch * length, width))
    w = jax.random.normal(jax.random.PRNGKey(2), (width, inner))
    dense = jax.jit(jnp.matmul)
    jax_times = {"attention_fwd_bwd": best_time(lambda: grads(q, k, v), args.repeats),
                 "scores": best_time(lambda: scores(q, k), args.repeats),
                 "dense": best_time(lambda: dense(x, w), args.repeats)}

    tq, tk, tv = (torch.randn(batch, heads, length, head_dim, requires_grad=True) for _ in range(3))
    tx, tw = torch.randn(batch * length, width), torch.randn(width, inner)

    def torch_attention():
        probs = torch.softmax(tq @ tk.transpose(-1, -2) * head_dim**-0.5, dim=-1)
        (probs @ tv).sum().backward()

    torch_times = {"attention_fwd_bwd": best_time(torch_attention, args.repeats),
                   "scores": best_time(lambda: tq.detach() @ tk.detach().transpose(-1, -2), args.repeats),
                   "dense": best_time(lambda: tx @ tw, args.repeats)}
    flops = {"attention_fwd_bwd": 6 * attention_flops, "scores": attention_flops,
             "dense": 2 * batch * length * width * inner}
    result = {"case": args.case, "batch": batch, "length": length, "heads": heads, "head_dim": head_dim,
              "width": width, "intermediate": inner, "threads": torch.get_num_threads()}
    for side, times in (("jax", jax_times), ("torch", torch_times)):
        for name, seconds in times.items():
            result[f"{side}_{name}_ms"] = 1e3 * seconds
            result[f"{side}_{name}_gflops_per_s"] = flops[name] / seconds / 1e9
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
