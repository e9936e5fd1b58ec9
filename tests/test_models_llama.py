"""Llama-family decoders (Llama, tied Llama as in SmolLM2, Qwen2, Mistral) against transformers,
RoPE scaling variants, and the GGUF tensor source on a small GGUF file written here."""

import causal_lm_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models

from ptjax.models import gguf as ptjax_gguf
from ptjax.models.loading import load_backbone

FAMILIES = ("llama", "llama_tied", "qwen2", "mistral")
TOLERANCE = 1e-4
# Largest |bf16 - f32| logit difference allowed over real tokens. Measured on these 2-layer models:
# 3.4e-3 to 3.9e-3 on logits up to ~1 (bf16 keeps 8 mantissa bits, ~0.4% per rounding).
BF16_TOLERANCE = 0.02


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_model_dir):
    """(family name, ptjax backbone, transformers reference model, saved folder)."""
    path = tiny_model_dir(request.param)
    return request.param, load_backbone(path), tiny_models.reference_model(request.param, path), path


def test_config_options_come_from_the_checkpoint(family):
    name, backbone, torch_model, _ = family
    cfg = backbone.config
    assert backbone.kind == "causal_lm"
    assert cfg.qkv_bias == (name == "qwen2")
    assert cfg.tie_word_embeddings == (name == "llama_tied")
    assert cfg.num_kv_heads < cfg.num_heads
    assert cfg.rope.theta == torch_model.config.rope_parameters["rope_theta"]
    assert ("lm_head" in backbone.params) == (name != "llama_tied")
    assert backbone.params["layers"]["key"]["kernel"].shape == (2, 48, 2, 8)  # [layers, embed, kv_heads, kv]


def test_hidden_states_and_logits_match_transformers(family):
    _, backbone, torch_model, _ = family
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    hidden, logits = ref.torch_forward(torch_model, ids, mask)
    assert out.hidden_states.shape == hidden.shape
    assert ref.max_diff(out.hidden_states, hidden, mask) <= TOLERANCE
    assert ref.max_diff(out.logits, logits, mask) <= TOLERANCE
    assert out.logits.dtype == jnp.float32


@pytest.mark.slow
def test_deep_prompt_matches_a_transformers_kv_cache(family):
    _, backbone, torch_model, _ = family
    cfg = backbone.config
    ids, mask = ref.padded_batch(cfg.vocab_size)
    keys, values, prefix_mask = ref.random_prefix(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                            prefix=ref.to_prefix(keys, values, prefix_mask))
    hidden, logits = ref.torch_forward(torch_model, ids, mask, prefix=(keys, values, prefix_mask))
    assert ref.max_diff(out.hidden_states, hidden, mask) <= TOLERANCE
    assert ref.max_diff(out.logits, logits, mask) <= TOLERANCE
    plain = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    assert ref.max_diff(out.logits, plain.logits, mask) > 1e-2  # the prefix does change the output


# One plain and one biased variant cover the per-layer switch.
@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2"], indirect=True)
@pytest.mark.parametrize("layer_mask", [(False, True), (True, False)])
def test_layer_mask_matches_prefix_on_those_layers_only(family, layer_mask):
    _, backbone, torch_model, _ = family
    cfg = backbone.config
    ids, mask = ref.padded_batch(cfg.vocab_size)
    keys, values, prefix_mask = ref.random_prefix(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask,
                            prefix=ref.to_prefix(keys, values, prefix_mask, np.array(layer_mask)))
    expected = ref.torch_layerwise_logits(torch_model, ids, mask, keys, values, prefix_mask, layer_mask)
    assert ref.max_diff(out.logits, expected, mask) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama"], indirect=True)  # one embedding path for the family
def test_inputs_embeds_equal_ids(family):
    _, backbone, _, _ = family
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    embeds = backbone.module.apply({"params": backbone.params}, ids, method="embed_tokens")
    from_ids = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    from_embeds = ref.ptjax_forward(backbone, inputs_embeds=embeds, attention_mask=mask)
    np.testing.assert_allclose(from_embeds.logits, from_ids.logits, atol=1e-6)


# The tied head and the biased projections cover the bf16 code paths.
@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama_tied", "qwen2"], indirect=True)
def test_bf16_forward_stays_close_to_float32(family):
    _, backbone, _, path = family
    bf16 = load_backbone(path, dtype=jnp.bfloat16, with_tokenizer=False)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(bf16.params))
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    low = ref.ptjax_forward(bf16, input_ids=ids, attention_mask=mask)
    full = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask)
    assert low.logits.dtype == jnp.float32 and low.last_hidden_state.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(low.logits)).all()
    assert ref.max_diff(low.logits, full.logits, mask) <= BF16_TOLERANCE


@pytest.mark.slow
def test_jitted_forward_does_not_retrace(tiny_model_dir):
    backbone = load_backbone(tiny_model_dir("llama"), with_tokenizer=False)
    traces = []

    @jax.jit
    def logits(params, ids, mask):
        traces.append(ids.shape)
        return backbone.module.apply({"params": params}, ids, mask).logits

    first = ref.padded_batch(backbone.config.vocab_size, seed=0)
    second = ref.padded_batch(backbone.config.vocab_size, seed=1)
    a = logits(backbone.params, *first)
    b = logits(backbone.params, *second)
    assert len(traces) == 1
    assert not np.allclose(a, b)


