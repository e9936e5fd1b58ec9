"""Quickstart: does P-tuning find better prompts than hand-written ones? SmolLM2-135M (real
weights, offline) probed for 563 facts about countries that ship with ptjax
(ptjax/tasks/data/world_facts: capital, capital of, continent, official language, currency),
manual prompt ("The capital of France is [MASK]") vs P-tuning ("[P*3] France [P*3] [MASK]", one
BiLSTM + MLP prompt encoder per relation, frozen model), then the P@1 table per relation.

    python main.py --config configs/quickstart.py --workdir /tmp/ptjax-quickstart

Settings as configs/lama_paper.py except: the quickstart's data, a learning rate of 1e-3 (1e-5
needs far more than the quickstart's 300 steps) with 10% linear warm-up and linear decay, 300
steps of batch 8 (about 9 epochs), dev evaluated once at the end. Shorter runs at a constant
rate end wherever float rounding sends them (BENCHMARKS.md, "One device or several"): 150 steps
at a constant 1e-3 gave 39-77 P@1 across 1, 2 and 4 devices and seeds 0-2; this setting gives
74-83 across 1, 2 and 4 devices. Facts whose object is not one SmolLM2 token (" Kathmandu") are
dropped, as LAMA does. The tables land in the workdir (results.md, results.csv,
results_p_at_1.csv); each run's own files under manual/seed_0 and ptuning/seed_0.
"""

from pathlib import Path

import ptjax
from ptjax.configs.lama_paper import paper


def get_config():
    config = paper("ptuning")
    # The facts ship inside the package: found from a checkout and from an installed ptjax alike.
    config.data_dir = str(Path(ptjax.__file__).parent / "tasks" / "data" / "world_facts")
    config.mode = "sweep"
    config.sweep.variants = (
        "manual: mode=eval; method.name=manual",
        "ptuning: method.name=ptuning",
    )
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "linear"
    config.schedule.warmup_ratio = 0.1
    config.train.num_steps = 300
    config.train.eval_every = 300
    config.train.early_stopping_patience = 0
    config.checkpoint.every_steps = 0  # only at the end
    config.logging.tensorboard = False
    return config
