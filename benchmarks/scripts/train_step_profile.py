"""Where a benchmark case's ptjax train step spends its time: a jax.profiler trace of 2 steps,
thunk times summed by kind (dense products, attention products by shape, other fusions), how
much of the step runs two thunks at once, and the dense products by shape with their rates
(BENCHMARKS.md "bf16 compute").

    python benchmarks/scripts/train_step_profile.py minilm_lester bfloat16
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import collections, glob, gzip, json, math, re, sys, tempfile, time

from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages

restart_with_huge_pages()  # the benchmark's processes run so; without it first touches of 4 KiB pages double a step
keep_freed_memory()
import jax

from ptjax.benchmarks import sides
from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

case, dtype, steps = sides.CASES[sys.argv[1]], sys.argv[2], 2
hf_config, tokenizer = load_hf_config_and_tokenizer(resolve_checkpoint(case.backbone))
side = sides.PtjaxSide(case, case.backbone, sides.make_inputs(case, tokenizer, hf_config.vocab_size, 2), False,
                       dtype=dtype)
hlo = side.lower().compile().as_text()
side.run(3)
start = time.perf_counter()
side.run(steps)
print("seconds per step", round((time.perf_counter() - start) / steps, 3))
folder = tempfile.mkdtemp()
jax.profiler.start_trace(folder, create_perfetto_trace=True)
side.run(steps)
jax.profiler.stop_trace()
with gzip.open(glob.glob(folder + "/**/*perfetto_trace.json.gz", recursive=True)[0]) as trace:
    events = json.load(trace)
events = events["traceEvents"] if isinstance(events, dict) else events
thunk_ms = collections.defaultdict(float)
thunks = [event for event in events if event.get("ph") == "X"]
for event in thunks:
    thunk_ms[event.get("name", "")] += event.get("dur", 0) / 1000 / steps

INSTRUCTION = r"\s*(?:ROOT )?%([\w.\-]+) = (\w+\[[\d,]*\])\S* (\w[\w\-]*)\((.*)"
instructions = {}  # name -> (shape, opcode, called computation)
for line in hlo.split("\n"):
    m = re.match(INSTRUCTION, line)
    if m:
        calls = re.search(r"calls=%([\w.\-]+)", m.group(4))
        instructions[m.group(1)] = (m.group(2), m.group(3), calls.group(1) if calls else None)
computations = {m.group(1): c for c in re.split(r"\n(?=\S)", hlo) if (m := re.match(r"%([\w.\-]+) ", c))}
kinds = collections.defaultdict(float)
for name, ms in thunk_ms.items():
    if name not in instructions:
        continue
    shape, opcode, calls = instructions[name]
    body = computations.get(calls, "") if calls else ""
    if opcode == "dot" or " dot(" in body:
        batched = opcode == "dot" or "lhs_batch_dims" in body  # a plain dot thunk is XLA's own (batched) kernel
        kinds[f"batched products {shape}" if batched else "dense products"] += ms
    else:
        kinds[f"{opcode}: " + re.sub(r"[\d.]+$", "", name) if opcode == "fusion" else opcode] += ms
for kind, ms in sorted(kinds.items(), key=lambda item: -item[1])[:20]:
    print(f"{ms:8.1f} ms  {kind}")
print(f"{sum(kinds.values()):8.1f} ms  all thunks (both threads)")

# How much of the span runs one thunk, and how much two or more at once.
spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in thunks if e.get("name", "") in instructions)
edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
running, last, busy = 0, edges[0][0], collections.Counter()
for at, change in edges:
    busy[min(running, 2)] += at - last
    running, last = running + change, at
print(f"{(edges[-1][0] - edges[0][0]) / 1000 / steps:8.1f} ms  span per step; one thunk running "
      f"{busy[1] / 1000 / steps:.1f} ms, two or more {busy[2] / 1000 / steps:.1f} ms")


def dims(shape):
    return [int(d) for d in re.search(r"\[([\d,]*)\]", shape).group(1).split(",") if d]


# Dense products by shape: output, operands, and which axis of the right operand is contracted
# (1: the weight's transposed use). Only the product's own FLOPs count toward the rate; the
# elementwise work XLA fuses into the same kernel is in its time.
table = collections.defaultdict(lambda: [0, 0.0, 0.0])
for name, ms in thunk_ms.items():
    shape, opcode, calls = instructions.get(name, (None, None, None))
    body = computations.get(calls, "") if calls else ""
    if " dot(" not in body or "lhs_batch_dims" in body:
        continue
    shapes = {m.group(1): m.group(2) for line in body.split("\n") if (m := re.match(INSTRUCTION, line))}
    shapes.update(re.findall(r"([\w.\-]+): (\w+\[[\d,]*\])", body.split("\n")[0]))  # parameters
    for line in body.split("\n"):
        if " dot(" not in line:
            continue
        out = re.match(INSTRUCTION, line).group(2)
        lhs, rhs = [shapes[o.strip().lstrip("%")] for o in re.search(r"dot\(([^)]*)\)", line).group(1).split(",")]
        lhs_contracting = [int(d) for d in re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1).split(",")]
        rhs_contracting = re.search(r"rhs_contracting_dims=\{([\d,]*)\}", line).group(1)
        flops = 2 * math.prod(dims(out)) * math.prod(dims(lhs)[d] for d in lhs_contracting)
        row = table[f"{out} = {lhs} x {rhs}, rhs contracting {{{rhs_contracting}}}"]
        row[0] += 1
        row[1] += ms / body.count(" dot(")  # a kernel with two products: its time split evenly
        row[2] += flops / 1e9
print("dense products by shape (count, ms per step, GFLOP, GFLOP/s):")
for key, (count, ms, gflop) in sorted(table.items(), key=lambda item: -item[1][1]):
    print(f"{count:4d} {ms:8.1f} ms {gflop:7.1f} GFLOP {gflop / ms * 1e3:6.0f} GFLOP/s  {key}")
