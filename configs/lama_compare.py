"""The P-tuning paper's LAMA comparison (Table 2, right) as one sweep: manual prompt (MP),
fine-tuning (FT), manual prompt + fine-tuning (MP+FT) and P-tuning, each with the paper's
settings (configs/lama_paper.py), then per-relation and averaged P@1 tables in the workdir
(results.md, results.csv, results_p_at_1.csv).

    python main.py --config configs/lama_compare.py --workdir runs/lama_compare
    # only two of them:
    python main.py --config configs/lama_compare.py --workdir runs/lama_mp_pt \
        --config.sweep.variants="('manual: mode=eval; method.name=manual', 'ptuning: method.name=ptuning')"

Fine-tuning all of SmolLM2 on CPU for up to 100 epochs is far out of reach on a laptop; the
sweep finishes whatever it can and a rerun resumes it. configs/lama_smollm2.py is the budgeted
run recorded in RESULTS.md.
"""

from ptjax.configs.lama_paper import paper

VARIANTS = (
    "manual: mode=eval; method.name=manual",
    "fine_tune: method.name=fine_tune",
    "manual_fine_tune: method.name=manual; method.train_backbone=True",
    "ptuning: method.name=ptuning",
)


def get_config():
    config = paper("ptuning")
    config.mode = "sweep"
    config.sweep.variants = VARIANTS
    return config
