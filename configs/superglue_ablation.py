"""P-tuning v2's ablations (sec. 4.4, Figures 3 and 4) on the real MiniLM, frozen, [CLS] head:

    python main.py --config configs/superglue_ablation.py:length --workdir runs/ablation_length
    python main.py --config configs/superglue_ablation.py:depth --workdir runs/ablation_depth

length  prefix length {1, 4, 16, 64} x embedding vs MLP reparameterization (hidden 512)
depth   prefixes on k of MiniLM's 6 layers, k in {2, 4}, counted from the bottom ([0, k)) or from
        the top ([6 - k, 6)), and on all 6 layers; prefix length 16, no reparameterization
Each sweep writes its table (results.md / results.csv) and its plot (results.png: lines over the
prefix length per variant; bars per depth variant) in its workdir.
Task and budget: SST-2 as in configs/superglue_minilm_compare.py (the first 2,000 GLUE train rows,
80 steps x 16, dev every 40 steps; lr 1e-2, the better P-tuning v2 rate of that comparison's
grid, and 1e-3 for the MLP, which does not train at 1e-2 or 3e-3), one seed per point. The paper
draws RTE and BoolQ on RoBERTa/BERT-large; SST-2 is the task a CPU budget trains MiniLM on to a
clear signal (see RESULTS.md).
"""

from ptjax.configs.superglue_minilm_compare import compare

LENGTHS = (1, 4, 16, 64)
DEPTHS = (2, 4)
LAYERS = 6  # MiniLM


def ablation(kind: str = "length", task: str = "sst2"):
    config = compare(task)
    config.method.name = "ptuning_v2"
    config.optimizer.learning_rate = 1e-2
    if kind == "length":
        # The MLP collapses to the majority class at the prefix's 1e-2 and at 3e-3 (RESULTS.md).
        config.sweep.variants = ("embedding: prompt.deep.reparam=False",
                                 "mlp: prompt.deep.reparam=True; optimizer.learning_rate=1e-3")
        config.sweep.grid = (f"prompt.deep.length={LENGTHS!r}",)
    elif kind == "depth":
        config.prompt.deep.length = 16
        variants = [f"all_{LAYERS}: prompt.deep.layer_start=0; prompt.deep.layer_end={LAYERS}"]
        for k in DEPTHS:
            variants.append(f"bottom_{k}: prompt.deep.layer_start=0; prompt.deep.layer_end={k}")
            variants.append(f"top_{k}: prompt.deep.layer_start={LAYERS - k}; prompt.deep.layer_end={LAYERS}")
        config.sweep.variants = tuple(variants)
        config.sweep.grid = ()
    else:
        raise ValueError(f"ablation {kind!r}: choose 'length' or 'depth'")
    return config


def get_config(arg: str = "length"):
    kind, _, task = arg.partition(",")
    return ablation(kind, task or "sst2")
