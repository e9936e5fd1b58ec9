"""The compiled train step's temporaries and arguments (XLA's memory_analysis) for the PEFT
benchmark's three ptjax sides, bf16 and float32, layers unrolled as the benchmark runs them, on
one device (BENCHMARKS.md "bf16 compute").

    python benchmarks/scripts/step_temporaries.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
from ptjax.benchmarks import sides
from ptjax.models.loading import open_backbone

for name in ("smollm2_lester", "minilm_lester", "minilm_ptuning_v2"):
    case = sides.CASES[name]
    tokenizer = open_backbone(case.backbone).tokenizer
    inputs = sides.make_inputs(case, tokenizer, 30522 if "minilm" in case.backbone else 49152, 1)
    for dtype in ("bfloat16", "float32"):
        side = sides.PtjaxSide(case, case.backbone, inputs, scan_layers=False, dtype=dtype)
        compiled = side.lower().compile()
        memory = compiled.memory_analysis()
        print(f"{name:18s} {dtype:9s} temporaries {memory.temp_size_in_bytes / 2**20:.0f} MiB, "
              f"arguments {memory.argument_size_in_bytes / 2**20:.0f} MiB", flush=True)
