"""PPT end to end on a tiny random T5.1.1 (2 layers, width 32): the T5 path of the T5-XXL configs
(bf16 aside) — the label word written by the decoder after the sentinel — in a few CPU minutes.

    python -c "import sys; sys.path.insert(0, 'tests'); import tiny_models; tiny_models.save_tiny('t5v1_1', 'runs/tiny_t5')"
    python -m ptjax.tasks.local_corpus --data_dir ../shared/data --out runs/ppt_corpus
    python main.py --config configs/ppt_tiny_t5.py:ppt_nsp --workdir runs/ppt_tiny_t5/pretrain/ppt_nsp
    python main.py --config configs/ppt_tiny_t5.py:rte --workdir runs/ppt_tiny_t5/rte    # PPT from ppt_nsp

Config argument: a pre-training task (ppt_nsp, ppt_nss, ppt_unified_mc, ppt_sentiment) or a
downstream task of configs/ppt_smollm2.py (sst2, boolq, rte, cb), with that file's settings but
8 soft tokens and short runs. The tiny tokenizer splits most label words into several pieces, so
they are scored as candidates (multiple choice over the words) instead of single verbalizer tokens.
"""

from ptjax.configs import base, ppt_pretrain_smollm2, ppt_smollm2

MODEL = str(base.REPO_ROOT / "runs" / "tiny_t5" / "t5v1_1")
PRETRAINED = str(base.REPO_ROOT / "runs" / "ppt_tiny_t5" / "pretrain")


def get_config(task: str = "ppt_nsp"):
    if task.startswith("ppt_"):
        config = ppt_pretrain_smollm2.get_config(task)
        config.task.options.num_examples = 256
        config.task.options.cache = "cache_tiny"  # other options than the SmolLM2 runs: own cache
        config.task.max_eval_examples = 64
        config.train.num_steps = 40
        config.train.eval_every = 20
    else:
        config = ppt_smollm2.get_config(task)
        config.prompt.init_from = PRETRAINED
    config.model.name = MODEL
    config.prompt.length = 8
    config.optimizer.learning_rate = 0.3
    config.checkpoint.every_steps = 0
    return config
