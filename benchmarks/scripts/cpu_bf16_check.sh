#!/usr/bin/env bash
# Issue 21's measurements on a new CPU host (an Intel Xeon with AMX is the one still missing), in
# one go: the host, the matmul probe, the bf16 comparison with PEFT as the issue states it, ptjax's
# float32 SmolLM2 step for the bf16/float32 ratio, the one-device comparison (to check that
# config.mesh.cpu_devices="auto", measured on an AMD host, still picks the faster count here), and
# for item 4 (round swings) the cost of first-touching new memory and the per-step heap growth of
# the benchmark's two-device MiniLM Lester step. About 17 minutes on 2 cores. Output (logs and JSON lines) goes to $OUT (default ./cpu_bf16_out).
#
#   bash benchmarks/scripts/cpu_bf16_check.sh
#
# Run it on an otherwise idle host; then record the figures in BENCHMARKS.md ("bf16 compute")
# beside the host's name, and copy the JSON files into benchmarks/.
set -u
OUT=${OUT:-cpu_bf16_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$HERE" || exit 1

{ lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket"; grep -o -w -E "amx_bf16|amx_tile|avx512_bf16" /proc/cpuinfo | sort -u;
  uptime; git -C "$HERE" log --oneline -1; } 2>&1 | tee "$OUT/host.txt"
# The workplace's probe beside the checkout (PROBE=path for another place).
PROBE=${PROBE:-$HERE/../shared/tools/matmul_probe.py}
if [ -f "$PROBE" ]; then python3 "$PROBE" 2>&1 | tee "$OUT/matmul_probe.txt" | head -6; else echo "no $PROBE"; fi

# The issue's command: ptjax bf16 (float32 accumulation) against PEFT under torch.autocast, 3 cases.
timeout 900 python3 -m ptjax.benchmarks.peft --dtype bfloat16 > "$OUT/bf16_default.jsonl" 2> "$OUT/bf16_default.log"
# ptjax and PEFT in float32 on SmolLM2: the denominator of the 2.5x bf16/float32 target.
timeout 400 python3 -m ptjax.benchmarks.peft --cases smollm2_lester > "$OUT/f32_smollm2.jsonl" 2> "$OUT/f32_smollm2.log"
# The same bf16 comparison on one device, against "auto"'s choice above.
timeout 900 python3 -m ptjax.benchmarks.peft --dtype bfloat16 --host-devices 1 > "$OUT/bf16_one_device.jsonl" \
  2> "$OUT/bf16_one_device.log"

# Item 4: how slow first touches of new memory are on this VM, and at which steps the heap grows
# (a slow step with system time and new faults is one; BENCHMARKS.md "Round-to-round swings").
timeout 60 python3 benchmarks/scripts/first_touch.py > "$OUT/first_touch.txt" 2>&1
XLA_FLAGS=--xla_force_host_platform_device_count=2 DTYPE=bfloat16 SCAN=0 CASE=minilm_lester STEPS=60 \
  timeout 300 python3 benchmarks/scripts/step_page_faults.py > "$OUT/step_page_faults.txt" 2>&1

python3 - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("bf16_default", "f32_smollm2", "bf16_one_device"):
    path = out / f"{name}.jsonl"
    for line in path.read_text().splitlines() if path.exists() else ():
        if line.startswith("{") and "case" in (record := json.loads(line)):
            print(f"{name:16s} {record['case']:18s} devices {record.get('ptjax_devices')}  ptjax "
                  f"{record['ptjax_examples_per_s']:.2f}  PEFT {record['peft_examples_per_s']:.2f}  "
                  f"median ratio {record['speedup_median_of_rounds']:.2f}x")
touch = out / "first_touch.txt"
print("first touch      ", " | ".join(touch.read_text().splitlines()[:3]) if touch.exists() else "none")
steps = [line for line in (out / "step_page_faults.txt").read_text().splitlines() if "| step " in line] \
    if (out / "step_page_faults.txt").exists() else []
slow = [line.split("| ")[1].split(":")[0] for line in steps[1:]
        if float(line.split("| ")[1].split()[2]) > 1.5 * sorted(float(l.split("| ")[1].split()[2]) for l in steps[1:])[len(steps[1:]) // 2]]
print(f"heap growth      {len(steps)} steps; slow (over 1.5x the median) after the first: {', '.join(slow) or 'none'}")
EOF
