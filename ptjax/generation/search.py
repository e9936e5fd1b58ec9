"""The decoding loops: greedy / sampled decoding and beam search over a fixed-shape KV cache.

Both loops are `jax.lax.while_loop`s around one model step, so a generation compiles once per
(batch, prompt length, settings) and never re-traces per token. The model step is a function

    step(cache, context, tokens [rows], t) -> (logits [rows, vocab] float32, cache)

that feeds token t of every row (rows: examples, or examples x beams) and returns the logits of
the next position (ptjax.generation.backbones builds it for causal LMs and T5). Rows are
independent: a row's output never depends on the other rows of the batch, which is what makes
batching (and padding) leave every example's text unchanged.

Beam search follows transformers' vectorized beam search (the default early_stopping=False
heuristic, length_penalty, 2 x beams candidates per step so that beams ending in a stop token do
not starve the search), so its results can be compared with `generate(num_beams=...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError

Array = jax.Array
_NEG = -1.0e9  # what transformers adds to rule a beam candidate out


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How to pick tokens. Hashable: a jit static argument.

    max_new_tokens: tokens generated at most per example (stop tokens included).
    strategy: "greedy", "sample" or "beam".
    temperature, top_k (0: off), top_p (1.0: off): sampling filters, applied in that order.
    num_beams, length_penalty, early_stopping (False, True or "never"): beam search, as in
      transformers (scores are summed log-probabilities / generated length ** length_penalty).
    stop_tokens: ids that end an example (included in its output); pad_id fills what follows.
    """

    max_new_tokens: int = 32
    strategy: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 4
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    stop_tokens: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self):
        if self.strategy not in ("greedy", "sample", "beam"):
            raise InputError(f"generation strategy {self.strategy!r}: choose greedy, sample or beam")
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.strategy == "sample" and not (self.temperature > 0 and self.top_k >= 0 and 0 < self.top_p <= 1):
            raise InputError(f"sampling needs temperature > 0, top_k >= 0 and 0 < top_p <= 1; got "
                             f"{self.temperature}, {self.top_k}, {self.top_p}")
        if self.strategy == "beam" and self.num_beams < 1:
            raise InputError(f"beam search needs num_beams >= 1, got {self.num_beams}")
        if self.early_stopping not in (False, True, "never"):
            raise InputError(f"early_stopping must be False, True or 'never', got {self.early_stopping!r}")

    @property
    def rows_per_example(self) -> int:
        return self.num_beams if self.strategy == "beam" else 1


def filter_logits(logits: Array, settings: DecodeSettings) -> Array:
    """float32 [rows, vocab] -> the same with tokens outside top-k / top-p set to -inf, after
    dividing by the temperature (transformers' order of the three warpers)."""
    logits = logits.astype(jnp.float32) / settings.temperature
    if 0 < settings.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, settings.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if settings.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        # A token stays while the probability mass before it is below top_p (the first always stays).
        before = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1) - jax.nn.softmax(sorted_logits, axis=-1)
        drop_sorted = before >= settings.top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return logits


def choose_tokens(logits: Array, settings: DecodeSettings, rng: Array) -> Array:
    """int32 [rows]: argmax (greedy) or a draw from the filtered distribution (sample)."""
    if settings.strategy == "greedy":
        return first_argmax(logits)
    return jax.random.categorical(rng, filter_logits(logits, settings), axis=-1).astype(jnp.int32)


def first_argmax(logits: Array) -> Array:
    """numpy's argmax over the last axis (the first maximum; the first NaN if any) -> int32, on every
    backend (XLA:GPU's jnp.argmax can return a later NaN). A max, then the smallest index holding
    it: two vectorized reductions, where XLA:CPU's (value, index) reduction took 1 ms of a 50 ms
    SmolLM2 decoding step over its 49,152-word vocabulary (0.26 ms this way)."""
    best = jnp.max(logits, axis=-1, keepdims=True)
    index = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.min(jnp.where((logits == best) | jnp.isnan(logits), index, logits.shape[-1]), axis=-1)


