"""CoNLL-2003 P-tuning v2 started from the MPT-2 shared prompt (and its CoNLL-2003 head row):
the second stage of multi-task P-tuning v2. Point prompt.init_from at the MPT-2 run:

    python main.py --config configs/conll_mpt2.py --workdir runs/conll_mpt2
    python main.py --config configs/conll03_from_mpt2.py --workdir runs/conll03_from_mpt2 \
        --config.prompt.init_from=runs/conll_mpt2
"""

from ptjax.configs import conll_mpt2, conll_ner


def get_config():
    config = conll_ner.get("conll03", "ptuning_v2", prefix_length=conll_mpt2.PREFIX_LENGTH)
    config.prompt.init = "pretrained"
    config.prompt.init_from = "runs/conll_mpt2"
    return config
