"""Command line: generate text with trained prompts (one or several exports on one backbone).

    python -m ptjax.generate --restore RUN/export --input inputs.jsonl [--output out.jsonl]
        [--restore name=RUN2/export ...] [--strategy greedy|sample|beam] [--max-new-tokens 32]
        [--temperature 1 --top-k 0 --top-p 1 --seed 0] [--num-beams 4 --length-penalty 1]
        [--stop ID ...] [--template "[P*20] {text}"] [--batch-size 8] [--devices N]
    ptjax generate ...   (the same)

Each input line is a JSON object: {"text": "..."} for templates of one field, or the template's
fields ({"premise": ..., "hypothesis": ...}), and optionally "prompt": the name of the export to
use (default: the first; a path's name is its run folder, or give --restore name=PATH). Lines of
different prompts are batched together. Each output line (stdout without --output) is
{"text", "tokens", "prompt"} (+ "score" with beam search), in input order.
--devices N splits each batch's rows over N local devices (weights replicated; the same outputs
for greedy and beam search). On a host without accelerators JAX then starts with N CPU devices
(on 2 cores that was slower than one device: BENCHMARKS.md, "Generation").
Bad input ends with one line `error: file:line: what is wrong` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ptjax import cli
from ptjax.errors import InputError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ptjax.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--restore", action="append", required=True,
                        help="a prompt export (RUN/export or a workdir), or NAME=PATH; repeat for a mixed bank")
    parser.add_argument("--input", required=True, help="jsonl: one object per input")
    parser.add_argument("--output", default="", help="jsonl to write (default: stdout)")
    parser.add_argument("--strategy", default="greedy", choices=("greedy", "sample", "beam"))
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="sampling: keep the k likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="sampling: nucleus mass (1: all)")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--stop", type=int, action="append", default=None,
                        help="token id that ends an output (repeat; default: the tokenizer's eos)")
    parser.add_argument("--template", default="", help="replaces the exports' templates (same soft tokens)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=int, default=1, help="decode batches data parallel over N local devices")
    return parser.parse_args(argv)


def read_inputs(path: str) -> tuple[list, list, list[str]]:
    """(inputs, prompt names or None, "file:line" of each) from a jsonl file."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such input file")
    inputs, prompts, where = [], [], []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        place = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{place}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{place}: expected a JSON object, got {type(record).__name__}")
        prompt = record.pop("prompt", 0)
        if not record or not all(isinstance(v, str) for v in record.values()):
            raise InputError(f"{place}: expected string fields such as {{\"text\": \"...\"}}")
        inputs.append(record["text"] if set(record) == {"text"} else record)
        prompts.append(prompt)
        where.append(place)
    if not inputs:
        raise InputError(f"{path}: no inputs")
    return inputs, prompts, where


def _exports(values: list[str]) -> dict[str, str]:
    from ptjax.generation.text import export_name

    named = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = (name, path) if sep and not Path(value).exists() else (export_name(value), value)
        if name in named:
            raise InputError(f"--restore {value}: the name {name!r} is taken; give NAME=PATH")
        named[name] = path
    return named


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    cli.quiet_logs()
    if args.devices > 1:  # once JAX has started: the devices there are (Generator checks the count)
        from ptjax.planning import request_cpu_devices

        request_cpu_devices(args.devices)
    from ptjax.generation.text import TextGenerator

    try:
        inputs, prompts, where = read_inputs(args.input)  # before the backbone loads: bad input fails fast
        generator = TextGenerator.from_exports(_exports(args.restore), template=args.template,
                                               batch_size=args.batch_size, devices=args.devices)
        settings = dict(strategy=args.strategy, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, num_beams=args.num_beams,
                        length_penalty=args.length_penalty)
        if args.stop:
            settings["stop_tokens"] = tuple(args.stop)
        results = generator.generate(inputs, prompts, where=where, seed=args.seed, **settings)
    except InputError as err:
        cli.fail(str(err))
    lines = "".join(json.dumps(r) + "\n" for r in results)
    if args.output:
        Path(args.output).write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    sys.exit(main())
