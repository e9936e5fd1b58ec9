"""PPT's pilot study of real-word prompt initialization (§2, Table 2) on SmolLM2-135M, sized like
configs/ppt_smollm2.py (whose settings and departures from the paper it keeps): the same few-shot
prompt tuning, five seeds, one variant per initialization:

    python main.py --config configs/ppt_pilot_smollm2.py:sst2 --workdir runs/ppt_pilot_smollm2/sst2 \\
        --config.mode=sweep

    random            Normal with the vocabulary's scale (Table 2's "Random Init.")
    label_init        the label words' embeddings, cycled over the prompt ("Label Init.")
    vocab_sampling    rows sampled from the whole vocabulary ("Vocab Sampling")
    top1000_sampling  sampled among the 1,000 most frequent tokens of the local pre-training corpus
                      (ptjax/tasks/local_corpus.py; "Top-1000 Sampling")
    task_related      sampled among the tokens of the task's 32 training examples ("Task-Related")

Config argument: sst2 or boolq (Table 2's tasks), or rte, cb. Every variant reads the task in its
PPT format's pattern and verbalizer (no/yes, terrible/great), so label_init starts from those
words. PPT's BoolQ sample comes from the original training set (task boolq_fewshot, which needs
superglue_full/BoolQ/train.jsonl); the shared data has FewGLUE's only, which boolq here reads.
"""

from ptjax.configs import ppt_smollm2

VARIANTS = (
    "random: prompt.init=random",
    "label_init: prompt.init=label_words",
    "vocab_sampling: prompt.init=vocab",
    "top1000_sampling: prompt.init=frequent_words",
    "task_related: prompt.init=task_words",
)


def get_config(task: str = "sst2"):
    config = ppt_smollm2.get_config(task)
    config.prompt.init = "random"
    config.prompt.init_from = ""
    config.prompt.init_top_k = 1000
    config.sweep.variants = VARIANTS
    config.sweep.seeds = (10, 20, 30, 40, 50)
    config.sweep.over_variants = True
    return config
