"""The one error type for bad user input (config, data files, checkpoints to restore).

main.py prints an InputError as a single line and exits with status 2; anything else is a bug
and keeps its traceback. Messages name the file, the line when there is one, and what is wrong:
    raise InputError("data/train.jsonl:17: invalid JSON (Expecting ',' delimiter)")
"""


class InputError(ValueError):
    pass


def at(path, line: int | None = None) -> str:
    """'path:line' (or 'path') for the start of a message."""
    return f"{path}:{line}" if line is not None else str(path)
