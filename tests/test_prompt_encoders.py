"""Prompt encoders (shapes, init modes, LSTM parity with PyTorch, materialization) and insertion."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.errors import InputError
from ptjax.prompts import (
    PromptEncoder,
    embedding_std,
    insert_soft_prompts,
    label_init,
    materialize_encoder,
    random_init,
    text_init,
    vectors_init,
    vocab_init,
)

VOCAB, EMBED = 50, 16
EMBEDDING = np.random.default_rng(0).normal(scale=0.05, size=(VOCAB, EMBED)).astype(np.float32)


def init_params(encoder, seed=0):
    """Initialized under jit, as the engine does: eager, every initializer op compiles on its own."""
    return jax.device_get(nn.unbox(jax.jit(encoder.init)(jax.random.key(seed))["params"]))


def run(encoder, params):
    """The encoder's prompt vectors, computed under jit."""
    return jax.jit(encoder.apply)({"params": params})


@pytest.fixture(scope="module")
def lstm_encoder():
    """A bank of two P-tuning encoders. Its parameters are random values of the initialized
    shapes (compiling the real initializers' random kernels costs seconds on a CPU)."""
    encoder = PromptEncoder(num_tokens=6, embed_dim=EMBED, reparam="lstm", num_prompts=2)
    shapes = nn.unbox(jax.eval_shape(encoder.init, jax.random.key(0))["params"])
    rng = np.random.default_rng(3)
    params = jax.tree_util.tree_map(lambda s: rng.uniform(-0.5, 0.5, s.shape).astype(np.float32), shapes)
    return encoder, params


def is_vocab_row(vector):
    return bool(np.any(np.all(np.isclose(EMBEDDING, np.asarray(vector)), axis=-1)))


@pytest.mark.parametrize("reparam, num_prompts", [("none", 0), ("none", 3), ("mlp", 0), ("mlp", 3)])
def test_output_shapes_and_logical_axes(reparam, num_prompts):
    encoder = PromptEncoder(num_tokens=9, embed_dim=EMBED, reparam=reparam, num_prompts=num_prompts)
    variables = jax.jit(encoder.init)(jax.random.key(0))
    out = jax.jit(encoder.apply)(variables)
    assert out.shape == ((num_prompts,) if num_prompts else ()) + (9, EMBED) and out.dtype == jnp.float32
    specs = nn.get_partition_spec(variables)["params"]
    assert tuple(specs["embedding"]) == (("prompt_bank",) if num_prompts else ()) + ("prompt", "embed")
    if num_prompts:  # the prompts of a bank are independent
        assert not np.allclose(out[0], out[1])


def test_lstm_encoder_matches_pytorch_lstm_and_mlp(lstm_encoder):
    """P-tuning's encoder: BiLSTM(2 layers, hidden/2 per direction) -> Linear, ReLU, Linear."""
    torch = pytest.importorskip("torch")
    encoder, bank_params = lstm_encoder
    assert run(encoder, bank_params).shape == (2, 6, EMBED)
    # The second prompt of the bank, as a single-prompt encoder's parameters.
    params = jax.tree_util.tree_map(lambda x: x, bank_params)
    params["embedding"] = bank_params["embedding"][1]
    encoder = encoder.clone(num_prompts=0)
    half = EMBED // 2
    lstm = torch.nn.LSTM(EMBED, half, num_layers=2, bidirectional=True, batch_first=True)
    mlp = torch.nn.Sequential(torch.nn.Linear(EMBED, EMBED), torch.nn.ReLU(), torch.nn.Linear(EMBED, EMBED))
    ours = params["lstm"]
    for layer in range(2):
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            p = ours[f"layer_{layer}_{direction}"]
            w_ih = getattr(lstm, f"weight_ih_l{layer}{suffix}")
            w_hh = getattr(lstm, f"weight_hh_l{layer}{suffix}")
            in_dim = w_ih.shape[1]
            with torch.no_grad():
                w_ih.copy_(torch.tensor(np.asarray(p["input"]["kernel"]).reshape(in_dim, 4 * half).T))
                w_hh.copy_(torch.tensor(np.asarray(p["recurrent_kernel"]).reshape(half, 4 * half).T))
                bias = torch.tensor(np.asarray(p["input"]["bias"]).reshape(-1))
                getattr(lstm, f"bias_ih_l{layer}{suffix}").copy_(bias)
                getattr(lstm, f"bias_hh_l{layer}{suffix}").zero_()
    with torch.no_grad():
        for index, name in ((0, "hidden"), (2, "output")):
            mlp[index].weight.copy_(torch.tensor(np.asarray(params["mlp"][name]["kernel"]).T))
            mlp[index].bias.copy_(torch.tensor(np.asarray(params["mlp"][name]["bias"])))
        table = torch.tensor(np.asarray(params["embedding"]))[None]
        expected = mlp(lstm(table)[0])[0].numpy()
    np.testing.assert_allclose(run(encoder, params), expected, atol=1e-5)


