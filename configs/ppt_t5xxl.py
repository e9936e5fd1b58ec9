"""PPT on T5.1.1-XXL (11B, google/t5-v1_1-xxl): few-shot prompt tuning that starts from a
pre-trained prompt. The product's headline command:

    python main.py --config configs/ppt_t5xxl.py --workdir runs/ppt_t5xxl/boolq

trains BoolQ (FewGLUE: 32 training examples; every evaluation scores dev32 and the test set,
SuperGLUE val, and results.json reports both at the step that is best on dev32) from the
sentence-pair prompt of configs/ppt_pretrain_t5xxl.py (runs/ppt_pretrain_t5xxl/ppt_nsp/export).
The five seeds and the variants below, as one table of mean ± std:

    python main.py --config configs/ppt_t5xxl.py:rte --workdir runs/ppt_t5xxl/rte --config.mode=sweep \
        --config.sweep.variants="('ppt: prompt.init=pretrained', 'vanilla_pt: prompt.init=random')" \
        --config.sweep.seeds="(10, 20, 30, 40, 50)"

Config argument "TASK[,CHIPS]" (e.g. configs/ppt_t5xxl.py:rte,64): TASK one of BoolQ, RTE, CB
(sentence pairs), COPA, RACE (multiple choice), SST-2, SST-5, Yahoo Answers (single text); CHIPS a
pod slice size for the mesh (see configs/ppt_pretrain_t5xxl.py). The paper's variants:
    PPT          (default)  prompt.init=pretrained  prompt.pattern=format
    Hybrid PPT              prompt.init=pretrained  prompt.pattern=hybrid
    Unified PPT             prompt.init=pretrained  prompt.pattern=unified   (from ppt_unified_mc)
    Vanilla PT              prompt.init=random      prompt.pattern=format
    Hybrid PT               prompt.init=random      prompt.pattern=hybrid

BoolQ, RTE and CB read FewGLUE's 32 training examples and dev32 here. PPT drew its own
label-balanced 32 / 32 from each original training set; that sampler is the `<task>_fewshot`
view, from the full train.jsonl under DATA_DIR/superglue_full or from the hub:

    python main.py --config configs/ppt_t5xxl.py:boolq --workdir runs/ppt_t5xxl/boolq_ppt_sample \
        --config.task.name=boolq_fewshot --config.task.source=aps/super_glue:boolq

(task.options.shots 32-256 for the sample-efficiency study; sample_seed picks the sample).

The paper's protocol (appendix C.2): 100 soft tokens, batch 16, 50 epochs, evaluation every 6
steps, learning rate chosen on dev among 5e-3, 1e-2, 2e-2, 5e-2 (default 1e-2 here; sweep the
others with mode "sweep"), seeds 10, 20, 30, 40, 50 (mean and standard deviation). bf16 frozen
weights, Adafactor, full rematerialization of each layer, layers scanned. Without the weights
(and no internet) the run ends with one line naming the backbone it could not find.
"""

from ptjax.configs import base
from ptjax.configs.ppt_pretrain_t5xxl import pod_mesh, t5xxl_backbone

PRETRAINED = str(base.REPO_ROOT / "runs" / "ppt_pretrain_t5xxl")
# task -> (registered task, train split, dev split, test split, task options)
TASKS = {
    "boolq": ("boolq", "train", "dev32", "val", {}),
    "rte": ("rte", "train", "dev32", "val", {}),
    "cb": ("cb", "train", "dev32", "val", {}),
    "copa": ("copa", "train", "dev32", "val", {}),
    "race_m": ("race_m_fewshot", "train", "dev32", "test", {}),
    "race_h": ("race_h_fewshot", "train", "dev32", "test", {}),
    "sst2": ("sst2_fewshot", "train", "dev32", "dev", {}),
    "sst5": ("sst5_fewshot", "train", "dev32", "dev", {}),
    "yahoo_answers": ("yahoo_answers_fewshot", "train", "dev32", "test", {"per_label": 8}),
}
# Test sets scored at every evaluation are cut to this many examples (Yahoo Answers has 60,000).
MAX_TEST_EXAMPLES = {"yahoo_answers": 5000}


def fewshot_task(config, task: str) -> str:
    """Set the task, its splits (dev32 to pick the best step, then the test set) and options;
    returns the test split."""
    if task not in TASKS:
        raise ValueError(f"unknown PPT task {task!r}; known: {', '.join(TASKS)}")
    name, train, dev, test, options = TASKS[task]
    config.task.name = name
    config.task.train_split = train
    config.task.eval_splits = (dev, test)  # the first picks the best step
    config.task.max_eval_examples = MAX_TEST_EXAMPLES.get(task, 0)
    for key, value in options.items():
        config.task.options[key] = value
    return test


def get_config(argument: str = "boolq"):
    task, _, chips = argument.partition(",")
    config = base.get_config()
    t5xxl_backbone(config)
    config.seed = 10
    fewshot_task(config, task)
    config.task.max_length = 512
    config.task.length_buckets = (128, 256, 512)

    config.method.name = "lester"
    config.prompt.length = 100
    config.prompt.init = "pretrained"
    config.prompt.init_from = PRETRAINED
    config.prompt.pattern = "format"

    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 1e-2
    config.train.batch_size = 16
    config.train.eval_batch_size = 32
    config.train.num_epochs = 50
    config.train.eval_every = 6
    config.checkpoint.every_steps = 0
    pod_mesh(config, int(chips or 0), config.train.batch_size)
    return config
