"""ptjax entry point.

    python main.py --config configs/NAME.py --workdir DIR [--config.a.b=value ...]

The config's `mode` picks what runs: "train" (train, evaluate, export the prompt; a rerun with
the same workdir resumes), "eval" (evaluate the prompt export named by --config.restore with the
settings it records; give only data and evaluation options) or "plan" (compile the train step
with abstract weights on a real or simulated mesh and report per-device memory, FLOPs and
whether it fits: ptjax/planning.py; --workdir optional; exit status 1 when it does not fit).
Mode "sweep" runs the config's variants x grid points x seeds (config.sweep), each in its own
DIR/<variant>/.../seed_<seed> folder, and writes the results tables DIR/results.md and .csv.
Bad input (unknown config key, impossible setting, malformed data line, wrong checkpoint) ends
with one line `error: ...` on stderr and exit status 2; anything else is a bug and keeps its
traceback. The installed `ptjax` command runs the same code (ptjax/commands.py, ptjax/console.py).
"""

from __future__ import annotations

from ptjax.commands import EXIT_DOES_NOT_FIT, MODES, main, run, run_reporting_errors  # noqa: F401  (tests and tools)

if __name__ == "__main__":
    from absl import app

    from ptjax import cli
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    app.run(main, flags_parser=cli.parse_flags)
