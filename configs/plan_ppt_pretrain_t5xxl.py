"""Plan of configs/ppt_pretrain_t5xxl.py (PPT prompt pre-training on T5.1.1-XXL) on a machine
without its C4 corpus: the same config with the corpus read from the local FewGLUE unlabeled
MultiRC passages, which only supply the batch's fields (a plan pads to the config's lengths).

    python main.py --config configs/plan_ppt_pretrain_t5xxl.py:ppt_nsp --config.plan.devices=8 \
        --config.plan.device_memory_gib=32
"""

from ptjax.configs import ppt_pretrain_t5xxl


def get_config(argument: str = "ppt_nsp"):
    config = ppt_pretrain_t5xxl.get_config(argument)
    config.mode = "plan"
    options = config.task.options
    options.source = "jsonl"
    options.paths = ["superglue_unlabeled/MultiRC/unlabeled.jsonl"]
    options.field = "passage.text"
    options.num_examples = 200
    return config
