"""The relative errors tests/test_bf16.py bounds, measured: per family and seed (0-2), a tiny random
model built with transformers, loaded in float32 and in bf16 (weights and compute), and the
relative error of the bf16 outputs (hidden states, logits) and prompt gradients (input embeddings,
deep-prompt keys and values) against float32, with the test's own inputs and loss.

    python benchmarks/scripts/bf16_family_errors.py bert roberta albert gpt2 llama t5 deberta deberta_v2
"""

import sys as _sys, pathlib as _pathlib
_root = _pathlib.Path(__file__).resolve().parents[2]
_sys.path[:0] = [str(_root), str(_root / "tests")]  # the repository root; the test's helpers
import sys, tempfile

import jax.numpy as jnp

import test_bf16
import tiny_models
from ptjax.models.loading import load_backbone

root = _pathlib.Path(tempfile.mkdtemp())
for family in sys.argv[1:]:
    for seed in range(3):
        path = tiny_models.save_tiny(family, root / f"{family}_{seed}", seed=seed)
        f32 = load_backbone(path)
        bf16 = load_backbone(path, dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
        mask, embeds, keys, values, decoder_ids = test_bf16._inputs(f32, seed)
        (_, (hidden_ref, logits_ref)), grads_ref = test_bf16._loss_fn(f32, mask, decoder_ids)[0](
            f32.params, embeds, keys, values)
        (_, (hidden, logits)), grads = test_bf16._loss_fn(bf16, mask, decoder_ids)[0](bf16.params, embeds, keys, values)
        real = mask[..., None] if decoder_ids is None else 1
        error = test_bf16._relative_error
        print(f"{family:11s} seed {seed}: outputs {error(hidden * real, hidden_ref * real):.4f} "
              f"{error(logits * real, logits_ref * real):.4f}, gradients (embeds, keys, values) "
              + " ".join(f"{error(ours, ref):.4f}" for ours, ref in zip(grads, grads_ref)), flush=True)
