"""LAMA manual prompt + fine-tuning ("MP+FT" in the P-tuning paper's Table 2): each relation's
manual template, the whole model trains. Settings: configs/lama_paper.py.

    python main.py --config configs/lama_manual_fine_tune.py --workdir runs/lama_mp_ft
"""

from ptjax.configs.lama_paper import paper


def get_config():
    config = paper("manual")
    config.mode = "train"
    config.method.train_backbone = True
    return config
