"""SQuAD 2.0 with P-tuning v2: the SQuAD 1.1 setup (configs/squad_ptuning_v2.py) with the
authors' 2.0 script's prefix length 8 and 10 epochs; "no answer" wins when its score beats the
best span's by more than task.options.null_threshold (0.0). Data in DATA_DIR/squad_v2/.

    python main.py --config configs/squad_v2_ptuning_v2.py --workdir runs/squad_v2_ptuning_v2
"""

from ptjax.configs import squad_ptuning_v2


def get_config():
    config = squad_ptuning_v2.get_config("squad_v2", prefix_length=8, epochs=10)
    config.task.options.null_threshold = 0.0
    return config
