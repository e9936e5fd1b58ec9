"""ptjax.models.attention's kernel (hand-written backward pass) against autodiff of the plain
formula: outputs and gradients for padding, causal, prefix, grouped-query, bias and dropout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.models.attention import (
    dot_product_attention,
    make_attention_mask,
    prepend_prefix_mask,
    resolve_implementation,
)
from ptjax.models.layers import dropout_mask


def plain_attention(query, key, value, mask, bias=None, keep=None):
    """softmax(q k^T / sqrt(d) + bias) (dropped) v with repeated kv heads; autodiff gives its
    gradients. keep: float multipliers [b, heads, q, k] or None."""
    heads, kv_heads = query.shape[2], key.shape[2]
    key = jnp.repeat(key, heads // kv_heads, axis=2)
    value = jnp.repeat(value, heads // kv_heads, axis=2)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = scores * query.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias
    probs = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    if keep is not None:
        probs = probs * keep
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)


def _inputs(batch=3, q_len=7, heads=4, kv_heads=4, head_dim=8, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape).astype(np.float32), dtype)

    q = normal(batch, q_len, heads, head_dim)
    k, v = normal(batch, q_len, kv_heads, head_dim), normal(batch, q_len, kv_heads, head_dim)
    d_out = normal(batch, q_len, heads, head_dim)
    padding = np.arange(q_len)[None, :] < np.array([q_len, q_len - 2, 3])[:batch, None]
    return q, k, v, d_out, padding


def _value_and_grads(fn, args, d_out, argnums):
    """fn(*args) and the gradients of <fn(*args), d_out> for args[argnums], computed under jit
    (eager, every op would compile on its own: seconds apiece on a small CPU)."""
    def run(args, d_out):
        out, pullback = jax.vjp(fn, *args)
        grads = pullback(d_out)
        return out, [grads[i] for i in argnums]

    return jax.jit(run)(args, d_out)


def _assert_close(ours, theirs, atol):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=atol, rtol=atol)


# Grouped-query causal and multi-query bidirectional by default; the other layouts with --slow.
@pytest.mark.parametrize("causal, kv_heads", [
    (True, 2), (False, 1), *(pytest.param(causal, kv_heads, marks=pytest.mark.slow)
                             for causal, kv_heads in ((False, 4), (True, 4), (False, 2), (True, 1)))])
def test_kernel_matches_autodiff_of_the_formula(causal, kv_heads):
    q, k, v, d_out, padding = _inputs(kv_heads=kv_heads)
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=causal)
    ours = _value_and_grads(lambda q, k, v: dot_product_attention(q, k, v, mask), (q, k, v), d_out, (0, 1, 2))
    plain = _value_and_grads(lambda q, k, v: plain_attention(q, k, v, mask), (q, k, v), d_out, (0, 1, 2))
    _assert_close(ours, plain, 2e-5)
    jax_xla = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    _assert_close(ours[0], jax_xla, 2e-5)
    _assert_close(dot_product_attention(q, k, v, mask, implementation="xla"), jax_xla, 0.0)


def test_prefix_keys_and_their_gradients():
    q, k, v, d_out, padding = _inputs(kv_heads=2)
    prefix_k = jax.random.normal(jax.random.PRNGKey(5), (1, 3, 2, 8))
    prefix_v = jax.random.normal(jax.random.PRNGKey(6), (1, 3, 2, 8))
    prefix_mask = jnp.array([[True, False, True]])
    mask = prepend_prefix_mask(make_attention_mask(padding, query_length=7, key_length=7, causal=True), prefix_mask)

    def ours(q, k, v, pk, pv):
        return dot_product_attention(q, k, v, mask, prefix_key=pk, prefix_value=pv)

    def plain(q, k, v, pk, pv):
        full_k = jnp.concatenate([jnp.broadcast_to(pk, (3, 3, 2, 8)), k], axis=1)
        full_v = jnp.concatenate([jnp.broadcast_to(pv, (3, 3, 2, 8)), v], axis=1)
        return plain_attention(q, full_k, full_v, mask)

    args, every = (q, k, v, prefix_k, prefix_v), (0, 1, 2, 3, 4)
    _assert_close(_value_and_grads(ours, args, d_out, every), _value_and_grads(plain, args, d_out, every), 2e-5)


def test_only_the_prefix_gradient_is_computed_when_only_the_prefix_is_differentiated():
    """P-tuning v2's first layer: queries, keys and values from frozen embeddings, a trainable
    prefix. The backward pass works on the prefix's score columns alone (no product over every
    key) and gives the formula's prefix gradients, with dropout and a frozen bias too."""
    q, k, v, d_out, padding = _inputs(kv_heads=2)
    prefix_k = jax.random.normal(jax.random.PRNGKey(5), (1, 3, 2, 8))
    prefix_v = jax.random.normal(jax.random.PRNGKey(6), (1, 3, 2, 8))
    mask = prepend_prefix_mask(make_attention_mask(padding, query_length=7, key_length=7, causal=False),
                               jnp.array([[True, False, True]]))
    bias = jax.random.normal(jax.random.PRNGKey(7), (1, 4, 7, 10))
    rng, rate = jax.random.PRNGKey(11), 0.3
    kept = dropout_mask(rng, (3, 2, 2 * 7, 10), 1.0 - rate).reshape(3, 4, 7, 10)
    keep = jnp.where(kept, 1.0 / (1.0 - rate), 0.0)

    def ours(pk, pv):
        return dot_product_attention(q, k, v, mask, prefix_key=pk, prefix_value=pv, bias=bias, dropout_rate=rate,
                                     dropout_rng=rng)

    def plain(pk, pv):
        full_k = jnp.concatenate([jnp.broadcast_to(pk, (3, 3, 2, 8)), k], axis=1)
        full_v = jnp.concatenate([jnp.broadcast_to(pv, (3, 3, 2, 8)), v], axis=1)
        return plain_attention(q, full_k, full_v, mask, bias=bias, keep=keep)

    args = (prefix_k, prefix_v)
    _assert_close(_value_and_grads(ours, args, d_out, (0, 1)), _value_and_grads(plain, args, d_out, (0, 1)), 2e-5)
    hlo = jax.jit(lambda a, d: jax.vjp(ours, *a)[1](d)).lower(args, d_out).compile().as_text()
    products = [line for line in hlo.split("\n") if " dot(" in line]
    assert products and all("lhs_batch_dims" in line for line in products)
    # Forward: scores [6, 14, 10] and output [6, 14, 8]; backward: over the 3 prefix keys only.
    widths = sorted(int(line.split("]")[0].split(",")[-1]) for line in products)
    assert widths.count(10) == 1 and 3 in widths, widths


