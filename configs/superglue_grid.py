"""Grid search over learning rate x prompt length x batch size (mode sweep), one results table
(results.md, results.csv) with every grid point. The papers pick the best point on dev (full
data) or dev32 (few-shot); the table lists every split so either choice can be read off.

    python main.py --config configs/superglue_grid.py:rte,ptuning_v2 --workdir runs/grid_rte_pt2
    python main.py --config configs/superglue_grid.py:cb,ptuning,fewshot --workdir runs/grid_cb_pt
    # a smaller grid from the command line:
    python main.py --config configs/superglue_grid.py:rte,lester --workdir runs/grid_rte_lester \
        --config.sweep.grid="('optimizer.learning_rate=(1e-2, 3e-2)', 'prompt.length=(20, 100)')"

Grids (arg "task,method[,protocol]"; settings otherwise as configs/superglue_paper.py):
  fine_tune, manual (PET), ptuning   lr {1e-5, 2e-5, 3e-5} x batch {16, 32} (P-tuning's grid);
                                      P-tuning's templates fix their own soft-token count
  lester                             lr {3e-3, 1e-2, 3e-2} x prompt length {20, 100} x batch {16, 32}
  ptuning_v2                         lr {5e-3, 7e-3, 1e-2} x prefix length {8, 32, 128} x batch {16, 32}
"""

from ptjax.configs.superglue_paper import paper

BATCHES = (16, 32)
GRIDS = {
    "lester": ((3e-3, 1e-2, 3e-2), "prompt.length", (20, 100)),
    "ptuning_v2": ((5e-3, 7e-3, 1e-2), "prompt.deep.length", (8, 32, 128)),
}
DEFAULT = ((1e-5, 2e-5, 3e-5), "", ())


def grid(method: str) -> tuple[str, ...]:
    rates, length_key, lengths = GRIDS.get(method, DEFAULT)
    entries = [f"optimizer.learning_rate={rates!r}"]
    if length_key:
        entries.append(f"{length_key}={lengths!r}")
    entries.append(f"train.batch_size={BATCHES!r}")
    return tuple(entries)


def get_config(arg: str = "rte,ptuning_v2"):
    parts = [part.strip() for part in arg.split(",")]
    task, method = parts[0], parts[1]
    config = paper(task, method, parts[2] if len(parts) > 2 else "full")
    if method == "manual":  # PET: the manual pattern with the backbone trained
        config.mode = "train"
        config.method.train_backbone = True
    config.mode = "sweep"
    config.sweep.grid = grid(method)
    config.sweep.seeds = (config.seed,)
    return config
