"""ptjax prompt exports <-> Hugging Face PEFT prompt adapters (adapter_config.json +
adapter_model.safetensors), without importing torch.

    export_adapter("runs/rte/export", "runs/rte/peft")      # ptjax export -> PEFT adapter folder
    import_adapter("some/peft_adapter", "runs/imported")     # PEFT adapter -> ptjax export folder

Which PEFT type a ptjax prompt becomes:
  soft prompt, plain table (lester, ptuning with encoder "none")  -> PROMPT_TUNING
  soft prompt through an LSTM or MLP encoder (ptuning)           -> P_TUNING (LSTM / MLP)
  deep prompt, direct keys/values (ptuning_v2)                   -> PREFIX_TUNING, prefix_projection False
  deep prompt, MLP reparameterization (ptuning_v2 reparam)        -> PREFIX_TUNING, prefix_projection True

PEFT's checkpoint holds one tensor, "prompt_embeddings": what the prompt encoder produces (the
virtual-token vectors [n, embed], or the flattened prefix [n, layers * 2 * kv_heads * head_dim]
laid out [layers, keys/values, kv_heads, head_dim] per token, which is ptjax's own prefix table
layout). PEFT loads it for inference whatever the encoder was, so an encoder's output is computed
once here (as `materialize_encoder` does). The encoder weights themselves are written beside it,
under PEFT's module names, to prompt_encoder.safetensors: `peft_model.prompt_encoder["default"]
.load_state_dict(...)` on a PEFT model built for training continues from them. ptjax's two-layer
ReLU MLP becomes PEFT's three-layer one with an identity middle layer (ReLU(ReLU(x)) = ReLU(x)).

Placement, which must agree for the outputs to agree:
  - PEFT puts virtual tokens before every input token, the tokenizer's [CLS] / <s> / BOS
    included. A ptjax soft prompt matches when all its soft tokens open the template and
    config.prompt.soft_prefix_first=True places them before the special tokens (trivially so
    for tokenizers that add none at the start, e.g. GPT-2, SmolLM2).
  - PEFT prefix tuning hands the prefix to transformers as past_key_values, and transformers
    5 numbers the tokens that follow a cache of length n from n: BERT's and GPT-2's absolute
    positions, RoBERTa's padding-aware ones and Llama's rotary angles all shift by n (PEFT adds
    n to explicit position_ids too). The prefix is visible to every query; prefix keys get no
    rotation. ptjax does the same by default (config.prompt.deep.shift_positions unset or True).
  Anything else is refused with the config key to set (`force=True` exports anyway, and says
  so). Not representable in PEFT and always refused: soft tokens inside the template, a prefix on
  only some layers, T5 prefixes, soft and deep prompts together. A bank of prompts exports one
  prompt (`prompt_index`). Task heads (ptjax's "head" group) are not part of a prompt adapter
  and are left out, with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from ptjax.errors import InputError
from ptjax.models.loading import Backbone, open_backbone
from ptjax.prompts.deep import DeepPrompt
from ptjax.prompts.encoders import PromptEncoder
from ptjax.prompts.special_tokens import special_layout
from ptjax.training import checkpoints as ckpt

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ENCODER_FILE = "prompt_encoder.safetensors"
PROVENANCE_FILE = "ptjax_provenance.json"
PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")
TASK_TYPES = {"causal_lm": "CAUSAL_LM", "masked_lm": "FEATURE_EXTRACTION", "encoder": "FEATURE_EXTRACTION"}


# --------------------------------------------------------------------------------------------
# Reading a ptjax export.


def _dims(backbone: Backbone) -> tuple[int, int, int, int, int]:
    """(layers, attention heads, kv heads, head dim, embedding width) of a backbone."""
    from ptjax.methods.model import embedding_width

    cfg = backbone.config
    heads = cfg.num_heads
    kv_heads = getattr(cfg, "num_kv_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.d_kv
    return cfg.num_layers, heads, kv_heads, head_dim, embedding_width(backbone)


def _pick_prompt(tree: dict, table_rank: int, prompt_index: int | None, what: str) -> dict:
    """The params of one prompt: the tree itself, or one prompt of a bank. A PromptEncoder or
    DeepPrompt bank stacks only its table ("embedding" / "prefix", one more axis than
    table_rank) and shares the encoder; a PromptEncoderBank ({"encoder": ...}) stacks every leaf."""
    independent = "encoder" in tree
    if independent:
        tree = tree["encoder"]
    name = "prefix" if "prefix" in tree else "embedding"
    if tree[name].ndim == table_rank and not independent:
        if prompt_index not in (None, 0):
            raise InputError(f"{what}: holds one prompt; there is no prompt_index {prompt_index}")
        return tree
    count = tree[name].shape[0]
    if prompt_index is None:
        raise InputError(f"{what}: a bank of {count} prompts; choose one with prompt_index (0 .. {count - 1})")
    if not 0 <= prompt_index < count:
        raise InputError(f"{what}: prompt_index {prompt_index} outside the bank's 0 .. {count - 1}")
    if independent:
        return jax.tree.map(lambda x: x[prompt_index], tree)
    return {**tree, name: tree[name][prompt_index]}


# --------------------------------------------------------------------------------------------
# ptjax -> PEFT tensors.


def soft_encoder_module(params: dict, embed_dim: int) -> PromptEncoder:
    """The PromptEncoder (one prompt) whose parameter tree `params` is."""
    num_tokens = params["embedding"].shape[-2]
    if "lstm" in params:
        return PromptEncoder(num_tokens=num_tokens, embed_dim=embed_dim, reparam="lstm",
                             hidden_dim=params["mlp"]["hidden"]["kernel"].shape[-1],
                             lstm_layers=len(params["lstm"]) // 2)
    if "mlp" in params:
        return PromptEncoder(num_tokens=num_tokens, embed_dim=embed_dim, reparam="mlp",
                             hidden_dim=params["mlp"]["hidden"]["kernel"].shape[-1])
    return PromptEncoder(num_tokens=num_tokens, embed_dim=embed_dim)


def deep_prompt_module(params: dict, backbone: Backbone) -> DeepPrompt:
    """The DeepPrompt (one prompt, every layer) whose parameter tree `params` is."""
    layers, _, kv_heads, head_dim, _ = _dims(backbone)
    if "prefix" in params:
        return DeepPrompt(num_layers=layers, num_kv_heads=kv_heads, head_dim=head_dim,
                          length=params["prefix"].shape[0])
    return DeepPrompt(num_layers=layers, num_kv_heads=kv_heads, head_dim=head_dim,
                      length=params["embedding"].shape[0], reparam="mlp",
                      embed_dim=params["embedding"].shape[-1], hidden_dim=params["hidden"]["kernel"].shape[-1])


def _linear(kernel: np.ndarray, bias: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """A ptjax Dense [in..., out...] as torch.nn.Linear weight [out, in] and bias [out]."""
    fan_in = kernel.shape[0]
    weight = kernel.reshape(fan_in, -1).T
    return {f"{prefix}.weight": weight, f"{prefix}.bias": bias.reshape(-1)}


def peft_soft_encoder_state(params: dict) -> dict[str, np.ndarray]:
    """PEFT PromptEncoder / PromptEmbedding state dict (training mode) of a ptjax soft prompt."""
    state = {"embedding.weight": params["embedding"]}
    if "lstm" in params:
        for name, layer in params["lstm"].items():  # layer_{k}_{forward|backward}
            _, number, direction = name.split("_")
            suffix = f"_l{number}" + ("_reverse" if direction == "backward" else "")
            kernel, bias = layer["input"]["kernel"], layer["input"]["bias"]
            state[f"lstm_head.weight_ih{suffix}"] = kernel.reshape(kernel.shape[0], -1).T
            state[f"lstm_head.bias_ih{suffix}"] = bias.reshape(-1)
            recurrent = layer["recurrent_kernel"]
            state[f"lstm_head.weight_hh{suffix}"] = recurrent.reshape(recurrent.shape[0], -1).T
            state[f"lstm_head.bias_hh{suffix}"] = np.zeros_like(bias.reshape(-1))
        state.update(_linear(params["mlp"]["hidden"]["kernel"], params["mlp"]["hidden"]["bias"], "mlp_head.0"))
        state.update(_linear(params["mlp"]["output"]["kernel"], params["mlp"]["output"]["bias"], "mlp_head.2"))
    elif "mlp" in params:
        hidden = params["mlp"]["hidden"]["kernel"].shape[-1]
        state.update(_linear(params["mlp"]["hidden"]["kernel"], params["mlp"]["hidden"]["bias"], "mlp_head.0"))
        state.update({"mlp_head.2.weight": np.eye(hidden, dtype=np.float32),
                      "mlp_head.2.bias": np.zeros(hidden, np.float32)})
        state.update(_linear(params["mlp"]["output"]["kernel"], params["mlp"]["output"]["bias"], "mlp_head.4"))
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


def peft_prefix_encoder_state(params: dict) -> dict[str, np.ndarray]:
    """PEFT PrefixEncoder state dict (training mode) of a ptjax deep prompt."""
    if "prefix" in params:
        table = params["prefix"]
        return {"embedding.weight": np.ascontiguousarray(table.reshape(table.shape[0], -1), np.float32)}
    state = {"embedding.weight": params["embedding"]}
    state.update(_linear(params["hidden"]["kernel"], params["hidden"]["bias"], "transform.0"))
    state.update(_linear(params["output"]["kernel"], params["output"]["bias"], "transform.2"))
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


def _layout(info: dict) -> dict:
    return dict((info.get("method") or {}).get("prompt_layout") or {})


def _placement_problems(kind: str, layout: dict, soft_params: dict | None, backbone: Backbone) -> list[str]:
    """Why PEFT would place this prompt differently from ptjax ([] when it would not)."""
    problems = []
    if soft_params is not None:
        num_soft = soft_params["embedding"].shape[-2]
        template = layout.get("template")
        if template is not None:
            from ptjax.prompts.templates import parse_template

            leading = parse_template(template).leading_soft_tokens
            if leading != num_soft:
                problems.append(f"the template {template!r} has soft tokens after its start; PEFT can only "
                                "prepend virtual tokens (no setting changes that)")
        specials = special_layout(backbone.tokenizer, 1).specials[0] if backbone.tokenizer is not None else ()
        if specials and not layout.get("soft_prefix_first", False):
            names = backbone.tokenizer.convert_ids_to_tokens(list(specials))
            problems.append(f"the soft prompt follows {names} but PEFT puts virtual tokens before them: train "
                            "with config.prompt.soft_prefix_first=True")
    if kind == "deep" and not layout.get("shift_positions", False):
        problems.append("real tokens keep positions 0, 1, ... but transformers numbers them after the prefix: "
                        "train with config.prompt.deep.shift_positions=True (the default; this export "
                        "was trained with False)")
    return problems


def to_peft(params: dict, info: dict, backbone: Backbone, *, prompt_index: int | None = None,
            force: bool = False) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(adapter_config, {"prompt_embeddings": ...}, encoder state dict, notes) of an export's
    params (from ptjax.training.checkpoints.read_export_arrays) on its backbone (opened, weights not needed)."""
    where = f"export of {info.get('backbone')}"
    prompt = params.get("prompt") or {}
    notes = []
    if "head" in params:
        notes.append("the task head (params['head']) is not part of a PEFT prompt adapter and was left out")
    if "backbone" in params:
        raise InputError(f"{where}: the backbone trained too (fine-tuning or joint P-tuning); a prompt adapter "
                         "cannot carry backbone weights")
    kinds = sorted(prompt)
    if kinds not in (["soft"], ["deep"]):
        raise InputError(f"{where}: holds prompt parts {kinds}; a PEFT prompt adapter is one soft prompt or one "
                         "deep prompt (no T5 decoder prefix, not both)")
    kind = kinds[0]
    if backbone.kind not in TASK_TYPES:
        raise InputError(f"{where}: backbone kind {backbone.kind!r}; export supports encoders and causal LMs")
    layers, heads, kv_heads, head_dim, width = _dims(backbone)
    layout = _layout(info)
    common = {"base_model_name_or_path": _base_model_name(backbone), "inference_mode": True,
              "num_layers": layers, "num_transformer_submodules": 1, "revision": None,
              "task_type": TASK_TYPES[backbone.kind], "modules_to_save": None}
    if kind == "soft":
        one = _pick_prompt(prompt["soft"], 2, prompt_index, where)
        module = soft_encoder_module(one, width)
        vectors = np.asarray(module.apply({"params": one}), np.float32)
        encoder = peft_soft_encoder_state(one)
        config = {**common, "num_virtual_tokens": int(vectors.shape[0]), "token_dim": width,
                  "num_attention_heads": heads}
        if module.reparam == "none":
            config.update(peft_type="PROMPT_TUNING", prompt_tuning_init="RANDOM", prompt_tuning_init_text=None,
                          tokenizer_name_or_path=None, tokenizer_kwargs=None)
        elif module.reparam == "lstm":
            if module.hidden_dim != width:
                raise InputError(f"{where}: LSTM encoder with MLP width {module.hidden_dim}; PEFT's LSTM encoder "
                                 f"needs it equal to the embedding width {width}")
            config.update(peft_type="P_TUNING", encoder_reparameterization_type="LSTM",
                          encoder_hidden_size=width // 2, encoder_num_layers=module.lstm_layers,
                          encoder_dropout=0.0)
        else:
            config.update(peft_type="P_TUNING", encoder_reparameterization_type="MLP",
                          encoder_hidden_size=module.hidden_dim, encoder_num_layers=2, encoder_dropout=0.0)
        problems = _placement_problems(kind, layout, one, backbone)
    else:
        one = _pick_prompt(prompt["deep"], 5 if "prefix" in prompt["deep"] else 2, prompt_index, where)
        prompted_layers = (one["prefix"].shape[1] if "prefix" in one
                           else one["output"]["kernel"].shape[1])
        if prompted_layers != layers:
            raise InputError(f"{where}: the prefix covers {prompted_layers} of {layers} layers; PEFT prefix tuning "
                             "puts one on every layer")
        module = deep_prompt_module(one, backbone)
        table = np.asarray(module.apply({"params": one}, method=DeepPrompt.prefix_table), np.float32)
        vectors = table.reshape(table.shape[0], -1)
        encoder = peft_prefix_encoder_state(one)
        config = {**common, "peft_type": "PREFIX_TUNING", "num_virtual_tokens": int(table.shape[0]),
                  "token_dim": kv_heads * head_dim, "num_attention_heads": kv_heads,
                  "prefix_projection": module.reparam == "mlp",
                  "encoder_hidden_size": module.hidden_dim if module.reparam == "mlp" else kv_heads * head_dim}
        problems = _placement_problems(kind, layout, None, backbone)
    if problems and not force:
        raise InputError(f"{where}: PEFT would not reproduce this prompt's outputs: " + "; ".join(problems)
                         + " (force=True / --force exports it anyway)")
    notes += [f"exported despite: {p}" for p in problems]
    return config, {"prompt_embeddings": np.ascontiguousarray(vectors)}, encoder, notes