def test_mlp_variant_is_linear_relu_linear():
    encoder = PromptEncoder(num_tokens=4, embed_dim=EMBED, reparam="mlp", hidden_dim=7)
    params = init_params(encoder)
    h, o = params["mlp"]["hidden"], params["mlp"]["output"]
    expected = np.maximum(params["embedding"] @ h["kernel"] + h["bias"], 0) @ o["kernel"] + o["bias"]
    np.testing.assert_allclose(run(encoder, params), expected, atol=1e-6)
    assert h["kernel"].shape == (EMBED, 7)
    tanh = PromptEncoder(num_tokens=4, embed_dim=EMBED, reparam="mlp", hidden_dim=7, activation="tanh")
    expected = np.tanh(params["embedding"] @ h["kernel"] + h["bias"]) @ o["kernel"] + o["bias"]
    np.testing.assert_allclose(run(tanh, params), expected, atol=1e-6)


def test_random_init_scale():
    std = embedding_std(EMBEDDING)
    assert abs(std - 0.05) < 0.005
    table = init_params(PromptEncoder(200, EMBED, table_init=random_init(std)))["embedding"]
    assert abs(float(np.std(table)) - std) < 0.005


def test_vocab_init_returns_vocabulary_rows():
    table = init_params(PromptEncoder(20, EMBED, table_init=vocab_init(EMBEDDING)))["embedding"]
    assert all(is_vocab_row(row) for row in table)
    assert len({tuple(np.asarray(r).round(6)) for r in table}) == 20  # sampled without replacement
    restricted = init_params(PromptEncoder(8, EMBED, table_init=vocab_init(EMBEDDING, candidate_ids=[3, 4])))
    for row in restricted["embedding"]:
        assert np.allclose(row, EMBEDDING[3]) or np.allclose(row, EMBEDDING[4])
    bank = init_params(PromptEncoder(5, EMBED, num_prompts=2, table_init=vocab_init(EMBEDDING)))["embedding"]
    assert bank.shape == (2, 5, EMBED) and all(is_vocab_row(r) for r in bank.reshape(-1, EMBED))


def test_text_label_and_vectors_init():
    table = init_params(PromptEncoder(5, EMBED, table_init=text_init(EMBEDDING, [7, 8])))["embedding"]
    np.testing.assert_allclose(table, EMBEDDING[[7, 8, 7, 8, 7]])
    cropped = init_params(PromptEncoder(2, EMBED, table_init=text_init(EMBEDDING, [1, 2, 3])))["embedding"]
    np.testing.assert_allclose(cropped, EMBEDDING[[1, 2]])
    labels = init_params(PromptEncoder(4, EMBED, table_init=label_init(EMBEDDING, [5, [6, 9]])))["embedding"]
    np.testing.assert_allclose(labels[0], EMBEDDING[5], atol=1e-7)
    np.testing.assert_allclose(labels[1], (EMBEDDING[6] + EMBEDDING[9]) / 2, atol=1e-7)
    assert is_vocab_row(labels[2]) and is_vocab_row(labels[3])
    pretrained = np.arange(3 * EMBED, dtype=np.float32).reshape(3, EMBED)
    table = init_params(PromptEncoder(4, EMBED, table_init=vectors_init(pretrained)))["embedding"]
    np.testing.assert_allclose(table, pretrained[[0, 1, 2, 0]])
    with pytest.raises(InputError, match="embedding width"):
        PromptEncoder(3, EMBED + 1, table_init=vocab_init(EMBEDDING)).init(jax.random.key(0))