@pytest.mark.slow
def test_bias_gradient_is_summed_over_its_broadcast_axes():
    q, k, v, d_out, padding = _inputs()
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=False)
    bias = jax.random.normal(jax.random.PRNGKey(7), (1, 4, 7, 7))  # T5: shared by the batch
    ours = _value_and_grads(lambda q, b: dot_product_attention(q, k, v, mask, bias=b), (q, bias), d_out, (0, 1))
    plain = _value_and_grads(lambda q, b: plain_attention(q, k, v, mask, bias=b), (q, bias), d_out, (0, 1))
    assert ours[1][1].shape == bias.shape
    _assert_close(ours, plain, 2e-5)


@pytest.mark.parametrize("kv_heads", [pytest.param(4, marks=pytest.mark.slow), 2])
def test_dropout_matches_the_formula_with_the_same_mask(kv_heads):
    q, k, v, d_out, padding = _inputs(kv_heads=kv_heads)
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=False)
    rng, rate = jax.random.PRNGKey(11), 0.3
    group = 4 // kv_heads
    # The kernel draws its mask in grouped order [b, kv, group * q, k]; heads are kv * group + g.
    kept = dropout_mask(rng, (3, kv_heads, group * 7, 7), 1.0 - rate).reshape(3, 4, 7, 7)
    keep = jnp.where(kept, 1.0 / (1.0 - rate), 0.0)
    args = (q, k, v)
    ours = _value_and_grads(lambda q, k, v: dot_product_attention(q, k, v, mask, dropout_rate=rate, dropout_rng=rng),
                            args, d_out, (0, 1, 2))
    plain = _value_and_grads(lambda q, k, v: plain_attention(q, k, v, mask, keep=keep), args, d_out, (0, 1, 2))
    _assert_close(ours, plain, 2e-5)
    without = dot_product_attention(q, k, v, mask)
    assert not np.allclose(np.asarray(ours[0]), np.asarray(without), atol=1e-3)
    again = dot_product_attention(q, k, v, mask, dropout_rate=rate, dropout_rng=rng, implementation="xla")
    # Dropout always runs this module's kernel: the same values, up to the order a GPU's separately
    # compiled fusions sum in (1 ulp there; bit-equal on CPU). Without the mask they differ by 1e-3.
    _assert_close(again, ours[0], 1e-6)


