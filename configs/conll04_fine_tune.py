"""CoNLL04 NER with fine-tuning (every MiniLM weight trains);
settings in configs/conll_ner.py.

    python main.py --config configs/conll04_fine_tune.py --workdir runs/conll04_fine_tune
"""

from ptjax.configs import conll_ner


def get_config():
    return conll_ner.get("conll04", "fine_tune")