def _is_stop(tokens: Array, settings: DecodeSettings) -> Array:
    if not settings.stop_tokens:
        return jnp.zeros(tokens.shape, bool)
    return jnp.isin(tokens, jnp.asarray(settings.stop_tokens, jnp.int32))


Step = Callable[..., tuple[Array, object]]


def decode(step: Step, cache, context, first_logits: Array, settings: DecodeSettings, rng: Array
           ) -> tuple[Array, Array]:
    """Greedy or sampled decoding. first_logits: [rows, vocab], the prompt's next-token logits.
    Returns (tokens int32 [rows, max_new_tokens], pad_id after a stop token; lengths int32 [rows])."""
    rows = first_logits.shape[0]
    tokens = jnp.full((rows, settings.max_new_tokens), settings.pad_id, jnp.int32)

    def choose(t, logits, tokens, finished, rng):
        rng, key = jax.random.split(rng)
        chosen = jnp.where(finished, settings.pad_id, choose_tokens(logits, settings, key))
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, chosen[:, None], t, axis=1)
        return chosen, tokens, finished | _is_stop(chosen, settings), rng

    def cond(state):
        t, _, _, _, finished, _ = state
        return (t < settings.max_new_tokens) & ~jnp.all(finished)

    def body(state):  # a step for the token chosen last, then the next choice: no step after the last token
        t, previous, cache, tokens, finished, rng = state
        logits, cache = step(cache, context, previous, t - 1)
        chosen, tokens, finished, rng = choose(t, logits, tokens, finished, rng)
        return t + 1, chosen, cache, tokens, finished, rng

    first, tokens, finished, rng = choose(0, first_logits.astype(jnp.float32), tokens, jnp.zeros((rows,), bool), rng)
    state = (jnp.ones((), jnp.int32), first, cache, tokens, finished, rng)
    _, _, _, tokens, finished, _ = jax.lax.while_loop(cond, body, state)
    return tokens, _lengths(tokens, settings)


def _lengths(tokens: Array, settings: DecodeSettings) -> Array:
    """Generated length of each row: through its first stop token, else max_new_tokens."""
    stops = _is_stop(tokens, settings)
    first = jnp.argmax(stops, axis=-1)
    return jnp.where(jnp.any(stops, axis=-1), first + 1, tokens.shape[-1]).astype(jnp.int32)


