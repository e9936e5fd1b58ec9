"""Run the toy experiment's training in this process (for subprocess tests).

    python tests/toy_run.py WORKDIR MODEL_DIR '{"overrides": {...}, ...}'

Options (JSON): overrides (config keys -> values), sizes (split -> examples), data_dir,
kill_at_step (SIGKILL this process right after that step), num_processes / process_id / port
(jax.distributed over localhost with CPU collectives), dump (write the exported prompt to
this .npy path and the results next to it as .json).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np


def main(workdir: str, model_dir: str, options: dict) -> None:
    if options.get("num_processes", 1) > 1:
        # The path of `main.py --distributed` and launch/*: the job described by the environment.
        os.environ.update(JAX_COORDINATOR_ADDRESS=f"localhost:{options['port']}",
                          JAX_NUM_PROCESSES=str(options["num_processes"]),
                          JAX_PROCESS_ID=str(options["process_id"]))
        from ptjax.training.distributed import initialize

        initialize()  # gloo CPU collectives: the test runs with JAX_PLATFORMS=cpu
    import toy_experiment

    from ptjax.training import checkpoints, loop
    from ptjax.training.engine import Engine

    config = toy_experiment.toy_config(model_dir, options.get("data_dir", workdir),
                                       **options.get("overrides", {}))
    model, data = toy_experiment.build(config, sizes=options.get("sizes"))
    hooks = []
    if "kill_at_step" in options:
        def kill(step):
            if step == options["kill_at_step"]:
                os.kill(os.getpid(), 9)  # SIGKILL: no cleanup, no flush, like a lost machine
        hooks.append(kill)
    results = loop.train(config, workdir, model, data, hooks=hooks)
    if options.get("dump"):
        with Engine(config, model).activate():
            trainable, _ = checkpoints.read_export(Path(workdir) / "export",
                                                   Engine(config, model).trainable_target(),
                                                   fingerprint=model.fingerprint)
        prompt = trainable["prompt"]["embedding"]
        np.save(options["dump"], np.asarray(prompt.addressable_data(0)))
        with open(options["dump"] + ".json", "w") as f:
            json.dump(results, f, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
