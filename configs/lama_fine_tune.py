"""LAMA fine-tuning ("FT" in the P-tuning paper's Table 2): the input is the subject and the
slot only ("{sub} [MASK]"), the whole model trains. Settings: configs/lama_paper.py.

    python main.py --config configs/lama_fine_tune.py --workdir runs/lama_fine_tune
"""

from ptjax.configs.lama_paper import paper


def get_config():
    return paper("fine_tune")
