"""Mesh and shardings on 8 simulated CPU devices: data, fsdp and tensor parallel training give
the same losses and prompt as one device."""

import jax
import numpy as np
import pytest
import toy_experiment
from jax.sharding import PartitionSpec as P

from ptjax.training import sharding as shd
from ptjax.training.config import logical_axis_rules
from ptjax.training.step import step_rng

STEPS = 3


@pytest.fixture(scope="module")
def bert_dir(tiny_model_dir):
    return tiny_model_dir("bert")


def train_three_steps(bert_dir, tmp_path, mesh, devices):
    data_, fsdp, tensor = mesh
    config = toy_experiment.toy_config(bert_dir, tmp_path, **{
        "mesh.data": data_, "mesh.fsdp": fsdp, "mesh.tensor": tensor, "optimizer.name": "adamw",
        "optimizer.weight_decay": 0.01, "train.dropout": False})
    model, data = toy_experiment.build(config)
    engine, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(
        config, model, data, devices=devices, total_steps=STEPS)
    losses = []
    for i in range(STEPS):
        trainable, opt_state, metrics = step(trainable, frozen, opt_state, batches[i],
                                             step_rng(jax.random.PRNGKey(0), i))
        losses.append(float(metrics["loss"]))
    return engine, losses, np.asarray(trainable["prompt"]["embedding"]), frozen, opt_state, trainable


@pytest.fixture(scope="module")
def reference(bert_dir, tmp_path_factory):
    _, losses, prompt, *_ = train_three_steps(bert_dir, tmp_path_factory.mktemp("ref"), (1, 1, 1),
                                              jax.devices()[:1])
    return losses, prompt


# The two 2-D meshes cover every axis (data with fsdp, data with tensor); the 1-D ones are --slow.
@pytest.mark.parametrize("mesh", [
    pytest.param((8, 1, 1), id="data8", marks=pytest.mark.slow),
    pytest.param((1, 8, 1), id="fsdp8", marks=pytest.mark.slow),
    pytest.param((2, 4, 1), id="data2_fsdp4"),
    pytest.param((2, 1, 4), id="data2_tensor4"),
])
def test_meshes_match_one_device(bert_dir, tmp_path, reference, mesh):
    _, losses, prompt, frozen, opt_state, trainable = train_three_steps(bert_dir, tmp_path, mesh, None)
    ref_losses, ref_prompt = reference
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5, rtol=0)
    np.testing.assert_allclose(prompt, ref_prompt, atol=1e-5, rtol=0)
    # the layout is really distributed as the mesh says, and prompts are replicated
    assert trainable["prompt"]["embedding"].sharding.is_fully_replicated
    query = frozen["backbone"]["layers"]["query"]["kernel"]  # [layers, embed, heads, kv]
    _, fsdp, tensor = mesh
    expected = [None, "fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None]
    while expected and expected[-1] is None:
        expected.pop()
    assert query.sharding.spec == P(*expected)
    if fsdp > 1:
        head = trainable["head"]["kernel"]  # [embed, labels]: sharded like a param, moments too
        assert head.sharding.spec == P("fsdp")
        moments = [x for x in jax.tree.leaves(opt_state) if x.shape == head.shape]
        assert moments and all(m.sharding.spec == P("fsdp") for m in moments)


def test_mesh_spec_falls_back_to_replication():
    devices = np.array(jax.devices()).reshape(2, 4, 1)
    mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"))
    rules = (("embed", ("fsdp",)), ("vocab", ("tensor", "fsdp")), ("mlp", ("fsdp",)))
    assert shd.mesh_spec(P("vocab", "embed"), (30, 32), mesh, rules) == P(None, "fsdp")  # 30 % 4
    assert shd.mesh_spec(P("embed", "mlp"), (32, 64), mesh, rules) == P("fsdp")  # fsdp used once
    assert shd.mesh_spec(P("vocab", "embed"), (32, 32), mesh, rules) == P("fsdp")  # tensor is size 1
    assert shd.mesh_spec(P(None, "embed"), (3, 6), mesh, rules) == P()


def test_batch_rows_per_host_cover_the_batch(tmp_path):
    from configs import base

    config = base.get_config()
    config.mesh.data, config.mesh.fsdp = 2, 4
    mesh = shd.build_mesh(config)
    rules = logical_axis_rules(config)
    assert shd.host_rows(mesh, rules, 16) == (0, 16)  # one process feeds every row
    assert shd.batch_spec(rules, 3) == P(("data", "fsdp"), None, None)
