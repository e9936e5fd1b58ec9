"""CoNLL-2003 NER with P-tuning v2 (deep prefixes at every layer, frozen MiniLM);
settings in configs/conll_ner.py.

    python main.py --config configs/conll03_ptuning_v2.py --workdir runs/conll03_ptuning_v2
"""

from ptjax.configs import conll_ner


def get_config():
    return conll_ner.get("conll03", "ptuning_v2")
