"""Plan: PPT-style prompt tuning of T5.1.1-XXL (11B) on BoolQ; only for `--config.mode=plan`.

    python main.py --config configs/plan_t5xxl.py --config.plan.devices=8 --config.mesh.fsdp=8 \
        --config.mesh.data=1 --config.plan.device_memory_gib=32

100 soft tokens, global batch 16 and inputs up to 512 tokens; frozen weights in bf16. The
architecture comes from ptjax.planning.ARCHITECTURES (nothing is downloaded or read).
"""

from ptjax.configs import base


def get_config():
    config = base.get_config()
    config.mode = "plan"
    config.model.name = "google/t5-v1_1-xxl"
    config.model.dtype = "bfloat16"
    config.model.remat_policy = "full"
    config.task.name = "boolq"
    config.task.max_length = 512
    config.method.name = "lester"
    config.prompt.length = 100
    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 0.3
    config.train.batch_size = 16
    return config
