"""PPT prompt pre-training on T5.1.1-XXL (11B, google/t5-v1_1-xxl): a 100-token soft prompt per
format, trained on unlabeled web text with the frozen model, exported for few-shot transfer
(configs/ppt_t5xxl.py).

    python main.py --config configs/ppt_pretrain_t5xxl.py:ppt_nsp --workdir runs/ppt_pretrain_t5xxl/ppt_nsp
    # formats: ppt_nsp, ppt_nss, ppt_unified_mc, and ppt_sentiment with a classifier:
    #   --config.task.options.classifier=mypackage.sentiment:classify   (sentences -> [n, 5] probabilities)
    # a pod slice of N chips (mesh below), all hosts running the same command:
    python main.py --distributed --config configs/ppt_pretrain_t5xxl.py:ppt_nsp,64 --workdir gs://...

Config argument "TASK[,CHIPS]". Mesh: data 1 x fsdp CHIPS x tensor 1 (the batch of 256 splits over
up to 256 chips; the weights are sharded by FSDP); without CHIPS fsdp takes every device (-1), which
fits one host or a plan. The paper's T5 details: bf16 frozen weights, 100 soft tokens of width 4096
(410K parameters), T5's decoder writes the label word after the sentinel. Corpus: C4 from
TensorFlow Datasets (c4/en, prepared in tfds_data_dir), streamed and sharded across hosts; the paper
used 10 GB of OpenWebText (source="hf", dataset="openwebtext" works the same).

The prompt pre-training schedule is not given in the paper text we follow; these defaults are ours:
Adafactor with an absolute step size of 0.3 and no decay (Lester et al.'s prompt-tuning recipe on
T5), global batch 256 as 4 accumulated microbatches of 64, 4,000 steps over 500,000 examples
(2 epochs), best prompt on 2,000 held-out examples every 500 steps. Lengths: inputs up to 512
tokens (unified multiple choice reaches ~400 with 16 options), bucketed at 128/256/512.
"""

from ptjax.configs import base

TFDS_C4 = {"source": "tfds", "dataset": "c4/en", "field": "text", "dataset_split": "train"}


def pod_mesh(config, chips: int, global_batch: int) -> None:
    """data 1 x fsdp x tensor over `chips`: FSDP as wide as the batch allows, tensor parallelism
    for the rest (T5-XXL: 64 heads and d_ff 10240 split 16 ways); chips 0: fsdp over all devices."""
    mesh = config.mesh
    mesh.data = 1
    if not chips:
        mesh.fsdp, mesh.tensor = -1, 1
        return
    fsdp = 1
    while fsdp * 2 <= chips and chips % (fsdp * 2) == 0 and global_batch % (fsdp * 2) == 0:
        fsdp *= 2
    mesh.fsdp, mesh.tensor = fsdp, chips // fsdp


def t5xxl_backbone(config) -> None:
    config.model.name = "google/t5-v1_1-xxl"
    config.model.dtype = "bfloat16"
    config.model.compute_dtype = "bfloat16"
    config.model.scan_layers = True
    config.model.remat_policy = "full"


def get_config(argument: str = "ppt_nsp"):
    task, _, chips = argument.partition(",")
    config = base.get_config()
    t5xxl_backbone(config)
    config.seed = 0

    config.task.name = task
    config.task.max_length = 512
    config.task.length_buckets = (128, 256, 512)
    config.task.eval_splits = ("dev",)
    config.task.max_eval_examples = 2000
    options = config.task.options
    for key, value in TFDS_C4.items():
        options[key] = value
    options.num_examples = 500_000
    options.dev_every = 50
    if task == "ppt_sentiment":
        options.classifier = ""  # required: name one on the command line
    else:
        options.max_words = 64

    config.method.name = "lester"
    config.prompt.length = 100
    config.prompt.pattern = "format"

    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 0.3
    config.optimizer.grad_accum_steps = 4
    config.train.batch_size = 256
    config.train.eval_batch_size = 64
    config.train.num_steps = 4000
    config.train.eval_every = 500
    config.train.log_every = 50
    config.checkpoint.every_steps = 500
    pod_mesh(config, int(chips or 0), config.train.batch_size // config.optimizer.grad_accum_steps)
    return config
