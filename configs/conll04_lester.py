"""CoNLL04 NER with Lester prompt tuning (20 soft tokens before the sentence, frozen MiniLM);
settings in configs/conll_ner.py.

    python main.py --config configs/conll04_lester.py --workdir runs/conll04_lester
"""

from ptjax.configs import conll_ner


def get_config():
    return conll_ner.get("conll04", "lester")