@pytest.mark.slow
def test_unrolled_and_rematerialized_stacks_agree(tiny_model_dir):
    path = tiny_model_dir("qwen2")
    scanned = load_backbone(path, with_tokenizer=False)
    unrolled = load_backbone(path, with_tokenizer=False, scan_layers=False, remat_policy="full")
    ids, mask = ref.padded_batch(scanned.config.vocab_size)
    a = ref.ptjax_forward(scanned, input_ids=ids, attention_mask=mask)
    b = ref.ptjax_forward(unrolled, input_ids=ids, attention_mask=mask)
    np.testing.assert_allclose(a.hidden_states, b.hidden_states, atol=1e-5)
    axes = scanned.logical_axes["layers"]["query"]["kernel"]
    assert tuple(axes) == ("layers", "embed", "heads", "kv")


# --------------------------------------------------------------------------------------------
# RoPE variants.


def _save_llama_with_rope(root, rope_parameters: dict):
    import torch
    import transformers

    tokenizer = tiny_models.make_tokenizer("llama")
    config = tiny_models.make_config("llama", vocab_size=len(tokenizer))
    config.rope_parameters = rope_parameters
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("rope_parameters", [
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    # head_dim 8: wavelengths 6.3, 63, 628, 6283 fall in the short, blended and long bands.
    {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
], ids=["linear", "llama3"])
def test_rope_scaling_matches_transformers(tmp_path, rope_parameters):
    torch_model = _save_llama_with_rope(tmp_path, rope_parameters)
    backbone = load_backbone(tmp_path, with_tokenizer=False)
    assert backbone.config.rope.kind == rope_parameters["rope_type"]
    ids, mask = ref.padded_batch(backbone.config.vocab_size)
    positions = np.broadcast_to(np.arange(ids.shape[1]) * 5, ids.shape)  # long enough to matter
    import torch

    with torch.no_grad():
        expected = torch_model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                               position_ids=torch.tensor(positions)).logits.numpy()
    out = ref.ptjax_forward(backbone, input_ids=ids, attention_mask=mask, position_ids=positions)
    assert ref.max_diff(out.logits, expected, mask) <= TOLERANCE


def test_unsupported_rope_type_fails_clearly(tmp_path):
    _save_llama_with_rope(tmp_path, {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0})
    with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
        load_backbone(tmp_path, with_tokenizer=False)


# --------------------------------------------------------------------------------------------
# GGUF.


def _llama_cpp_row_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows: per head, interleave the two rotary halves."""
    half = weight.shape[0] // heads // 2
    out = np.empty_like(weight)
    for h in range(heads):
        block = weight[h * 2 * half:(h + 1) * 2 * half]
        out[h * 2 * half:(h + 1) * 2 * half][0::2] = block[:half]
        out[h * 2 * half:(h + 1) * 2 * half][1::2] = block[half:]
    return out


def test_unpermute_rows_inverts_llama_cpp_order():
    weight = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6 * 8, 3)
    assert np.array_equal(ptjax_gguf.unpermute_rows(_llama_cpp_row_order(weight, 6), 6), weight)
    bias = np.arange(2 * 8, dtype=np.float32)
    assert np.array_equal(ptjax_gguf.unpermute_rows(_llama_cpp_row_order(bias, 2), 2), bias)


# Q8_0 quantizes blocks of 32 along the input axis: down_proj's input (intermediate, 96) fits.
QUANTIZED = "model.layers.0.mlp.down_proj.weight"


def test_gguf_source_restores_transformers_tensors(tmp_path, tiny_model_dir):
    """A GGUF file written the way llama.cpp converts a Llama reads back as the original tensors."""
    import gguf
    from safetensors.numpy import load_file

    path = tiny_model_dir("llama")
    original = load_file(str(path / "model.safetensors"))
    cfg = load_backbone(path, with_tokenizer=False).config
    gguf_names = {v: k for k, v in ptjax_gguf._GLOBAL_NAMES.items()}
    writer = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    writer.add_block_count(cfg.num_layers)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bb", "ccc"])  # stepped over when read
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1])
    layer_parts = {v: k for k, v in ptjax_gguf._LAYER_PARTS.items()}
    for name, tensor in original.items():
        if name.startswith("model.layers."):
            layer, part = name[len("model.layers."):].split(".", 1)
            part, kind = part.rsplit(".", 1)
            gguf_name = f"blk.{layer}.{layer_parts[part]}.{kind}"
        else:
            gguf_name = gguf_names[name]
        if ".attn_q." in gguf_name or ".attn_k." in gguf_name:
            tensor = _llama_cpp_row_order(tensor, cfg.num_heads if ".attn_q." in gguf_name else cfg.num_kv_heads)
        if name == QUANTIZED:  # one quantized tensor exercises dequantization
            writer.add_tensor(gguf_name, gguf.quants.quantize(tensor, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    source = ptjax_gguf.GGUFSource(tmp_path / "tiny.gguf")
    stock = gguf.GGUFReader(str(tmp_path / "tiny.gguf"))
    table = lambda reader: [(t.name, t.tensor_type, tuple(t.shape), t.data_offset) for t in reader.tensors]
    assert table(source._reader) == table(stock) and list(source._reader.fields) == list(stock.fields)
    assert source.names() == frozenset(original)
    for name, tensor in original.items():
        assert source.shape(name) == tensor.shape, name
        if name == QUANTIZED:
            assert np.abs(source.read(name) - tensor).max() < 0.01 * np.abs(tensor).max()
        else:
            np.testing.assert_array_equal(source.read(name), tensor, err_msg=name)


def test_gguf_source_rejects_other_files(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="broken.gguf: not a readable GGUF file"):
        ptjax_gguf.GGUFSource(bad)

