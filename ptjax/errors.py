"""The errors a run reports as one line, and the exit status of each: the one table of them.

    status  meaning
    0       done
    1       mode "plan": the step does not fit the stated device memory (ptjax/planning.py)
    2       bad input (InputError): config file or key, data file, checkpoint or export; a run
            whose loss became NaN/inf (loop.Diverged)
    73      the workdir cannot be written (read-only file system, no permission)
    75      the disk holding the workdir is full; free space and rerun to resume
    130     interrupted (Ctrl-C, SIGINT or SIGTERM); rerun to resume
    other   a bug: the traceback is kept

main.py prints an InputError as a single `error: ...` line; anything else is a bug and keeps its
traceback. Messages name the file, the line when there is one, and what is wrong:
    raise InputError("data/train.jsonl:17: invalid JSON (Expecting ',' delimiter)")
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

EXIT_DOES_NOT_FIT = 1
EXIT_INPUT_ERROR = 2
EXIT_WORKDIR_NOT_WRITABLE = 73  # sysexits' EX_CANTCREAT
EXIT_DISK_FULL = 75  # sysexits' EX_TEMPFAIL: the same command succeeds once there is room
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class InputError(ValueError):
    status = EXIT_INPUT_ERROR


class RunStopped(Exception):
    """A run that stopped for a reason outside the program (a signal, the file system); printed
    as one line and ended with `status`. Checkpoints already written are kept."""

    status = 1


class Interrupted(RunStopped):
    status = EXIT_INTERRUPTED


class WorkdirNotWritable(RunStopped):
    status = EXIT_WORKDIR_NOT_WRITABLE


class DiskFull(RunStopped):
    status = EXIT_DISK_FULL


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
# tensorstore (orbax's array writer) reports the same failures as ValueErrors carrying the text.
_DISK_FULL_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
_NOT_WRITABLE_TEXT = (os.strerror(errno.EROFS),)


def write_failure(err: BaseException, workdir: str | Path | None, resume_hint: str = "") -> RunStopped | None:
    """A DiskFull or WorkdirNotWritable for an OSError (anywhere in err's cause/context chain,
    as orbax's background threads wrap them) that a full disk or a read-only or forbidden workdir
    raised; None for any other error. A permission error counts only for a path inside `workdir`
    (or with no path), so an unreadable data file stays what it is."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL | _NOT_WRITABLE:
            path = err.filename
            inside = workdir is None or path is None or _inside(path, workdir)
            if err.errno in _DISK_FULL:
                where = path or workdir
                return DiskFull(f"cannot write {where}: {err.strerror} (errno {err.errno}); free space "
                                f"and rerun the same command{resume_hint}")
            if inside or err.errno == errno.EROFS:
                return WorkdirNotWritable(f"cannot write {path or workdir}: {err.strerror} (errno "
                                          f"{err.errno}); choose a --workdir that can be written")
        text = str(err) if not isinstance(err, OSError) else ""
        if any(t in text for t in _DISK_FULL_TEXT):
            return DiskFull(f"cannot write {workdir}: {os.strerror(errno.ENOSPC)}; free space and rerun "
                            f"the same command{resume_hint}")
        if any(t in text for t in _NOT_WRITABLE_TEXT):
            return WorkdirNotWritable(f"cannot write {workdir}: {os.strerror(errno.EROFS)}; choose a "
                                      f"--workdir that can be written")
        err = err.__cause__ or err.__context__
    return None


def _inside(path, folder) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except (ValueError, OSError):
        return False


def at(path, line: int | None = None) -> str:
    """'path:line' (or 'path') for the start of a message."""
    return f"{path}:{line}" if line is not None else str(path)
