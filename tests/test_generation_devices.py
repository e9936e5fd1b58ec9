"""Data parallel generation: a batch's rows split over 2 of the 8 simulated CPU devices (conftest)
write what one device writes, with mixed prompts, padding, beams and T5's decoder prefix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_generation
from test_generation import SOFT, prompts_for, random_prefix, random_soft, settings

from ptjax.errors import InputError
from ptjax.generation.bank import PromptBank
from ptjax.generation.generator import Generator

tiny = test_generation.tiny  # the module's tiny models, built once here too


def bank_for(backbone, family: str, kind: str) -> PromptBank:
    """Two prompts: soft only (the cached soft-prompt prefix path), or soft + deep prefix (T5: in
    its decoder), the second prefix one slot shorter."""
    soft = jnp.asarray(random_soft(backbone, prompts=2))
    if kind == "soft":
        return PromptBank(soft=soft)
    keys, values = random_prefix(backbone, prompts=2, decoder=family == "t5")
    mask = np.ones(keys.shape[:3], bool)
    mask[1, :, -1] = False
    fields = {"prefix_keys": jnp.asarray(keys), "prefix_values": jnp.asarray(values), "prefix_mask": jnp.asarray(mask)}
    if family == "t5":
        return PromptBank(soft=soft, **{f"decoder_{k}": v for k, v in fields.items()})
    return PromptBank(soft=soft, prefix_lengths=jnp.asarray(mask.any(axis=1).sum(-1), jnp.int32), **fields)


@pytest.mark.parametrize("family,strategy,kind", [
    ("llama", "beam", "deep"), ("llama", "greedy", "soft"), ("t5", "greedy", "deep")])
def test_two_devices_write_what_one_device_writes(tiny, family, strategy, kind):
    """Five inputs of several lengths, two prompts mixed, batch_size 3 (rounded up to 4 on two
    devices, padded with copies): each device decodes its own rows; every output (and beam score)
    equals the one-device generation."""
    backbone, torch_model = tiny(family)
    bank = bank_for(backbone, family, kind)
    texts = prompts_for(backbone) + prompts_for(backbone, seed=1)[:2]
    ids = [[0] * SOFT + t for t in texts]
    soft_index = [list(range(SOFT)) + [-1] * len(t) for t in texts]
    prompt_ids = [0, 1, 1, 0, 1]
    chosen = settings(strategy, torch_model)
    outputs = [Generator(backbone, bank, batch_size=3, length_multiple=8, devices=devices).generate_ids(
        ids, soft_index=soft_index, prompt_ids=prompt_ids, settings=chosen) for devices in (None, 2)]
    assert outputs[1].tokens == outputs[0].tokens
    if strategy == "beam":
        np.testing.assert_allclose(outputs[1].scores, outputs[0].scores, rtol=1e-6)
    assert len({tuple(t) for t in outputs[0].tokens}) > 1


def test_two_devices_sample_independently_and_check_the_count(tiny):
    """Copies of one input sampled hot: rows on different devices get their own draws (not the
    same key per device); asking for more devices than the process has is an input error."""
    backbone, torch_model = tiny("llama")
    generator = Generator(backbone, batch_size=4, length_multiple=8, devices=jax.local_devices()[:2])
    assert generator.mesh.size == 2
    copies = [prompts_for(backbone)[0]] * 4
    out = generator.generate_ids(copies, settings=settings("sample", torch_model, temperature=3.0), seed=3).tokens
    assert out[0] != out[2] and out[1] != out[3]  # local row 0 and 1 of each device
    with pytest.raises(InputError, match="devices"):
        Generator(backbone, devices=len(jax.local_devices()) + 1)