def test_auto_is_cudnn_on_a_gpu_for_what_cudnn_takes_and_this_kernel_elsewhere():
    bf16, f16, f32, even = jnp.bfloat16, jnp.float16, jnp.float32, (1044, 1044)
    gpu = functools.partial(resolve_implementation, backend="gpu")
    assert [gpu(dtype, 64, even) for dtype in (bf16, f16, f32)] == ["cudnn", "cudnn", ""]
    assert [gpu(bf16, width, even) for width in (8, 128, 60, 160)] == ["cudnn"] * 2 + [""] * 2
    assert [gpu(bf16, 64, lengths) for lengths in ((9, 12), (10, 13))] == ["", ""]  # cuDNN refuses odd lengths
    assert gpu(bf16, 64, even, special=True) == ""  # T5's bias, a KV cache
    assert [resolve_implementation(bf16, 64, even, backend=name) for name in ("cpu", "tpu")] == ["", ""]


def test_auto_runs_this_kernel_on_cpu():
    q, k, v, d_out, padding = _inputs(kv_heads=2)
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=True)
    results = [_value_and_grads(functools.partial(dot_product_attention, mask=mask, implementation=impl),
                                (q, k, v), d_out, (0, 1, 2)) for impl in ("auto", None)]
    _assert_close(results[0], results[1], 0.0 if jax.default_backend() == "cpu" else 1e-6)


@pytest.mark.slow
def test_bfloat16_inputs_stay_close_to_float32():
    q, k, v, d_out, padding = _inputs(dtype=jnp.bfloat16, kv_heads=2)
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=True)
    ours = _value_and_grads(lambda q, k, v: dot_product_attention(q, k, v, mask), (q, k, v), d_out, (0, 1, 2))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(ours))
    as_f32 = [x.astype(jnp.float32) for x in (q, k, v, d_out)]
    reference = _value_and_grads(lambda q, k, v: plain_attention(q, k, v, mask), tuple(as_f32[:3]), as_f32[3],
                                 (0, 1, 2))
    _assert_close(ours, reference, 5e-2)


def test_kernel_under_jit_remat_and_scan():
    q, k, v, d_out, padding = _inputs(kv_heads=2)
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=False)

    def two_layers(q):
        body = jax.checkpoint(lambda c, _: (dot_product_attention(c, k, v, mask), None),
                              policy=jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims)
        return jax.lax.scan(body, q, None, length=2)[0]

    def plain_two(q):
        return plain_attention(plain_attention(q, k, v, mask), k, v, mask)

    ours = jax.jit(lambda q: _value_and_grads(two_layers, (q,), d_out, (0,)))(q)
    _assert_close(ours, _value_and_grads(plain_two, (q,), d_out, (0,)), 5e-5)


# --------------------------------------------------------------------------------------------
# cuDNN's path: a mask with structure reaches jax.nn as is_causal / key_value_seq_lengths. There
# is no GPU here, so "cudnn" calls are answered by jax.nn's XLA kernel with the same arguments,
# and a callback records which branch of the run-time choice ran.


@pytest.fixture
def cudnn_on_xla(monkeypatch):
    """Routes implementation="cudnn" to "xla"; returns the list of branches taken ("structured"
    with (is_causal, lengths), or "dense"), appended when a branch runs, not when it is traced."""
    taken, original = [], jax.nn.dot_product_attention

    def fake(query, key, value, bias=None, mask=None, *, implementation=None, **kwargs):
        assert implementation == "cudnn"
        lengths = kwargs.get("key_value_seq_lengths")
        if lengths is None:
            assert mask is not None and "is_causal" not in kwargs
            jax.debug.callback(lambda: taken.append("dense"))
        else:
            assert mask is None and lengths.dtype == jnp.int32
            causal = kwargs["is_causal"]
            jax.debug.callback(lambda n: taken.append(("structured", causal, tuple(np.asarray(n)))), lengths)
        return original(query, key, value, bias=bias, mask=mask, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    return taken


def _through_cudnn_and_kernel(q, k, v, d_out, mask, causal, **extra):
    def attend(implementation):
        return lambda q, k, v: dot_product_attention(q, k, v, mask, implementation=implementation, causal=causal,
                                                     **extra)
    def run(implementation):
        return jax.jit(lambda *args: _value_and_grads(attend(implementation), args, d_out, (0, 1, 2)))(q, k, v)
    cudnn = run("cudnn")
    jax.effects_barrier()
    return cudnn, run(None)


@pytest.mark.parametrize("causal", [False, True])
def test_right_padding_reaches_cudnn_as_lengths(cudnn_on_xla, causal):
    q, k, v, d_out, padding = _inputs(kv_heads=2)
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=causal)
    cudnn, kernel = _through_cudnn_and_kernel(q, k, v, d_out, mask, causal)
    _assert_close(cudnn, kernel, 2e-5)  # every row, padded queries included
    assert set(cudnn_on_xla) == {("structured", causal, (7, 5, 3))}


