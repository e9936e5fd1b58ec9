"""LM adaptation of T5 (PPT §4's "LM Adaption" baseline; Lester et al.'s LM-adapted T5): the whole
backbone continues training with T5's prefix-LM objective on unlabeled text, is saved to
DIR/backbone, and prompt tuning then starts from it (ptjax/training/lm_adaptation.py).

    python main.py --config configs/lm_adaptation_t5.py --workdir runs/lm_adapted_t5xxl
    python main.py --config configs/ppt_t5xxl.py:boolq --workdir runs/lm_adaption_pt/boolq \\
        --config.model.name=runs/lm_adapted_t5xxl/backbone --config.prompt.init=random --config.prompt.init_from=

Config argument "t5xxl[,CHIPS]" (default): google/t5-v1_1-xxl, 10,000 steps as in PPT, windows of
512 tokens, Adafactor at 1e-3 (T5's fine-tuning rate; PPT does not give its LM-adaptation
hyper-parameters), the weights trained in float32 with bf16 products, layers rematerialized, the
mesh of configs/ppt_pretrain_t5xxl.py over CHIPS devices. "tiny": the tiny random T5.1.1 of
configs/ppt_tiny_t5.py for a CPU check in a minute:

    python -c "import sys; sys.path.insert(0, 'tests'); import tiny_models; tiny_models.save_tiny('t5v1_1', 'runs/tiny_t5')"
    python main.py --config configs/lm_adaptation_t5.py:tiny --workdir runs/lm_adapted_tiny_t5
    python main.py --config configs/ppt_tiny_t5.py:rte --workdir runs/lm_adaption_tiny/rte \\
        --config.model.name=runs/lm_adapted_tiny_t5/backbone --config.prompt.init=random --config.prompt.init_from=

The corpus defaults to the local pre-training corpus built from data_dir (ptjax/tasks/local_corpus.py);
--config.lm_adaptation.corpus=FILE.txt|FILE.jsonl names another (C4 text for the paper's setting).
"""

from ptjax.configs import base
from ptjax.configs.ppt_pretrain_t5xxl import pod_mesh, t5xxl_backbone
from ptjax.configs.ppt_tiny_t5 import MODEL as TINY_T5


def get_config(argument: str = "t5xxl"):
    backbone, _, chips = argument.partition(",")
    config = base.get_config()
    config.mode = "lm_adapt"
    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.clip_norm = 1.0
    config.schedule.name = "constant"
    config.train.log_every = 100
    if backbone == "t5xxl":
        t5xxl_backbone(config)
        config.model.dtype = "float32"  # trained weights stay float32; products in bf16
        config.train.dropout = False  # T5.1.1 was pre-trained without dropout
        config.lm_adaptation.sequence_length = 512
        config.train.num_steps = 10_000
        config.train.batch_size = 32
        pod_mesh(config, int(chips or 0), config.train.batch_size)
    elif backbone == "tiny":
        config.model.name = TINY_T5
        config.lm_adaptation.sequence_length = 64
        config.train.num_steps = 200
        config.train.batch_size = 8
        config.train.log_every = 20
        config.optimizer.name = "adam"
    else:
        raise ValueError(f"configs/lm_adaptation_t5.py: argument {argument!r}: use 't5xxl[,CHIPS]' or 'tiny'")
    return config