def _base_model_name(backbone: Backbone) -> str:
    files = backbone.files
    if files is not None and Path(files.weights).suffix == ".safetensors":
        return str(files.folder)
    return backbone.name


def export_adapter(export: str | Path, out_dir: str | Path, *, prompt_index: int | None = None,
                   force: bool = False, backbone: Backbone | None = None) -> list[str]:
    """Write the PEFT adapter of a ptjax prompt export to out_dir; returns notes for the user.
    backbone: the export's backbone when already opened (default: opened from the export's name)."""
    from safetensors.numpy import save_file

    export = ckpt.resolve_export(export)
    params, info = ckpt.read_export_arrays(export)
    if backbone is None:
        backbone = open_backbone(info["backbone"])
    ckpt.check_fingerprint(export, info, backbone_fingerprint(backbone))
    config, tensors, encoder, notes = to_peft(params, info, backbone, prompt_index=prompt_index, force=force)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    save_file(encoder, str(out / ENCODER_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    provenance = {"export": str(export), "backbone": info["backbone"],
                  "fingerprint": info["fingerprint"], "method": info.get("method"), "prompt_index": prompt_index,
                  "notes": notes}
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n")
    return notes


# --------------------------------------------------------------------------------------------
# PEFT -> ptjax.


def read_adapter(adapter_dir: str | Path) -> tuple[dict, np.ndarray]:
    """(adapter_config, float32 prompt_embeddings) of a PEFT prompt adapter folder."""
    from safetensors.numpy import load_file

    folder = Path(adapter_dir)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{folder}: no {CONFIG_FILE} (not a PEFT adapter folder)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{config_path}: line {err.lineno}: {err.msg}") from None
    peft_type = config.get("peft_type")
    if peft_type not in PROMPT_TYPES:
        raise InputError(f"{config_path}: peft_type {peft_type!r}; importable prompt adapters are "
                         f"{', '.join(PROMPT_TYPES)}")
    if (config.get("num_transformer_submodules") or 1) != 1 or config.get("task_type") == "SEQ_2_SEQ_LM":
        raise InputError(f"{config_path}: an encoder-decoder adapter (num_transformer_submodules="
                         f"{config.get('num_transformer_submodules')}); ptjax imports one-stack prompts")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        other = " (found adapter_model.bin: re-save it with safe_serialization=True)" if (
            folder / "adapter_model.bin").is_file() else ""
        raise InputError(f"{folder}: no {WEIGHTS_FILE}{other}")
    tensors = load_file(str(weights))
    if "prompt_embeddings" not in tensors:
        raise InputError(f"{weights}: no 'prompt_embeddings' tensor (has {sorted(tensors)})")
    return config, np.asarray(tensors["prompt_embeddings"], np.float32)


def from_peft(config: dict, vectors: np.ndarray, backbone: Backbone) -> tuple[dict, dict]:
    """(ptjax trainable params, export metadata) of a PEFT prompt adapter on `backbone`."""
    layers, _, kv_heads, head_dim, width = _dims(backbone)
    peft_type, count = config["peft_type"], int(config["num_virtual_tokens"])
    where = f"PEFT {peft_type} adapter"
    if backbone.kind not in TASK_TYPES:
        raise InputError(f"{where}: backbone kind {backbone.kind!r}; import supports encoders and causal LMs")
    layout = {"num_soft_tokens": 0, "soft_prefix_first": False, "soft_encoder": "", "deep_length": 0,
              "shift_positions": False}
    if peft_type == "PREFIX_TUNING":
        expected = (count, layers * 2 * kv_heads * head_dim)
        if vectors.shape != expected:
            raise InputError(f"{where}: prompt_embeddings {list(vectors.shape)} do not fit {backbone.name} "
                             f"({layers} layers x 2 x {kv_heads} kv heads x {head_dim}: expected {list(expected)})")
        params = {"prompt": {"deep": {"prefix": vectors.reshape(count, layers, 2, kv_heads, head_dim)}}}
        method = "ptuning_v2"
        layout.update(deep_length=count, shift_positions=True, template="")
    else:
        if vectors.shape != (count, width):
            raise InputError(f"{where}: prompt_embeddings {list(vectors.shape)} do not fit {backbone.name} "
                             f"(expected [{count}, {width}])")
        params = {"prompt": {"soft": {"embedding": vectors}}}
        method = "lester" if peft_type == "PROMPT_TUNING" else "ptuning"
        layout.update(num_soft_tokens=count, soft_prefix_first=True, soft_encoder="none",
                      template=f"[P*{count}] {{text}}")
    metadata = {"task": "", "method": method, "backbone": backbone.name, "prompt_layout": layout,
                "imported_from": {k: config.get(k) for k in ("peft_type", "task_type", "base_model_name_or_path",
                                                              "num_virtual_tokens", "peft_version")}}
    return params, metadata


def backbone_fingerprint(backbone: Backbone) -> str:
    """The fingerprint an export records, read from a few checkpoint tensors (no full load)."""
    from ptjax.models.loading import fingerprint
    from ptjax.models.tensor_sources import open_tensor_source

    if backbone.fingerprint is not None:
        return backbone.fingerprint
    source = open_tensor_source(backbone.files.weights)
    try:
        return fingerprint(backbone.family, backbone.config, source, backbone.family.weight_map(backbone.config))
    finally:
        source.close()


def import_adapter(adapter_dir: str | Path, out_dir: str | Path, *, model: str | None = None,
                   backbone: Backbone | None = None) -> Path:
    """Write a ptjax prompt export (out_dir) holding a PEFT prompt adapter. model: the backbone
    (default: the adapter's base_model_name_or_path); backbone: the same, already opened."""
    config, vectors = read_adapter(adapter_dir)
    if backbone is None:
        name = model or config.get("base_model_name_or_path")
        if not name:
            raise InputError(f"{adapter_dir}: {CONFIG_FILE} names no base_model_name_or_path; pass the backbone")
        backbone = open_backbone(name)
    params, metadata = from_peft(config, vectors, backbone)
    return ckpt.write_export(out_dir, params, metadata=metadata, fingerprint=backbone_fingerprint(backbone),
                             backbone=backbone.name)