@pytest.mark.slow
def test_a_mask_without_that_structure_goes_dense(cudnn_on_xla):
    q, k, v, d_out, _ = _inputs()
    holes = jnp.array([[True] * 7, [True, False] * 3 + [True], [True, True, True] + [False] * 4])
    empty = jnp.array([[True] * 7, [True] * 5 + [False] * 2, [False] * 7])  # a padding example
    for key_mask in (holes, empty):
        mask = make_attention_mask(key_mask, query_length=7, key_length=7, causal=False)
        cudnn, kernel = _through_cudnn_and_kernel(q, k, v, d_out, mask, False)
        rows = np.asarray(key_mask.any(-1))  # a row with no key at all has no defined attention
        _assert_close([x[rows] for x in jax.tree.leaves(cudnn)], [x[rows] for x in jax.tree.leaves(kernel)], 2e-5)
    assert set(cudnn_on_xla) == {"dense"}


@pytest.mark.slow
def test_deep_prompt_keys_are_lengths_when_real_and_dense_when_switched_off(cudnn_on_xla):
    q, k, v, d_out, padding = _inputs(kv_heads=2)
    prefix_k = jax.random.normal(jax.random.PRNGKey(5), (1, 3, 2, 8))
    prefix_v = jax.random.normal(jax.random.PRNGKey(6), (1, 3, 2, 8))
    text = make_attention_mask(padding, query_length=7, key_length=7, causal=False)
    for slots in ([[True, True, True]], [[False, False, False]]):  # a layer the prompt skips
        mask = prepend_prefix_mask(text, jnp.array(slots))
        cudnn, kernel = _through_cudnn_and_kernel(q, k, v, d_out, mask, False, prefix_key=prefix_k,
                                                  prefix_value=prefix_v)
        _assert_close(cudnn, kernel, 2e-5)
    assert cudnn_on_xla == [("structured", False, (10, 8, 6)), "dense"]
    # Causal keys after a prefix are aligned at the end, which jax.nn's causal flag cannot say.
    cudnn_on_xla.clear()
    mask = prepend_prefix_mask(make_attention_mask(padding, query_length=7, key_length=7, causal=True),
                               jnp.ones((1, 3), bool))
    cudnn, kernel = _through_cudnn_and_kernel(q, k, v, d_out, mask, True, prefix_key=prefix_k, prefix_value=prefix_v)
    _assert_close(cudnn, kernel, 2e-5)
    assert set(cudnn_on_xla) == {"dense"}


@pytest.mark.slow
def test_bias_passes_through_the_structured_call(cudnn_on_xla):
    q, k, v, d_out, padding = _inputs()
    mask = make_attention_mask(padding, query_length=7, key_length=7, causal=True)
    bias = jax.random.normal(jax.random.PRNGKey(7), (1, 4, 7, 7))
    cudnn, kernel = _through_cudnn_and_kernel(q, k, v, d_out, mask, True, bias=bias)
    _assert_close(cudnn, kernel, 2e-5)
    assert set(cudnn_on_xla) == {("structured", True, (7, 5, 3))}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "t5"])
def test_models_give_cudnn_their_mask_structure(cudnn_on_xla, tiny_model_dir, family):
    from ptjax.models.loading import load_backbone

    path = tiny_model_dir(family)
    ids = jnp.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 1, 1, 1]], jnp.int32)
    mask = jnp.array([[1] * 6, [1, 1, 1, 0, 0, 0]], jnp.int32)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if family == "t5":
        inputs.update(decoder_input_ids=ids[:, :4], decoder_attention_mask=mask[:, :4])
    outputs = []
    for impl in ("", "cudnn"):
        backbone = load_backbone(path, attention_impl=impl, with_tokenizer=False)
        outputs.append(jax.jit(backbone.module.apply)({"params": backbone.params}, **inputs))
    jax.effects_barrier()
    real = np.asarray(mask if family != "t5" else mask[:, :4], bool)
    for ours, theirs in zip(jax.tree.leaves(outputs[0]), jax.tree.leaves(outputs[1])):
        if ours.ndim >= 2 and ours.shape[:2] == real.shape:
            ours, theirs = ours[real], theirs[real]
        np.testing.assert_allclose(np.asarray(theirs), np.asarray(ours), atol=1e-4, rtol=1e-4)
    lengths, causal = (6, 3), family in ("gpt2", "llama")
    expected = {("structured", causal, lengths)}
    if family == "t5":  # encoder, decoder self-attention (causal), cross-attention over the encoder
        expected = {("structured", False, lengths), ("structured", True, (4, 3)), ("structured", False, lengths)}
    assert set(cudnn_on_xla) == expected
