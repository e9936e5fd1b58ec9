"""MPT-2: P-tuning v2 on CoNLL-2003 and CoNLL04 together, one shared deep prompt, one
token-classification head per data set, batches mixed across the two training sets; evaluated
per data set ("conll03/entity_f1", "conll04/entity_f1"; "score" is their mean).

    python main.py --config configs/conll_mpt2.py --workdir runs/conll_mpt2

Then per-task tuning from the shared prompt (configs/conll03_from_mpt2.py, conll04_from_mpt2.py).
The prefix length (11, CoNLL-2003's) is shared by those runs: a warm start needs the same shape.
"""

from ptjax.configs import conll_ner

PREFIX_LENGTH = 11


def get_config():
    config = conll_ner.get("conll03", "ptuning_v2", prefix_length=PREFIX_LENGTH)
    config.task.name = "multi"
    config.task.options.tasks = ("conll03", "conll04")
    return config