def test_bad_options_raise():
    with pytest.raises(InputError, match="unknown prompt reparameterization"):
        PromptEncoder(3, EMBED, reparam="gru").init(jax.random.key(0))
    with pytest.raises(InputError, match="at least one token"):
        PromptEncoder(0, EMBED).init(jax.random.key(0))


def test_materialize_gives_the_same_vectors_without_the_encoder(lstm_encoder):
    encoder, params = lstm_encoder
    plain, plain_params = materialize_encoder(encoder, params)
    assert plain.reparam == "none" and list(plain_params) == ["embedding"]
    assert plain_params["embedding"].shape == (2, 6, EMBED)
    expected = run(encoder, params)
    np.testing.assert_allclose(run(plain, plain_params), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Insertion.


def reference_insert(embeds, soft_index, vectors, prompt_id=None):
    out = np.array(embeds)
    for b in range(out.shape[0]):
        for position in range(out.shape[1]):
            k = soft_index[b, position]
            if k >= 0:
                out[b, position] = vectors[k] if vectors.ndim == 2 else vectors[prompt_id[b], k]
    return out


SOFT_INDEX = np.array([[-1, 0, 1, -1, 2, -1], [0, 1, 2, -1, -1, -1], [-1, -1, -1, -1, 0, 1]], np.int32)


def test_insertion_matches_a_loop_and_jits():
    rng = np.random.default_rng(1)
    embeds = rng.normal(size=(3, 6, EMBED)).astype(np.float32)
    vectors = rng.normal(size=(3, EMBED)).astype(np.float32)
    out = jax.jit(insert_soft_prompts)(embeds, SOFT_INDEX, vectors)
    np.testing.assert_array_equal(out, reference_insert(embeds, SOFT_INDEX, vectors))
    bf16 = insert_soft_prompts(jnp.asarray(embeds, jnp.bfloat16), SOFT_INDEX, vectors)
    assert bf16.dtype == jnp.bfloat16


def test_insertion_per_example_prompts():
    rng = np.random.default_rng(2)
    embeds = rng.normal(size=(3, 6, EMBED)).astype(np.float32)
    bank = rng.normal(size=(4, 3, EMBED)).astype(np.float32)
    prompt_id = np.array([2, 0, 3], np.int32)
    out = jax.jit(insert_soft_prompts)(embeds, SOFT_INDEX, bank, prompt_id)
    np.testing.assert_array_equal(out, reference_insert(embeds, SOFT_INDEX, bank, prompt_id))
    with pytest.raises(ValueError, match="prompt_id"):
        insert_soft_prompts(embeds, SOFT_INDEX, bank)


def test_insertion_gradient_flows_to_vectors_only_at_slots(lstm_encoder):
    embeds = jnp.ones((3, 6, EMBED))
    vectors = jnp.zeros((3, EMBED))
    grad_vectors, grad_embeds = jax.jit(jax.grad(
        lambda v, e: jnp.sum(insert_soft_prompts(e, SOFT_INDEX, v)), argnums=(0, 1)
    ))(vectors, embeds)
    uses = np.array([(SOFT_INDEX == k).sum() for k in range(3)], np.float32)  # 3, 2, 1 uses of k = 0, 1, 2
    np.testing.assert_array_equal(grad_vectors, np.repeat(uses[:, None], EMBED, axis=1))
    np.testing.assert_array_equal(grad_embeds[..., 0], (SOFT_INDEX < 0).astype(np.float32))
    # End to end: every parameter of a bank of LSTM encoders gets gradients through insertion.
    encoder, params = lstm_encoder

    def loss(p):
        vectors = run(encoder, p)
        return jnp.sum(insert_soft_prompts(embeds, SOFT_INDEX, vectors, jnp.array([0, 1, 1])) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
