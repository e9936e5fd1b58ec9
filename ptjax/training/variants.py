"""Which sweep runs can train as one job on one frozen backbone (issue 25, batched sweeps).

    groups, alone = plan_groups(runs, configs)   # runs: ptjax.sweep.plan_runs, configs: run_config

Runs batch when their configs differ only in what a bank entry can hold on its own
(ptjax/prompts/banks.py): the seed (initialisation, data order, dropout), the peak learning rate
(BankTraining.learning_rates: each entry's rate inside the per-entry optimizer), the prompt
initialisation and the number of training examples. Everything else (the prompt shape, the
schedule's shape, the optimizer, the batch size, the method) must be equal within a group, so
runs that differ in shape (prompt length, prefix depth) form one group per shape. A run that
cannot batch (mode eval, a trained backbone, or no other run it can share a job with) comes back
in `alone` with the reason, to run by itself: never changed to fit a group.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import ml_collections

from ptjax.errors import InputError

# Config keys whose value may differ between the runs of one batched job, each held per entry.
PER_ENTRY_KEYS = (
    "seed",
    "optimizer.learning_rate",
    "optimizer.prompt_learning_rate",
    "prompt.init",
    "prompt.init_text",
    "task.max_train_examples",
)


def _flat(config_dict: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in config_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


def shared_part(config: ml_collections.ConfigDict) -> str:
    """The config without its per-entry keys and the sections that do not change results: runs
    with equal shared parts may train in one job."""
    flat = _flat(json.loads(json.dumps(config.to_dict(), default=str)))
    kept = {k: v for k, v in flat.items()
            if k not in PER_ENTRY_KEYS and not k.startswith(("sweep.", "logging."))}
    return json.dumps(kept, sort_keys=True)


def why_alone(config: ml_collections.ConfigDict) -> str | None:
    """Why a run cannot share a job whatever the others are, or None."""
    if config.mode != "train":
        return f"mode={config.mode} (only training runs batch)"
    if config.method.name == "fine_tune" or config.method.train_backbone:
        return "it trains the backbone (a batched job shares one frozen backbone)"
    if config.optimizer.grad_accum_steps != 1:
        return "optimizer.grad_accum_steps > 1"
    return None


def plan_groups(runs: Sequence, configs: Sequence[ml_collections.ConfigDict]) -> tuple[list[list], list[tuple]]:
    """(groups: lists of runs, in sweep order, that train as one job each; alone: (run, reason)
    for the runs that train by themselves)."""
    if len(runs) != len(configs):
        raise InputError(f"plan_groups: {len(runs)} runs but {len(configs)} configs")
    groups: dict[str, list] = {}
    alone = []
    for run, config in zip(runs, configs):
        reason = why_alone(config)
        if reason:
            alone.append((run, reason))
        else:
            groups.setdefault(shared_part(config), []).append(run)
    batched = []
    for members in groups.values():
        if len(members) > 1:
            batched.append(members)
        else:
            alone.append((members[0], "no other run differs from it only in " + ", ".join(PER_ENTRY_KEYS)))
    return batched, alone


def describe(groups: list[list], alone: list[tuple], root) -> str:
    """The plan as the sweep prints it: which runs train together, which alone and why."""
    lines = []
    for number, members in enumerate(groups, 1):
        lines.append(f"batched job {number}: " + ", ".join(str(r.path.relative_to(root)) for r in members))
    for run, reason in alone:
        lines.append(f"alone: {run.path.relative_to(root)} ({reason})")
    return "\n".join(lines)


def stack_entries(trees: Sequence[dict], is_bank_leaf) -> dict:
    """The trainable tree of a bank from each variant's own trainable tree (each initialised with
    its own seed, as its separate run would be): bank leaves stacked on a leading axis. Leaves
    without the bank axis would be shared by the variants, which separate runs never share."""
    import numpy as np
    from flax import traverse_util

    flats = [traverse_util.flatten_dict(tree) for tree in trees]
    shared = [path for path in flats[0] if not is_bank_leaf(path)]
    if shared:
        raise InputError(f"batched variants would share trainable {'/'.join(shared[0])}; run them separately")
    return traverse_util.unflatten_dict({path: np.stack([np.asarray(f[path]) for f in flats]) for path in flats[0]})
