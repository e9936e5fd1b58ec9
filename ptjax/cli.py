"""Command-line plumbing shared by main.py and `python -m ptjax.benchmarks.train_step`: the --config flag
(ml_collections, locked, --config.a.b=value overrides) and one-line error reporting.

Bad input ends with `error: ...` on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import logging
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config file (configs/*.py); override keys with --config.a.b=value",
    lock_config=True,
)

EXIT_INPUT_ERROR = 2


def fail(message: str) -> None:
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(EXIT_INPUT_ERROR)


def _message(err: BaseException) -> str:
    """The text of an error, unwrapping config_dict's KeyError-inside-AttributeError."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing (app.run's flags_parser), bad flags and overrides reported as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(str(err))
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # config file or override
        text = _message(err)
        overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        culprit = [o for o in overrides if text.startswith(f"'{o.rsplit('.', 1)[-1]}'")]
        where = f"{culprit[0]}: no such key" if culprit else "config"
        fail(f"{where}: {text}")


def load_config():
    """The parsed --config (exits with one line when it is missing or fails to load)."""
    if CONFIG.value is None:
        fail("--config is required (e.g. --config configs/base.py)")
    try:
        config = CONFIG.value
        config.mode  # noqa: B018  the file loads lazily; a missing or broken file fails here
    except OSError as err:
        fail(str(err))
    return config


def quiet_logs() -> None:
    """INFO logs (backend probing, orbax) would bury progress and one-line errors. Call after
    flag parsing; an explicit --verbosity keeps its level."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("jax").setLevel(logging.WARNING)
