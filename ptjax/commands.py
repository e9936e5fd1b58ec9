"""Running a config: what `python main.py` and `ptjax --config ...` do.

    python main.py --config configs/NAME.py --workdir DIR [--config.a.b=value ...]

The config's `mode` picks what runs: "train" (train, evaluate, export the prompt; a rerun with
the same workdir resumes), "eval" (evaluate the prompt export named by --config.restore; the
export's own method, prompt, head and task settings are used, ptjax/training/export_config.py) or
"plan" (compile the train step with abstract weights on a real or simulated mesh and report
per-device memory, FLOPs and whether it fits: ptjax/planning.py; --workdir optional; exit status 1
when it does not fit).
Mode "sweep" runs the config's variants x grid points x seeds (config.sweep), each in its own
DIR/<variant>/.../seed_<seed> folder, and writes the results tables DIR/results.md and .csv.
Mode "lm_adapt" continues training the backbone itself on unlabeled text (LM adaptation, PPT's
"LM Adaption" baseline) and writes it to DIR/backbone (ptjax/training/lm_adaptation.py).
Bad input (unknown config key, impossible setting, malformed data line, wrong checkpoint) ends
with one line `error: ...` on stderr and exit status 2; a workdir that cannot be written, a full
disk and an interrupt (Ctrl-C, SIGTERM) end with one line and their own status (the table in
ptjax/errors.py); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from absl import flags

from ptjax import cli
from ptjax.errors import EXIT_DOES_NOT_FIT  # mode "plan": the step does not fit the stated device memory

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics.jsonl, results.json")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "start jax.distributed first: detected on TPU pods and SLURM, or set JAX_COORDINATOR_ADDRESS, "
    "JAX_NUM_PROCESSES and JAX_PROCESS_ID (ptjax/training/distributed.py, launch/)",
)


def _train(config, workdir, experiment):
    from ptjax.training import loop

    return loop.train(config, workdir, experiment.model, experiment.data)


def _eval(config, workdir, experiment):
    from ptjax.training import loop

    return loop.evaluate(config, workdir, experiment.model, experiment.data)


def _plan(config, workdir, experiment):
    from ptjax.planning import run_plan

    return run_plan(config, workdir, experiment)


# mode -> runner(config, workdir, experiment). Later modes add entries here and to
# ptjax.training.config.MODES.
MODES: dict[str, Callable] = {"train": _train, "eval": _eval, "plan": _plan}


def run(config, workdir: str, build: Callable | None = None, *, explicit: tuple[str, ...] = ()):
    """Validate, build the experiment (model + task data) and run config.mode.

    Mode "eval" of an export that records its config runs with that config; `config` supplies
    the data and evaluation settings, and any of its method/prompt/head/task settings that
    contradicts the export is refused. explicit: keys named on the command line ("method.name"),
    counted as set even where they equal the default."""
    import jax

    from ptjax.training.compilation_cache import enable as enable_compilation_cache
    from ptjax.training.config import check_names, validate
    from ptjax.training.cpu_devices import start_cpu_devices

    if config.mode == "eval" and config.restore:
        from ptjax.training.export_config import config_for_export

        config = config_for_export(config, config.restore, explicit=explicit)
    if config.mode in ("train", "eval", "sweep"):
        start_cpu_devices(_run_configs(config, workdir))  # before JAX starts its backends
    validate(config, jax.device_count())
    check_names(config)  # what options name (files, splits, metrics), before any backbone loads
    enable_compilation_cache(config.compilation_cache_dir)
    if jax.default_backend() == "cpu" and config.mode != "plan":
        from ptjax.hostmem import keep_freed_memory

        keep_freed_memory()  # XLA:CPU's per-step temporaries stay mapped: ptjax/hostmem.py
    if config.mode == "sweep":  # ptjax/sweep.py: each run of the sweep builds its own experiment
        from ptjax.sweep import run_sweep

        return run_sweep(config, workdir, build)
    if config.mode == "lm_adapt":  # ptjax/training/lm_adaptation.py: the backbone trains on text, no task
        from ptjax.training.lm_adaptation import run as run_lm_adaptation

        return run_lm_adaptation(config, workdir)
    if build is None and config.mode == "plan":  # the backbone without its weights
        from ptjax.planning import build_without_weights as build
    elif build is None:
        from ptjax.experiment import build
    return MODES[config.mode](config, workdir, build(config))


def _run_configs(config, workdir: str | None) -> list:
    """The configs of the runs `config` makes (a sweep's every run), read before JAX starts."""
    if config.mode != "sweep":
        return [config]
    from pathlib import Path

    from ptjax.sweep import plan_runs, run_config

    return [run_config(config, run) for run in plan_runs(config, Path(workdir or "."))]


def run_reporting_errors(config, workdir: str | None, build: Callable | None = None, *,
                         distributed: bool = False, explicit: tuple[str, ...] = ()):
    """run(), with the faults a user can cause or meet (bad input, a workdir that cannot be
    written, a full disk, Ctrl-C or SIGTERM) ended as one line and their exit status
    (ptjax/errors.py); a bug keeps its traceback."""
    from ptjax import errors

    # SIGTERM (a scheduler, `kill`) stops a run as Ctrl-C does; the training loop turns both into
    # "stop after this step and save" (ptjax/training/loop.py).
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if distributed:  # launch/*: the coordinator, process count and id from the environment
            from ptjax.training.distributed import initialize

            initialize()
        if config.mode == "plan":  # before JAX starts its backends
            from ptjax.planning import use_simulated_devices

            use_simulated_devices(config.plan.devices)
        return run(config, workdir, build, explicit=explicit)
    except errors.InputError as err:
        cli.fail(str(err))
    except errors.Interrupted as err:
        cli.fail(str(err), err.status, prefix="")
    except errors.RunStopped as err:
        cli.fail(str(err), err.status)
    except KeyboardInterrupt:  # outside the training loop, which stops at a step boundary itself
        cli.fail("interrupted; rerun the same command to resume from the last checkpoint",
                 errors.EXIT_INTERRUPTED, prefix="")
    except OSError as err:  # outside a training run (mode eval, plan, sweep bookkeeping)
        stopped = errors.write_failure(err, workdir)
        if stopped is None:
            raise
        cli.fail(str(stopped), stopped.status)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> None:
    """absl main of `main.py` and `ptjax --config ...` (argv: what flag parsing left)."""
    cli.quiet_logs()
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]} (options look like --config.a.b=value)")
    config = cli.load_config()
    if _WORKDIR.value is None and config.mode != "plan":
        cli.fail("--workdir is required")
    result = run_reporting_errors(config, _WORKDIR.value, distributed=_DISTRIBUTED.value,
                                  explicit=cli.override_keys(sys.argv))
    if config.mode == "plan" and not result["fits"]:
        sys.exit(EXIT_DOES_NOT_FIT)
