"""Plan: Lester prompt tuning of a 13B Llama (Llama-2-13B shapes) on BoolQ; for `--config.mode=plan`.

    python main.py --config configs/plan_llama13b.py --config.plan.devices=8 --config.mesh.fsdp=8 \
        --config.mesh.data=1 --config.plan.device_memory_gib=32

100 soft tokens, global batch 16 and inputs up to 512 tokens, frozen weights in bf16, the same
shapes as configs/plan_t5xxl.py. The architecture comes from ptjax.planning.ARCHITECTURES (nothing is
downloaded or read); point model.name at a local Llama checkpoint folder to train it.
"""

from ptjax.configs import base


def get_config():
    config = base.get_config()
    config.mode = "plan"
    config.model.name = "meta-llama/Llama-2-13b-hf"
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
