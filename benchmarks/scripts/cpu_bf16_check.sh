#!/usr/bin/env bash
# Issue 21's measurements on a new CPU host (an Intel Xeon with AMX is the one still missing), in
# one go: the host, the matmul probe, the bf16 comparison with PEFT as the issue states it, ptjax's
# float32 SmolLM2 step for the bf16/float32 ratio, and the one-device comparison (to check that
# config.mesh.cpu_devices="auto", measured on an AMD host, still picks the faster count here).
# About 15 minutes on 2 cores. Output (logs and JSON lines) goes to $OUT (default ./cpu_bf16_out).
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
EOF