def _gather_beams(x: Array, index: Array) -> Array:
    """x [batch, candidates, ...], index [batch, k] -> [batch, k, ...]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(step: Step, cache, context, first_logits: Array, settings: DecodeSettings,
                reorder: Callable) -> tuple[Array, Array, Array]:
    """Beam search. first_logits: [batch * beams, vocab] (each example's prompt repeated per beam).
    reorder(cache, context, rows int32 [batch * beams]) -> (cache, context) with those rows.
    Returns (tokens int32 [batch, max_new_tokens] of each example's best hypothesis, lengths
    [batch], scores float32 [batch]: its length-normalized log-probability)."""
    beams, new = settings.num_beams, settings.max_new_tokens
    batch = first_logits.shape[0] // beams
    keep = max(2, 1 + len(settings.stop_tokens)) * beams
    top_beams = jnp.arange(keep) < beams  # candidates that may finish: the best `beams`

    running = jnp.full((batch, beams, new), settings.pad_id, jnp.int32)
    running_scores = jnp.where(jnp.arange(beams) == 0, 0.0, _NEG)[None].repeat(batch, 0).astype(jnp.float32)
    done = jnp.full((batch, beams, new), settings.pad_id, jnp.int32)
    done_scores = jnp.full((batch, beams), _NEG, jnp.float32)
    done_flags = jnp.zeros((batch, beams), bool)
    improvable = jnp.ones((batch, 1), bool)

    def cond(state):
        t, done_flags, improvable, all_stopped = state[0], state[6][2], state[7], state[8]
        open_beams = ~(jnp.all(done_flags) & (settings.early_stopping is True))
        return (t < new) & jnp.any(improvable) & ~all_stopped & open_beams

    def select(t, logits, running, running_scores, finished_beams, improvable):
        """Token t of every beam from the logits after token t - 1 -> (running, running_scores,
        finished (done, done_scores, done_flags), improvable, all_stopped, parent rows)."""
        done, done_scores, done_flags = finished_beams
        vocab = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, beams, vocab)
        total = (log_probs + running_scores[:, :, None]).reshape(batch, beams * vocab)
        cand_scores, cand_index = jax.lax.top_k(total, keep)
        cand_beam, cand_token = cand_index // vocab, (cand_index % vocab).astype(jnp.int32)
        cand_seqs = _gather_beams(running, cand_beam)
        cand_seqs = jax.lax.dynamic_update_slice_in_dim(cand_seqs, cand_token[:, :, None], t, axis=2)
        hits = _is_stop(cand_token, settings) | (t + 1 >= new)  # a stop token or the length limit

        # The best `beams` candidates that go on.
        going = cand_scores + hits.astype(jnp.float32) * _NEG
        next_index = jax.lax.top_k(going, beams)[1]
        running = _gather_beams(cand_seqs, next_index)
        running_scores = _gather_beams(going, next_index)
        parents = _gather_beams(cand_beam, next_index)  # [batch, beams]

        # Finished hypotheses: the best `beams` of the old ones and the candidates that just ended.
        generated = (t + 1).astype(jnp.float32)
        finished = cand_scores / generated ** settings.length_penalty
        full = jnp.all(done_flags, axis=-1, keepdims=True) & (settings.early_stopping is True)
        finished = finished + full * _NEG + (~improvable) * _NEG + (~(hits & top_beams[None])) * _NEG
        merged_scores = jnp.concatenate([done_scores, finished], axis=1)
        best = jax.lax.top_k(merged_scores, beams)[1]
        done = _gather_beams(jnp.concatenate([done, cand_seqs], axis=1), best)
        done_scores = _gather_beams(merged_scores, best)
        done_flags = _gather_beams(jnp.concatenate([done_flags, hits & top_beams[None]], axis=1), best)

        # Can a running beam still beat the worst finished one?
        if settings.early_stopping == "never" and settings.length_penalty > 0.0:
            hypothetical = float(new)
        else:
            hypothetical = generated
        best_running = running_scores[:, :1] / hypothetical ** settings.length_penalty
        worst_done = jnp.where(done_flags, jnp.min(done_scores, axis=1, keepdims=True), _NEG)
        improvable = improvable & jnp.any(best_running > worst_done, axis=-1, keepdims=True)
        all_stopped = jnp.all(hits)  # every candidate of every example ended: nothing can go on
        rows = (parents + jnp.arange(batch)[:, None] * beams).reshape(-1)
        return running, running_scores, (done, done_scores, done_flags), improvable, all_stopped, rows

    def body(state):  # a step for the tokens chosen last, then the next choice: no step after the last token
        t, rows, cache, context, running, running_scores, finished_beams, improvable, _ = state
        cache, context = reorder(cache, context, rows)
        logits, cache = step(cache, context, running[:, :, t - 1].reshape(-1), t - 1)
        running, running_scores, finished_beams, improvable, all_stopped, rows = select(
            t, logits, running, running_scores, finished_beams, improvable)
        return t + 1, rows, cache, context, running, running_scores, finished_beams, improvable, all_stopped

    running, running_scores, finished_beams, improvable, all_stopped, rows = select(
        jnp.zeros((), jnp.int32), first_logits.astype(jnp.float32), running, running_scores,
        (done, done_scores, done_flags), improvable)
    state = (jnp.ones((), jnp.int32), rows, cache, context, running, running_scores, finished_beams, improvable,
             all_stopped)
    state = jax.lax.while_loop(cond, body, state)
    done, done_scores, _ = state[6]
    tokens = done[:, 0]
    return tokens, _lengths(tokens, settings), done_scores[:, 0]


def unpad(tokens: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Per row, its generated ids (through the stop token)."""
    return [list(map(int, row[:n])) for row, n in zip(np.asarray(tokens), np.asarray(lengths))]
