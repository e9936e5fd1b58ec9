"""Command-line plumbing shared by main.py and `python -m ptjax.benchmarks.train_step`: the --config flag
(ml_collections, locked, --config.a.b=value overrides) and one-line error reporting.

Bad input ends with `error: ...` on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from ptjax.errors import EXIT_INPUT_ERROR

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config file (configs/*.py); override keys with --config.a.b=value",
    lock_config=True,
)



def fail(message: str, status: int = EXIT_INPUT_ERROR, *, prefix: str = "error: ") -> None:
    """One line on stderr and exit `status` (the table in ptjax/errors.py)."""
    print(prefix + " ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(status)


def _message(err: BaseException) -> str:
    """The text of an error, unwrapping config_dict's KeyError-inside-AttributeError."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def print_help(usage: str | None = None) -> None:
    """The command's usage (default: the __main__ module's docstring) and ptjax's flags."""
    usage = usage if usage is not None else (getattr(sys.modules.get("__main__"), "__doc__", None) or "")
    modules = [m for m in flags.FLAGS.flags_by_module_dict() if m.startswith("ptjax") or m == sys.argv[0]]
    print(usage.strip() + "\n\nflags:\n" + "\n".join(flags.FLAGS.module_help(m) for m in modules))


def override_keys(argv: list[str]) -> tuple[str, ...]:
    """The config keys set on a command line: ("method.name", ...) of --config.method.name=..."""
    return tuple(a.split("=")[0][len("--config."):] for a in argv if a.startswith("--config."))


def parse_flags(argv: list[str], usage: str | None = None) -> list[str]:
    """absl flag parsing (app.run's flags_parser), bad flags and overrides reported as one line.
    --help prints the usage and exits with status 0 (absl's own help exits with 1)."""
    if any(a in HELP_FLAGS for a in argv[1:]):
        print_help(usage)
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(str(err))
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # config file or override
        text = _message(err)
        overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
        culprit = [o for o in overrides if text.startswith(f"'{o.rsplit('.', 1)[-1]}'")]
        where = f"{culprit[0]}: no such key" if culprit else _config_site(err, argv) or "config"
        fail(f"{where}: {text.split('. Other fields present')[0]}")
    except Exception as err:  # noqa: BLE001  the config file does not import or its get_config fails
        fail(f"{_config_site(err, argv) or 'config'}: {type(err).__name__}: {err}")


def _config_site(err: BaseException, argv: list[str]) -> str | None:
    """'configs/x.py:LINE' where the --config file raised `err` (its syntax error's line, or its
    deepest frame in the traceback); None when the error did not come from that file."""
    path = _config_path(argv)
    if path is None:
        return None
    if isinstance(err, SyntaxError) and err.filename and _same_file(err.filename, path):
        return f"{path}:{err.lineno}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if _same_file(f.filename, path)]
    return f"{path}:{frames[-1].lineno}" if frames else None


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--config=") else None)
        if value is not None:
            return value.split(":", 1)[0]  # configs/x.py:ARGUMENT
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


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
