"""configs/base.py and ptjax.training.config.validate: locked keys, clear refusals."""

import jax
import jax.numpy as jnp
import pytest

from configs import base
from ptjax.errors import InputError
from ptjax.training.config import mesh_shape, validate


@pytest.fixture
def config(tmp_path):
    config = base.get_config()
    config.data_dir = str(tmp_path)
    return config


def test_base_config_is_valid_and_locked(config):
    validate(config, 8)
    with pytest.raises(AttributeError, match="batch_sizze"):
        config.train.batch_sizze = 3
    with pytest.raises(AttributeError):
        config.optimizer.new_knob = 1
    config.task.options.relations = "P17"  # the one free-form section


def test_every_knob_is_documented():
    source = (base.REPO_ROOT / "configs" / "base.py").read_text().splitlines()
    config = base.get_config()
    undocumented = []
    for section, value in config.items():
        keys = [section] if not hasattr(value, "items") else [f"{section}.{k}" for k in value]
        for key in keys:
            leaf = key.split(".")[-1]
            lines = [i for i, line in enumerate(source) if f".{leaf} = " in line]
            # each assignment is preceded by a comment or by another documented assignment
            if not lines or not any(source[j].strip().startswith("#") for i in lines for j in range(max(0, i - 3), i)):
                undocumented.append(key)
    assert not undocumented, undocumented


@pytest.mark.parametrize("key, value, message", [
    ("mode", "plan_b", "config.mode='plan_b': choose one of"),
    ("optimizer.name", "lion", "optimizer.name='lion'"),
    ("schedule.name", "cosine", "schedule.name='cosine'"),
    ("model.remat_policy", "some", "remat_policy"),
    ("model.dtype", "float16", "model.dtype='float16'"),
    ("method.name", "prefix", "method.name='prefix'"),
    ("train.batch_size", 12, "batch_size=12 .* divisible by the 8 data-parallel devices"),
    ("train.eval_batch_size", 4, "eval_batch_size=4"),
    ("optimizer.grad_accum_steps", 3, "not divisible by config.optimizer.grad_accum_steps=3"),
    ("schedule.warmup_ratio", 1.5, "warmup_ratio"),
    ("train.best_mode", "up", "best_mode"),
    ("mesh.data", 3, r"mesh 3x1x1 .* uses 3 devices, but there are 8"),
])
def test_refusals_name_the_key(config, key, value, message):
    section, leaf = key.split(".") if "." in key else (None, key)
    (config[section] if section else config)[leaf] = value
    with pytest.raises(InputError, match=message):
        validate(config, 8)


def test_impossible_combinations(config):
    config.schedule.warmup_steps, config.schedule.warmup_ratio = 10, 0.1
    with pytest.raises(InputError, match="warmup_steps or warmup_ratio, not both"):
        validate(config, 8)
    config = base.get_config()
    config.data_dir = "/"
    config.method.name, config.model.dtype = "fine_tune", "bfloat16"
    with pytest.raises(InputError, match="needs config.model.dtype='float32'"):
        validate(config, 8)
    config = base.get_config()
    config.data_dir = "/"
    config.method.name = "manual"
    with pytest.raises(InputError, match="nothing to train: use --config.mode=eval"):
        validate(config, 8)
    config.mode = "eval"
    validate(config, 8)


def test_missing_data_dir_says_where_and_which_key(config, tmp_path):
    config.data_dir = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"nowhere does not exist .*--config.data_dir=PATH.*PTJAX_DATA_DIR"):
        validate(config, 1)


def test_mesh_shapes(config):
    mesh = config.mesh
    assert mesh_shape(mesh, 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    mesh.data, mesh.fsdp = 2, -1
    assert mesh_shape(mesh, 8) == {"data": 2, "fsdp": 4, "tensor": 1}
    mesh.tensor = 3
    with pytest.raises(InputError, match="does not divide the 8 devices"):
        mesh_shape(mesh, 8)
    mesh.data, mesh.fsdp, mesh.tensor = -1, -1, 1
    with pytest.raises(InputError, match="only one axis may be -1"):
        mesh_shape(mesh, 8)


@pytest.mark.slow
def test_model_knobs_reach_the_backbone(config, tiny_model_dir):
    """Every config.model kernel/layout knob arrives in the module main.py builds, for training
    (weights read later) and for plans (weights never read)."""
    from ptjax import planning as plan
    from ptjax.experiment import open_configured_backbone

    config.model.name = str(tiny_model_dir("gpt2"))
    config.model.dtype, config.model.compute_dtype = "bfloat16", "float32"
    config.model.scan_layers, config.model.remat_policy, config.model.attention_impl = False, "full", "xla"
    for backbone in (open_configured_backbone(config), plan.open_architecture(config)):
        assert backbone.config.attention_impl == "xla"
        assert (backbone.module.scan_layers, backbone.module.remat_policy) == (False, "full")
        assert backbone.module.dtype == jnp.float32
        assert {s.dtype for s in jax.tree.leaves(backbone.shapes)} == {jnp.dtype(jnp.bfloat16)}
