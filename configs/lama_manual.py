"""LAMA with each relation's manual prompt of relations.jsonl, zero-shot (mode eval): the "MP"
column of the P-tuning paper's Table 2. Settings: configs/lama_paper.py.

    python main.py --config configs/lama_manual.py --workdir runs/lama_manual
"""

from ptjax.configs.lama_paper import paper


def get_config():
    return paper("manual")
