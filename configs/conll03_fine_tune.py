"""CoNLL-2003 NER with fine-tuning (every MiniLM weight trains);
settings in configs/conll_ner.py.

    python main.py --config configs/conll03_fine_tune.py --workdir runs/conll03_fine_tune
"""

from ptjax.configs import conll_ner


def get_config():
    return conll_ner.get("conll03", "fine_tune")
