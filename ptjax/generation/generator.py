"""Generation from token ids on a frozen backbone with a bank of trained prompts.

    generator = Generator(backbone, bank)                 # bank: ptjax.generation.bank.PromptBank
    out = generator.generate_ids([[5, 9, 12], [7, 8]], prompt_ids=[0, 1],
                                 settings=DecodeSettings(max_new_tokens=20, stop_tokens=(2,)))
    out.tokens        # per example, its generated ids (through the stop token)

Examples are cut into batches of `batch_size` rows (the last one filled with copies of a real
row, so every batch has one shape), their prompts padded to a multiple of `length_multiple`
tokens (fewer shapes to compile). Causal LMs get left padding, T5 right padding (its relative
positions would otherwise move the encoder's deep prompt away from the text). One jitted
function runs prefill and the whole decoding loop.

Data parallel decoding (`devices=N` or a list of devices): the weights and the bank are
replicated, each batch is split by rows over the devices (shard_map: every device runs prefill
and the loop on its rows alone, no communication; beams of an example stay on its device): for
several accelerators. On CPU it did not pay (2 cores: XLA:CPU already runs one device's step on
both, and each device reads every weight; BENCHMARKS.md, "Generation"). A CPU has one device
unless JAX starts with more (XLA_FLAGS=--xla_force_host_platform_device_count=N, or
ptjax.planning.use_simulated_devices before JAX starts).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ptjax.errors import InputError
from ptjax.generation.backbones import Batch, decoder_for, decoding_params
from ptjax.generation.bank import PromptBank
from ptjax.generation.search import DecodeSettings, beam_search, decode, unpad


@dataclasses.dataclass
class Generated:
    """tokens: per example, its generated ids (through a stop token when one came).
    scores: per example, beam search's length-normalized log-probability (None otherwise)."""

    tokens: list[list[int]]
    scores: list[float] | None = None


