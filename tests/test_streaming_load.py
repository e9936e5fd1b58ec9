"""Weights stream from the memory-mapped checkpoint into their shards in the target dtype.

The slow test builds a ~1B-parameter random Llama with transformers (float32 safetensors, 3.6 GB,
deleted afterwards) and loads it in a fresh process into bf16 shards on 8 simulated devices,
measuring the peak resident memory (VmHWM, reset just before loading): the growth stays well
below the float32 size (and near the bf16 size the placed weights need on CPU devices).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.models.loading import load_backbone, open_backbone
from ptjax.models.tensor_sources import open_tensor_source
from ptjax.training import sharding as shd

REPO = Path(__file__).resolve().parents[1]

BUILD = """
import sys, torch, transformers
config = transformers.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                                  num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
                                  tie_word_embeddings=False)
with torch.device("meta"):
    model = transformers.LlamaForCausalLM(config)
model.to_empty(device="cpu")  # no random init of 1B parameters: fill them cheaply instead
generator = torch.Generator().manual_seed(0)
with torch.no_grad():
    for parameter in model.parameters():
        parameter.uniform_(-0.05, 0.05, generator=generator)
model.save_pretrained(sys.argv[1], max_shard_size="1GB")
"""

MEASURE = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from configs import base
from ptjax.models.loading import open_backbone
from ptjax.models.tensor_sources import open_tensor_source
from ptjax.training import sharding as shd
from ptjax.training.config import logical_axis_rules

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) * 1024
    return fields

config = base.get_config()
config.mesh.data, config.mesh.fsdp = 1, 8
backbone = open_backbone(sys.argv[1], dtype=jnp.bfloat16, with_tokenizer=False)
mesh = shd.build_mesh(config)
shardings = shd.param_shardings(mesh, logical_axis_rules(config), backbone.shapes, backbone.logical_axes)
before = status()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := current RSS, so VmHWM below is the peak while loading
backbone.load_weights(shardings)
jax.block_until_ready(backbone.params)
after = status()

# The placed values are the checkpoint's, cast to bf16.
source = open_tensor_source(sys.argv[1])
layers = backbone.params["layers"]
down = np.asarray(jax.device_get(layers["down"]["kernel"]))[3].astype(np.float32)
expected_down = np.asarray(source.read("model.layers.3.mlp.down_proj.weight")).T
expected_down = expected_down.astype(jnp.bfloat16).astype(np.float32)
embed = np.asarray(jax.device_get(backbone.params["embed"]["embedding"])).astype(np.float32)
expected_embed = np.asarray(source.read("model.embed_tokens.weight")).astype(jnp.bfloat16).astype(np.float32)
print(json.dumps({
    "before": before, "after": after, "params": backbone.num_params(),
    "shards": len(layers["down"]["kernel"].addressable_shards),
    "down_equal": bool(np.array_equal(down, expected_down)),
    "embed_equal": bool(np.array_equal(embed, expected_embed)),
}))
"""


@pytest.fixture(scope="module")
def random_1b_checkpoint():
    folder = Path(tempfile.mkdtemp(prefix="ptjax-1b-"))
    try:
        subprocess.run([sys.executable, "-c", BUILD, str(folder)], check=True, capture_output=True, text=True,
                       timeout=600)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_loading_1b_into_bf16_shards_never_holds_a_float32_copy(random_1b_checkpoint):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(random_1b_checkpoint)], env=env, cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    float32_bytes, bf16_bytes = 4 * result["params"], 2 * result["params"]
    on_disk = sum(f.stat().st_size for f in random_1b_checkpoint.glob("*.safetensors"))
    peak_growth = result["after"]["VmHWM"] - result["before"]["VmRSS"]
    placed = result["after"]["VmRSS"] - result["before"]["VmRSS"]
    print(f"params {result['params']:,}; checkpoint {on_disk / 2**30:.2f} GiB (float32); bf16 "
          f"{bf16_bytes / 2**30:.2f} GiB; peak RSS growth {peak_growth / 2**30:.2f} GiB; after loading "
          f"{placed / 2**30:.2f} GiB")

    assert result["params"] > 0.9e9 and on_disk >= float32_bytes
    assert result["shards"] == 8 and result["down_equal"] and result["embed_equal"]
    # The weights end up on the (CPU) devices in bf16: about half the checkpoint.
    assert 0.9 * bf16_bytes < placed < 1.25 * bf16_bytes
    # No float32 copy of the model (not even of its file pages) on the way there.
    assert peak_growth < 0.75 * float32_bytes
    assert peak_growth - placed < 0.25 * bf16_bytes


def test_sharded_placement_equals_single_device_loading(tiny_model_dir):
    """Partially replicated shards (data 2 x fsdp 4) hold exactly the single-device values."""
    from configs import base
    from ptjax.training.config import logical_axis_rules

    folder = tiny_model_dir("llama")
    reference = load_backbone(folder, dtype=jnp.bfloat16, with_tokenizer=False)
    config = base.get_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    backbone = open_backbone(folder, dtype=jnp.bfloat16, with_tokenizer=False)
    mesh = shd.build_mesh(config)
    shardings = shd.param_shardings(mesh, logical_axis_rules(config), backbone.shapes, backbone.logical_axes)
    backbone.load_weights(shardings)
    sharded = [leaf for leaf in jax.tree.leaves(backbone.params) if not leaf.sharding.is_fully_replicated]
    assert sharded, "the mesh should split some parameter"
    for got, want in zip(jax.tree.leaves(backbone.params), jax.tree.leaves(reference.params)):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert backbone.fingerprint == reference.fingerprint


def test_safetensors_reads_are_views_of_the_mapped_file(tiny_model_dir):
    source = open_tensor_source(tiny_model_dir("llama"))
    name = min(source.names())
    tensor = source.read(name)
    assert isinstance(tensor, np.memmap) and not tensor.flags.writeable
    assert tuple(tensor.shape) == source.shape(name)
