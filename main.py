"""ptjax entry point.

    python main.py --config configs/NAME.py --workdir DIR [--config.a.b=value ...]

The config's `mode` picks what runs: "train" (train, evaluate, export the prompt; a rerun with
the same workdir resumes) or "eval" (evaluate the prompt export named by --config.restore).
Mode "sweep" runs the config's variants x grid points x seeds (config.sweep), each in its own
DIR/<variant>/.../seed_<seed> folder, and writes the results tables DIR/results.md and .csv.
Bad input (unknown config key, impossible setting, malformed data line, wrong checkpoint) ends
with one line `error: ...` on stderr and exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from absl import app, flags

from ptjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics.jsonl, results.json")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "call jax.distributed.initialize() first (multi-host TPU pods / GPU clusters it can detect)",
)


def _train(config, workdir, experiment):
    from ptjax.train import loop

    return loop.train(config, workdir, experiment.model, experiment.data)


def _eval(config, workdir, experiment):
    from ptjax.train import loop

    return loop.evaluate(config, workdir, experiment.model, experiment.data)


# mode -> runner(config, workdir, experiment). Later modes ("plan", "bench", ...) add entries
# here and to ptjax.train.config.MODES.
MODES: dict[str, Callable] = {"train": _train, "eval": _eval}


def run(config, workdir: str, build: Callable | None = None):
    """Validate, build the experiment (model + task data) and run config.mode."""
    import jax

    from ptjax.train.config import validate

    validate(config, jax.device_count())
    if config.mode == "sweep":  # ptjax/sweep.py: each run of the sweep builds its own experiment
        from ptjax.sweep import run_sweep

        return run_sweep(config, workdir, build)
    if build is None:
        from ptjax.experiment import build
    return MODES[config.mode](config, workdir, build(config))


def main(argv: list[str]) -> None:
    from ptjax.errors import InputError

    cli.quiet_logs()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]} (options look like --config.a.b=value)")
    if _WORKDIR.value is None:
        cli.fail("--workdir is required")
    config = cli.load_config()
    if _DISTRIBUTED.value:
        import jax

        jax.distributed.initialize()
    try:
        run(config, _WORKDIR.value)
    except InputError as err:
        cli.fail(str(err))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