class Generator:
    """backbone: a loaded ptjax Backbone (causal LM or T5); bank: its prompts (None: no prompt).
    per_layer_params: decode from a copy of the layer weights laid out one layer per array
    (ptjax.generation.backbones.decoding_params), with a KV cache laid out one array per layer too
    (ptjax.models.kv_cache, written in place); None: on CPU, where reading each layer out of the
    stacked arrays copies its weights and its cache at every step (SmolLM2, 32 tokens: about
    1.2x slower for the weights, 1.15x more for the cache).
    cache_soft_prefix: on a causal LM whose bank holds soft prompts only, a batch whose every
    example starts with its whole soft prompt (Lester) gets the prompt's keys/values from a cache
    computed once per bank entry (they depend on nothing else: causal attention, positions
    counted from each example's first token), so the prefill runs the texts only.
    weights_first: with per-layer weights, store every dense kernel transposed and multiply the
    weights first (ptjax.models.products.weights_first_einsum; LM head too); None: on CPU with
    float32 weights (measured there: BENCHMARKS.md, "Generation").
    devices: None (one device), a count (the first N local devices) or a list of devices to split
    each batch's rows over (batch_size is rounded up to a multiple of their number; the extra rows
    are copies of a real row and are dropped). Greedy and beam outputs do not depend on it;
    sampled draws do (each device draws from its own key), as they depend on batch_size."""

    def __init__(self, backbone, bank: PromptBank | None = None, *, batch_size: int = 8,
                 length_multiple: int = 16, per_layer_params: bool | None = None, cache_soft_prefix: bool = True,
                 weights_first: bool | None = None, devices: int | Sequence | None = None):
        if backbone.params is None:
            backbone.load_weights()
        self.backbone, self.bank = backbone, bank if bank is not None else PromptBank()
        if per_layer_params is None:
            per_layer_params = jax.default_backend() == "cpu"
        if weights_first is None:
            weights_first = jax.default_backend() == "cpu" and jnp.dtype(backbone.dtype) == jnp.float32
        weights_first = bool(weights_first and per_layer_params)
        self.decoder = decoder_for(backbone, per_layer_params, weights_first)
        self.params = decoding_params(backbone, weights_first) if per_layer_params else backbone.params
        self.batch_size, self.length_multiple = int(batch_size), int(length_multiple)
        self.left_padding = backbone.kind == "causal_lm"
        self.pad_id = _pad_id(backbone)
        self.cache_soft_prefix = (cache_soft_prefix and self.left_padding and self.bank.soft is not None
                                  and self.bank.prefix_keys is None)
        self._soft_prefix_bank = None
        self.mesh = batch_mesh(devices)
        if self.mesh is not None:
            self.batch_size = -(-self.batch_size // self.mesh.size) * self.mesh.size
            replicated = NamedSharding(self.mesh, P())
            self.params, self.bank = jax.device_put((self.params, self.bank), replicated)

    def generate_ids(self, input_ids: Sequence[Sequence[int]], *, soft_index: Sequence[Sequence[int]] | None = None,
                     prompt_ids: Sequence[int] | None = None, settings: DecodeSettings = DecodeSettings(),
                     seed: int = 0) -> Generated:
        """input_ids: per example its prompt ids (special tokens included, soft slots holding any
        id); soft_index: per example, -1 or the soft vector at each position (None: no soft
        tokens); prompt_ids: per example its bank entry (None: all 0)."""
        count = len(input_ids)
        if count == 0:
            return Generated([], [] if settings.strategy == "beam" else None)
        soft_index = soft_index if soft_index is not None else [[-1] * len(ids) for ids in input_ids]
        prompt_ids = np.zeros(count, np.int32) if prompt_ids is None else np.asarray(prompt_ids, np.int32)
        if len(soft_index) != count or len(prompt_ids) != count:
            raise InputError(f"{count} inputs but {len(soft_index)} soft_index rows and {len(prompt_ids)} prompt ids")
        if prompt_ids.size and not (0 <= prompt_ids.min() and prompt_ids.max() < self.bank.num_prompts):
            raise InputError(f"prompt ids must lie in [0, {self.bank.num_prompts}), got {sorted(set(prompt_ids))}")
        settings = dataclasses.replace(settings, pad_id=self.pad_id) if settings.pad_id != self.pad_id else settings
        tokens, scores = [], []
        for start in range(0, count, self.batch_size):
            rows = list(range(start, min(start + self.batch_size, count)))
            ids, soft, bank = [input_ids[i] for i in rows], [soft_index[i] for i in rows], self.bank
            lead = self.bank.soft.shape[1] if self.cache_soft_prefix else 0
            if lead and all(len(row) > lead and list(row[:lead]) == list(range(lead)) for row in soft):
                ids, soft, bank = [row[lead:] for row in ids], [row[lead:] for row in soft], self._soft_prefix()
            batch = self._batch(ids, soft, prompt_ids[rows])
            rng = jax.random.fold_in(jax.random.PRNGKey(seed), start)
            out_tokens, lengths, out_scores = jax.device_get(
                _generate(self.decoder, self.params, bank, batch, rng, settings=settings, mesh=self.mesh))
            tokens += unpad(out_tokens, lengths)[:len(rows)]
            scores += [float(s) for s in np.asarray(out_scores)[:len(rows)]]
        return Generated(tokens, scores if settings.strategy == "beam" else None)

    def _soft_prefix(self) -> PromptBank:
        """The bank with each soft prompt's keys/values as a deep prefix (positions shifted after
        it, as the prompt's own tokens would have numbered the text), computed once."""
        if self._soft_prefix_bank is None:
            prompts, length = self.bank.soft.shape[:2]
            batch = Batch(jnp.zeros((prompts, length), jnp.int32), jnp.ones((prompts, length), jnp.int32),
                          jnp.tile(jnp.arange(length, dtype=jnp.int32), (prompts, 1)), jnp.arange(prompts, dtype=jnp.int32))
            _, cache, _ = jax.jit(self.decoder.prefill, static_argnums=3)(self.params, self.bank, batch, 1)
            keys, values = (jnp.swapaxes(x[:, :, :length], 0, 1) for x in cache.stacked())
            self._soft_prefix_bank = dataclasses.replace(
                self.bank, prefix_keys=keys, prefix_values=values, prefix_mask=jnp.ones(keys.shape[:3], bool),
                prefix_lengths=jnp.full((prompts,), length, jnp.int32), shift_positions=True)
        return self._soft_prefix_bank

    def _batch(self, ids: list, soft: list, prompt_ids: np.ndarray) -> Batch:
        """Padded numpy rows (copies of row 0 fill the batch) -> a device Batch."""
        if any(len(row) == 0 for row in ids):
            raise InputError("an input has no tokens; generation continues a prompt of at least one token")
        longest = max(len(row) for row in ids)
        length = -(-longest // self.length_multiple) * self.length_multiple
        rows = self.batch_size
        input_ids = np.full((rows, length), self.pad_id, np.int32)
        mask = np.zeros((rows, length), np.int32)
        soft_index = np.full((rows, length), -1, np.int32)
        prompt = np.zeros((rows,), np.int32)
        for r in range(rows):
            i = r if r < len(ids) else 0
            n = len(ids[i])
            if len(soft[i]) != n:
                raise InputError(f"input {i}: {n} ids but {len(soft[i])} soft_index entries")
            span = slice(length - n, length) if self.left_padding else slice(0, n)
            input_ids[r, span], mask[r, span], soft_index[r, span] = ids[i], 1, soft[i]
            prompt[r] = prompt_ids[i]
        arrays = (input_ids, mask, soft_index, prompt)
        if self.mesh is not None:  # straight to each device's rows
            arrays = jax.device_put(arrays, NamedSharding(self.mesh, P(BATCH_AXIS)))
        return Batch(*(jnp.asarray(a) for a in arrays))


BATCH_AXIS = "batch"


def batch_mesh(devices: int | Sequence | None) -> Mesh | None:
    """A 1-D mesh over the devices that split a batch's rows (None: one device, nothing to split)."""
    if devices is None:
        return None
    if isinstance(devices, (int, np.integer)):
        available = jax.local_devices()
        if not 1 <= devices <= len(available):
            raise InputError(f"generation on {devices} devices, but this process has {len(available)} "
                             f"({available[0].platform}); on CPU, start JAX with "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={devices}")
        devices = available[:devices]
    devices = list(devices)
    return Mesh(np.array(devices, dtype=object), (BATCH_AXIS,)) if len(devices) > 1 else None


@functools.partial(jax.jit, static_argnames=("decoder", "settings", "mesh"))
def _generate(decoder, params, bank: PromptBank, batch: Batch, rng, *, settings: DecodeSettings,
              mesh: Mesh | None = None):
    """Prefill and the decoding loop, one jitted program. -> (tokens [batch, new], lengths, scores).
    mesh: split the rows over its devices, each decoding its own (params and bank replicated)."""
    if mesh is None:
        return _generate_rows(decoder, params, bank, batch, rng, settings)

    def rows_of_one_device(params, bank, batch, rng):
        rng = jax.random.fold_in(rng, jax.lax.axis_index(BATCH_AXIS))  # independent draws per device
        return _generate_rows(decoder, params, bank, batch, rng, settings)

    return jax.shard_map(rows_of_one_device, mesh=mesh, in_specs=(P(), P(), P(BATCH_AXIS), P()),
                         out_specs=P(BATCH_AXIS), check_vma=False)(params, bank, batch, rng)


def _generate_rows(decoder, params, bank: PromptBank, batch: Batch, rng, settings: DecodeSettings):
    rows = settings.rows_per_example
    if rows > 1:  # each example's beams start as copies of it
        batch = jax.tree.map(lambda x: jnp.repeat(x, rows, axis=0), batch)
    logits, cache, context = decoder.prefill(params, bank, batch, settings.max_new_tokens)
    step = decoder.step(params)
    if settings.strategy == "beam":
        return beam_search(step, cache, context, logits, settings, decoder.reorder)
    tokens, lengths = decode(step, cache, context, logits, settings, rng)
    return tokens, lengths, jnp.zeros(tokens.shape[:1], jnp.float32)


def _pad_id(backbone) -> int:
    tokenizer = getattr(backbone, "tokenizer", None)
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(backbone.config, "pad_token_id", None),
                  getattr(tokenizer, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def default_stop_tokens(backbone) -> tuple[int, ...]:
    """The tokenizer's end-of-sequence id, and the checkpoint's (generation) config's eos ids."""
    ids = set()
    tokenizer = getattr(backbone, "tokenizer", None)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    for source in (getattr(backbone, "hf_config", None), getattr(backbone, "generation_config", None)):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return tuple(sorted(ids))


def strip_padding(input_ids, attention_mask) -> list[list[int]]:
    """Padded rows [batch, length] (padding on either side) -> each row's real ids, for generate_ids."""
    return [[int(i) for i, real in zip(row, mask) if real]
            for row, mask in zip(np.asarray(input_ids), np.asarray(attention_mask))]
