"""ptjax against Hugging Face PEFT (PyTorch) on the same backbone, shapes and trainable part,
with the hardware's float32 matmul peak measured in the same run.

    python -m ptjax.benchmarks.peft [--cases minilm_ptuning_v2,minilm_lester,smollm2_lester]
        [--threads 2] [--rounds 5] [--steps 5] [--warmup 3] [--model DIR --batch N --length N]
        [--dtype float32|bfloat16]

Cases (backbone, method, prompt, batch x text tokens; both sides train the same parameters):
  minilm_ptuning_v2  all-MiniLM-L6-v2, deep prefix of 16 at every layer + linear head on the
                     pooler (PEFT PrefixTuningConfig, SEQ_CLS), batch 32 x 128
  minilm_lester      all-MiniLM-L6-v2, 20 soft tokens before [CLS] + linear head on the pooler
                     (PEFT PromptTuningConfig, SEQ_CLS), batch 32 x 128
  smollm2_lester     SmolLM2-135M, 20 soft tokens + a two-word verbalizer at the last position
                     (PEFT PromptTuningConfig, CAUSAL_LM with logits_to_keep=1, the same loss),
                     batch 8 x 128
Every step is a full training step: forward, backward to the prompt (and head), global-norm
clipping at 1.0 and AdamW (lr 1e-3), dropout as each library has it in training mode. Precision
(--dtype): float32 on both sides, or bfloat16: ptjax with bf16 weights and bf16 compute
(model.dtype=bfloat16: products take bf16 operands and accumulate in float32), PEFT under
torch.autocast("cpu", dtype=torch.bfloat16); the prompt, losses and optimizer stay float32 on
both.
Inputs are random token ids with every position real (no padding); positions follow PEFT's
placement on both sides (config.prompt.soft_prefix_first, config.prompt.deep.shift_positions).
The sides are in ptjax/benchmarks/sides.py.

Each side runs in its own process (this command starts both per case and talks to them over
pipes), so neither inherits the other's heap, threads or caches, as when each is used alone.
The two alternate: each round times `steps` ptjax steps, then `steps` PEFT steps (each after
one untimed step, as the first step back after the other side's round runs on cold caches), so
load changes on a shared machine hit both; a case reports per-side median examples/s over the rounds
and the median of the per-round ratios. FLOPs per step are XLA's cost analysis of the compiled
ptjax step (layers unrolled so every layer counts; multiply-add = 2 FLOPs; attention, backward
and optimizer included); the same count is used for the PEFT side, which does the same math.
MFU = FLOPs per step / step time / matmul peak, the peak being the best 4096 x 4096 matmul in
the run's precision (bf16: bf16 operands, float32 accumulation) of JAX (in the ptjax process)
and of torch (in the PEFT process); with bf16, the MFU against the float32 peak is given too
(`*_mfu_vs_float32_peak`, `matmul_peak_float32`). Peaks are measured before and
again after each case's rounds (one measurement alone lands low when other jobs share the
machine at that moment, which would flatter the MFU). The
same ratio is also given in CPU time (process user + system seconds, all threads, per step and
per peak matmul: `*_mfu_cpu_time`), which other jobs on a shared machine disturb less than wall
time (idle threads that spin count as busy, so it errs low). The load average goes with every
line.

The ptjax side runs on the CPU devices main.py's default, `config.mesh.cpu_devices="auto"`,
would start for the case's batch (ptjax/training/cpu_devices.py: one per core where each gets at
least 512 tokens; the case's batches are full length, so their tokens are exact). `--host-devices
N` runs it on N CPU devices instead (1: JAX's one device on all cores; N > 1: data parallel, the
batch split across the cores as across accelerators); `ptjax_devices` in the JSON says which ran.

Prints one JSON line per case, then one line with the versions (as the sides report them), the
best peak of the whole run and each case's MFU against it (`mfu_vs_run_peak`). Needs torch
and peft (test requirements); nothing in ptjax's runtime imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ptjax.errors import InputError

MARK = "@bench "  # prefix of protocol lines on a side's stdout (libraries may print there too)


# --------------------------------------------------------------------------------------------
# A side, in its own process: `--side ptjax|peft --cases NAME`, then "run N" lines on stdin.


def serve_side(args) -> int:
    """Build one side of one case, warm it up, report, then time `run N` requests until stdin
    closes."""
    from ptjax.hostmem import keep_freed_memory

    keep_freed_memory()  # before the first step: see ptjax/hostmem.py (applies to both sides)
    from ptjax.benchmarks import sides
    from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

    case = _case(args, args.cases)
    model_name = args.model or case.backbone
    if args.side == "peft":
        import torch

        torch.set_num_threads(args.threads or os.cpu_count())
    library = "jax" if args.side == "ptjax" else "torch"
    dtypes = ("float32",) if args.dtype == "float32" else (args.dtype, "float32")
    measure = lambda: {d: sides.matmul_peak(library, args.peak_size, dtype=d) for d in dtypes}
    peak = measure() if args.peak_size else {}
    hf_config, tokenizer = load_hf_config_and_tokenizer(resolve_checkpoint(model_name))
    inputs = sides.make_inputs(case, tokenizer, hf_config.vocab_size, max(args.steps, 1))
    start = time.perf_counter()
    if args.side == "ptjax":
        import jax

        side = sides.PtjaxSide(case, model_name, inputs, args.scan_layers, dtype=args.dtype)
        ready = {"flops": side.flops, "trainable": side.counts["trainable"], "total": side.counts["total"],
                 "devices": jax.device_count(),
                 "versions": {"jax": jax.__version__, "device": jax.devices()[0].device_kind}}
    else:
        import peft

        side = sides.PeftSide(case, model_name, inputs, autocast=args.dtype == "bfloat16")
        ready = {"trainable": side.trainable, "torch_threads": side.torch.get_num_threads(),
                 "versions": {"torch": side.torch.__version__, "peft": peft.__version__}}
    side.run(args.warmup)
    _emit({**ready, "peak": peak, "compile_and_warmup_s": time.perf_counter() - start})
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["peak"]:
            _emit({"peak": measure()})
            continue
        if words[:1] != ["run"]:
            break
        steps, settle = int(words[1]), int(words[2])
        side.run(settle)
        wall, cpu = sides.timed(lambda steps=steps: side.run(steps))
        _emit({"wall": wall, "cpu": cpu, "loss": side.loss})
    return 0


def _emit(message: dict) -> None:
    print(MARK + json.dumps(message), flush=True)


class SideProcess:
    """The coordinator's handle on one side's process."""

    def __init__(self, side: str, name: str, args, host_devices: int = 1):
        command = [sys.executable, "-m", "ptjax.benchmarks.peft", "--side", side, "--cases", name,
                   "--warmup", str(args.warmup), "--steps", str(args.steps), "--peak-size", str(args.peak_size),
                   "--threads", str(args.threads), "--dtype", args.dtype]
        for flag, value in (("--model", args.model), ("--batch", args.batch), ("--length", args.length)):
            if value:
                command += [flag, str(value)]
        if args.scan_layers:
            command.append("--scan-layers")
        root = str(Path(__file__).resolve().parents[1])  # ptjax and configs
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        if side == "ptjax" and host_devices > 1:  # must be set before JAX starts
            flag = f"--xla_force_host_platform_device_count={host_devices}"
            env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), flag]))
        self.side = side
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._reply()

    def _reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        code = self.process.wait()
        raise RuntimeError(f"the {self.side} side's process ended (exit status {code}) before answering")

    def run(self, steps: int, settle: int = 1) -> dict:
        """Timings of `steps` steps after `settle` untimed ones (the other side's round has just
        run: the first step back finds cold caches and pages)."""
        self.process.stdin.write(f"run {steps} {settle}\n")
        self.process.stdin.flush()
        return self._reply()

    def peak(self) -> dict:
        """The matmul peak measured again now (see the module docstring)."""
        self.process.stdin.write("peak\n")
        self.process.stdin.flush()
        return self._reply()["peak"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


# --------------------------------------------------------------------------------------------
# The coordinator.


def run_case(name: str, args) -> dict:
    case = _case(args, name)
    ours = SideProcess("ptjax", name, args, _host_devices(args, case))
    try:
        theirs = SideProcess("peft", name, args)
        try:
            rounds = [(ours.run(args.steps), theirs.run(args.steps)) for _ in range(args.rounds)]
            if args.peak_size:
                ours.ready["peak"] = _better(ours.ready["peak"], ours.peak())
                theirs.ready["peak"] = _better(theirs.ready["peak"], theirs.peak())
        finally:
            theirs.close()
    finally:
        ours.close()
    peaks = {d: _best_peak(ours.ready["peak"].get(d, {}), theirs.ready["peak"].get(d, {}), args.peak_size)
             for d in ours.ready["peak"]}
    peak = peaks.get(args.dtype, {})
    steps = args.steps
    rates = {side: [case.batch * steps / r[i]["wall"] for r in rounds] for i, side in enumerate(("ptjax", "peft"))}
    flops = ours.ready["flops"]
    result = {
        "case": name, "backbone": args.model or case.backbone, "method": case.method,
        "prompt_length": case.prompt_length, "batch": case.batch, "text_length": case.length,
        "rounds": args.rounds, "steps_per_round": steps, "dtype": args.dtype,
        "threads": {"torch": theirs.ready["torch_threads"], "cpus": os.cpu_count()},
        "trainable_params": {"ptjax": ours.ready["trainable"], "peft": theirs.ready["trainable"]},
        "total_params": ours.ready["total"], "ptjax_devices": ours.ready["devices"],
        "ptjax_examples_per_s": statistics.median(rates["ptjax"]),
        "peft_examples_per_s": statistics.median(rates["peft"]),
        "ptjax_rounds": rates["ptjax"], "peft_rounds": rates["peft"],
        "speedup_median_of_rounds": statistics.median(a / b for a, b in zip(rates["ptjax"], rates["peft"])),
        "flops_per_step": flops, "flops_convention": "XLA cost analysis of the compiled ptjax step, layers unrolled",
        "ptjax_compile_and_warmup_s": ours.ready["compile_and_warmup_s"],
        "final_loss": {"ptjax": rounds[-1][0]["loss"], "peft": rounds[-1][1]["loss"]},
        "scan_layers": args.scan_layers, "matmul_peak": peak,
        "versions": {**ours.ready["versions"], **theirs.ready["versions"]},
    }
    for i, side in enumerate(("ptjax", "peft")):
        result[f"{side}_cpu_s_per_step"] = statistics.median(r[i]["cpu"] / steps for r in rounds)
    if flops:
        for side in ("ptjax", "peft"):
            result[f"{side}_flops_per_s"] = flops * result[f"{side}_examples_per_s"] / case.batch
        if peak.get("peak_flops_per_s"):
            for side in ("ptjax", "peft"):
                result[f"{side}_mfu"] = result[f"{side}_flops_per_s"] / peak["peak_flops_per_s"]
                # The same with CPU time (all threads) on both sides: less sensitive to other jobs.
                cpu = result[f"{side}_cpu_s_per_step"]
                result[f"{side}_mfu_cpu_time"] = flops / cpu / peak["peak_flops_per_cpu_s"] if cpu > 0 else None
                if args.dtype != "float32" and peaks.get("float32"):
                    result[f"{side}_mfu_vs_float32_peak"] = (result[f"{side}_flops_per_s"]
                                                             / peaks["float32"]["peak_flops_per_s"])
        if args.dtype != "float32":
            result["matmul_peak_float32"] = peaks.get("float32", {})
    result["load_average"] = os.getloadavg()
    return result


def _better(first: dict, second: dict) -> dict:
    """Per dtype, the better of two peak measurements."""
    return {d: {key: max(first[d][key], second[d][key]) for key in first[d]} for d in first}


def _best_peak(jax_peak: dict, torch_peak: dict, size: int) -> dict:
    if not jax_peak or not torch_peak:
        return {}
    return {"size": size, "jax_flops_per_s": jax_peak["flops_per_s"], "torch_flops_per_s": torch_peak["flops_per_s"],
            "peak_flops_per_s": max(jax_peak["flops_per_s"], torch_peak["flops_per_s"]),
            "peak_flops_per_cpu_s": max(jax_peak["flops_per_cpu_s"], torch_peak["flops_per_cpu_s"])}


def _host_devices(args, case) -> int:
    """--host-devices, "auto" chosen as main.py's config.mesh.cpu_devices="auto" chooses (its
    task.max_length counts a Lester prompt's slots, as the case's sequence does)."""
    if args.host_devices != "auto":
        return int(args.host_devices)
    from ptjax.training.cpu_devices import auto_devices

    return auto_devices((case.batch,), case.batch * (case.length + case.soft_tokens), (args.model or case.backbone,))


def _case(args, name: str):
    from ptjax.benchmarks.sides import CASES

    overrides = {k: v for k, v in (("batch", args.batch), ("length", args.length)) if v}
    return dataclasses.replace(CASES[name], **overrides)


def parse(argv):
    from ptjax.benchmarks.sides import CASES

    parser = argparse.ArgumentParser(prog="python -m ptjax.benchmarks.peft",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    parser.add_argument("--model", default=None, help="replace every case's backbone (e.g. a tiny model folder)")
    parser.add_argument("--batch", type=int, default=0, help="replace every case's batch size")
    parser.add_argument("--length", type=int, default=0, help="replace every case's text length")
    parser.add_argument("--peak-size", type=int, default=4096, help="matmul size for the peak (0: skip)")
    parser.add_argument("--scan-layers", action="store_true", help="ptjax scans its layers (default: unrolled)")
    parser.add_argument("--host-devices", default="auto",
                        help="auto (default): the CPU devices main.py's config.mesh.cpu_devices=auto "
                             "starts for the case (one per core where each gets 512 tokens or more); "
                             "N: ptjax runs data parallel over N CPU devices (XLA_FLAGS "
                             "--xla_force_host_platform_device_count; the batch must divide)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: ptjax computes in bf16 (float32 accumulation), PEFT runs "
                             "under torch.autocast(\"cpu\", dtype=torch.bfloat16)")
    parser.add_argument("--side", choices=("ptjax", "peft"), help=argparse.SUPPRESS)  # a side's own process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ptjax import cli
    from ptjax.benchmarks.sides import CASES

    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        names = [n for n in args.cases.split(",") if n]
        unknown = [n for n in names if n not in CASES]
        if unknown:
            raise InputError(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
        if args.side:
            return serve_side(args)
        results = []
        for name in names:
            results.append(run_case(name, args))
            print(json.dumps(results[-1], sort_keys=True), flush=True)
        best = max((r["matmul_peak"] for r in results), key=lambda p: p.get("peak_flops_per_s", 0), default={})
        versions = results[-1]["versions"] if results else {}
        run_mfu = {r["case"]: r["ptjax_flops_per_s"] / best["peak_flops_per_s"]
                   for r in results if best.get("peak_flops_per_s") and "ptjax_flops_per_s" in r}
        print(json.dumps({"matmul_peak": best, "mfu_vs_run_peak": run_mfu, **versions,
                          "load_average": os.getloadavg()}, sort_keys=True), flush=True)
    except InputError as err:
        cli.fail(str(err))
    return 0


if __name__ == "__main__":
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    sys.exit(main())
