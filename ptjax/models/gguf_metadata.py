"""The transformers config and tokenizer of a GGUF checkpoint, built without PyTorch.

transformers rebuilds both from a GGUF file's metadata (`from_pretrained(..., gguf_file=...)`),
but its GGUF reader imports torch, which ptjax does not need at run time (a `pip install .`
environment has no torch). Here the metadata is read with the `gguf` package; the config
comes from the GGUF keys of the Llama-like architectures ptjax reads, the tokenizer from
transformers' own GGUF tokenizer tables (GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer), so both
are the ones transformers would build: tests/test_gguf_metadata.py compares them with
transformers' torch path.

    config, tokenizer = config_and_tokenizer("model.Q4_1.gguf")
"""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader, GGUFValueType

from ptjax.errors import InputError

# Metadata string arrays the tokenizer needs whole; other string arrays are kept as their length.
TOKENIZER_STRING_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")
# Tokenizer attribute -> the metadata key of its token id.
SPECIAL_TOKEN_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                     "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def read_metadata(path: str | Path) -> tuple[dict, tuple[str, ...]]:
    """(metadata key -> value, tensor names): scalars and numeric arrays as Python values, the
    tokenizer's string arrays as lists, other string arrays as their length."""
    reader = GGUFReader(str(path))
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):  # the reader's own header fields (version, counts)
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            whole = field.types[-1] != GGUFValueType.STRING or name in TOKENIZER_STRING_ARRAYS
            metadata[name] = list(field.contents()) if whole else len(field.data)
        else:
            metadata[name] = field.contents()
    if "general.architecture" not in metadata:
        raise InputError(f"{path}: no general.architecture in the GGUF metadata")
    return metadata, tuple(tensor.name for tensor in reader.tensors)


# GGUF metadata keys (after the "<architecture>." prefix) -> transformers config fields, for the
# Llama-like architectures ptjax reads from GGUF (ptjax/models/gguf.py). transformers' own table
# for these is inside its torch-only loader, hence this one; the test compares the results.
LLAMA_CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
}
MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}


def hf_config(metadata: dict, tensor_names: tuple[str, ...]):
    import transformers

    architecture = metadata["general.architecture"]
    model_type = MODEL_TYPES.get(architecture)
    if model_type is None:
        raise InputError(f"GGUF architecture {architecture!r} is not read by ptjax "
                         f"(known: {', '.join(MODEL_TYPES)})")
    if model_type == "llama" and "mistral" in str(metadata.get("general.name", "")).lower():
        model_type = "mistral"  # llama.cpp files Mistral under the llama architecture
    fields = {field: metadata[f"{architecture}.{key}"] for key, field in LLAMA_CONFIG_KEYS.items()
              if f"{architecture}.{key}" in metadata}
    if "vocab_size" not in fields and isinstance(metadata.get("tokenizer.ggml.tokens"), list):
        fields["vocab_size"] = len(metadata["tokenizer.ggml.tokens"])
    for field, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                       ("pad_token_id", "padding_token_id"), ("unk_token_id", "unknown_token_id")):
        if f"tokenizer.ggml.{key}" in metadata:
            fields[field] = metadata[f"tokenizer.ggml.{key}"]
    fields["tie_word_embeddings"] = "output.weight" not in tensor_names
    return transformers.AutoConfig.for_model(model_type, **fields)


def tokenizer_settings(metadata: dict) -> tuple[dict, dict]:
    """(the tokenizer description convert_gguf_tokenizer takes, the tokenizer's init settings)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING

    groups = {group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items()
                      if f"tokenizer.{key}" in metadata}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    description, settings = groups["tokenizer"], groups["tokenizer_config"]
    if description.get("tokenizer_type") == "llama":
        settings.setdefault("add_bos_token", True)  # llama.cpp's default for sentencepiece files
    elif description.get("tokenizer_type") == "gemma4":
        settings["add_bos_token"] = False  # its chat template writes <bos> itself
    for attribute, key in SPECIAL_TOKEN_IDS.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        settings[attribute] = description["tokens"][token_id] if token_id is not None else None
    return description, settings


def config_and_tokenizer(path: str | Path, folder: Path):
    """Write the GGUF file's config and tokenizer into `folder` (transformers files) and return them."""
    import transformers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    metadata, tensor_names = read_metadata(path)
    config = hf_config(metadata, tensor_names)
    config.save_pretrained(folder)
    description, settings = tokenizer_settings(metadata)
    backend, extra = convert_gguf_tokenizer(metadata["general.architecture"], description)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), tokenizer_object=backend,
                                                           **settings, **extra)
    tokenizer.save_pretrained(folder)
    return config, tokenizer
