"""SuperGLUE / SST settings of the papers, as config builders the other superglue_* and sst_*
configs start from. No get_config of its own meaning beyond the default (RTE, P-tuning, full data):

    python main.py --config configs/superglue_paper.py --workdir runs/rte_ptuning
    python main.py --config configs/superglue_paper.py:cb,ptuning_v2,fewshot --workdir runs/cb_pt2_few
    python main.py --config configs/superglue_paper.py:record,manual,fewshot --config.mode=train \
        --config.method.train_backbone=True --workdir runs/record_pet   # ReCoRD, PET-style

Protocols (`protocol=`):
  full     fully supervised ("GPT Understands, Too", sec. 4.2): train on the whole training set,
           evaluate on val after every epoch, keep the best epoch, stop early; 20 epochs for the
           small sets (COPA, WSC, CB, RTE), 10 for the larger ones (WiC, BoolQ, MultiRC).
           Full training sets here: RTE and WSC (data/superglue_full); every other SuperGLUE task
           has only FewGLUE's 32 examples, so "full" on them trains on those.
  fewshot  FewGLUE: train on train (32 examples), pick the best checkpoint on dev32, report val
           (the P-tuning paper's D_dev32 protocol); 3500 steps (P-tuning extends PET's 250),
           PET's batch size 16 and learning rate 1e-5, evaluation every 100 steps. Several seeds
           and mean ± std: configs/superglue_fewshot.py (mode sweep).

Methods get their paper's optimizer settings (`method=`):
  fine_tune, manual (+ train_backbone), ptuning   P-tuning: AdamW, linear decay, lr 1e-5 (grid
           {1e-5, 2e-5, 3e-5}), batch 16 (grid {16, 32}), grid in configs/superglue_grid.py.
  ptuning_v2   P-tuning v2's run scripts for RoBERTa-large (PTUNING_V2 below: learning rate,
           prefix length, batch, epochs per task; dropout 0.1, 128 tokens, linear decay without
           warm-up, evaluation every epoch, best epoch reported). As their code: dropout 0.1 on
           the prefix keys and values (prompt.deep.dropout, the backbone's hidden dropout) and
           the classifier on the pooler output, then dropout (head.pooling "auto" picks the
           pooler; RoBERTa, BERT and MiniLM have one, a backbone without one uses [CLS] / the
           last token instead).
  lester   Lester et al.: prompt length 20 here (the paper's ablations use 1-150; 100 at most
           scales), learning rate 0.3 with Adafactor in the paper; with AdamW a prompt-only
           run needs ~1e-2 (LESTER_LR), which configs/superglue_grid.py tunes.
Deviations (on purpose): weight decay 0.0 everywhere (Hugging Face Trainer's default, which
both papers' code uses), global gradient-norm clipping at 1.0 (ptjax's default, also the
Trainer's), sequences cut at 128 tokens for every method (P-tuning v2's max_seq_length; PET used
256, too long for CPU runs).
"""

from __future__ import annotations

from pathlib import Path

from ptjax.configs import base

DATA = base.default_data_dir()
# Tasks whose full SuperGLUE training set is in data/superglue_full (the rest: FewGLUE only).
FULL_TRAIN = ("rte", "wsc")
SMALL = ("copa", "wsc", "cb", "rte")  # 20 epochs in P-tuning's full-data runs; the others 10
# P-tuning v2 run scripts (RoBERTa-large): learning rate, prefix length, batch size, epochs.
# CB is not among the published scripts; it takes BoolQ's setting (a 3-way NLI task of 250
# training examples: short prefix, same learning rate).
PTUNING_V2 = {
    "rte": (5e-3, 128, 32, 100),
    "boolq": (7e-3, 8, 32, 100),
    "cb": (7e-3, 8, 32, 100),
    "copa": (9e-3, 8, 16, 120),
    "wic": (1e-2, 8, 32, 50),
    "wsc": (1e-2, 8, 16, 10),
}
# BERT-large scripts differ (e.g. RTE: lr 1e-2, prefix 20, 60 epochs); kept for reference.
PTUNING_V2_BERT = {"rte": (1e-2, 20, 32, 60)}
PTUNING_LR, PTUNING_BATCH = 1e-5, 16
LESTER_LR = 1e-2
SST_TASKS = ("sst2", "sst2_trees", "sst5", "sst5_text")


def paper(task: str = "rte", method: str = "ptuning", protocol: str = "full"):
    """The config of `task` x `method` x `protocol` with the papers' settings (module docstring)."""
    if protocol not in ("full", "fewshot"):
        raise ValueError(f"protocol {protocol!r}: choose 'full' or 'fewshot'")
    config = base.get_config()
    config.task.name = task
    config.method.name = method
    config.task.max_length = 128
    config.task.length_buckets = (64, 128)
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 0.0
    config.schedule.name = "linear"
    config.train.eval_batch_size = 32
    config.checkpoint.keep = 1
    config.checkpoint.every_steps = 0
    config.train.best_metric = "score"  # CB: mean of accuracy and macro-F1, MultiRC: of EM and F1a
    config.train.log_every = 10

    if task in SST_TASKS:
        config.task.eval_splits = ("dev",)
    elif protocol == "full":
        config.data_dir = f"{DATA}/superglue_full" if task in FULL_TRAIN else DATA
        config.task.eval_splits = ("val",)
    else:
        config.data_dir = DATA
        config.task.eval_splits = ("dev32", "val")  # the first picks the checkpoint
        if task == "record" and not any((Path(DATA) / sub / "ReCoRD" / "val.jsonl").is_file() for sub in ("", "superglue")):
            config.task.eval_splits = ("dev32",)  # the shared data has ReCoRD's train and dev32 only

    if method == "ptuning_v2":
        lr, length, batch, epochs = PTUNING_V2.get(task, PTUNING_V2["boolq"])
        config.optimizer.learning_rate = lr
        config.prompt.deep.length = length
        config.prompt.deep.dropout = 0.1  # the reference's hidden_dropout_prob on the prefix
        config.train.batch_size = batch
        config.train.num_epochs = epochs
        config.train.early_stopping_patience = 0  # the script trains every epoch, keeps the best
    else:
        config.optimizer.learning_rate = LESTER_LR if method == "lester" else PTUNING_LR
        config.train.batch_size = PTUNING_BATCH
        config.train.num_epochs = 20 if task in SMALL else 10
        config.train.early_stopping_patience = 5
    config.prompt.length = 20  # Lester's prompt; P-tuning's templates place their own slots
    config.prompt.encoder = "lstm" if method == "ptuning" else "none"
    if method == "manual":
        config.mode = "eval"  # zero-shot; set method.train_backbone and mode=train for PET-style

    if protocol == "fewshot":
        config.train.num_steps = 3500
        config.train.eval_every = 100
        config.train.early_stopping_patience = 0
        config.train.batch_size = min(config.train.batch_size, 16)
    return config


def get_config(arg: str = "rte,ptuning,full"):
    return paper(*[part.strip() for part in arg.split(",")])
