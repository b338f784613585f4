"""Run locks: one process at a time writes a run folder (``mlff md``, ``relax``, ``train``,
``label``, ``fe``).

:func:`run_lock` creates the folder if needed and takes an advisory lock on the file
:data:`LOCK_NAME` in it (``fcntl.flock``, exclusive and non-blocking) before any work starts; the
file records its owner (pid, host, command, start time) as one JSON line. A second run into the
same folder fails at once with a :class:`~mlff.errors.RunLockedError` naming the first; the lock
is released (and the file removed) when the run ends, however it ends.

Stale locks: the kernel drops a flock when its process dies (even by kill -9), so a lock file left
by a dead run is taken over by the next one, which logs whose it was. Where the file system has
no flock, the owner's record decides: a dead pid on this host is stale and taken over; a live
one, or one on another host, holds the folder.

A run that fails before it writes anything leaves no folder behind
(:func:`mlff.atomic.removed_if_left_empty`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Set, Union

from mlff.atomic import removed_if_left_empty
from mlff.errors import OutputError, RunLockedError

log = logging.getLogger(__name__)

#: The lock file in a run folder.
LOCK_NAME = ".mlff-run.lock"
#: Lock files this process holds (a nested :func:`run_lock` on one of them is a no-op).
_HELD: Set[str] = set()


def read_owner(path: Union[str, os.PathLike]) -> Dict[str, object]:
    """The owner record of a lock file (``{}`` when it is empty or unreadable)."""
    try:
        record = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe(owner: Dict[str, object]) -> str:
    """``mlff md (pid 123 on host, started ...)`` of an owner record."""
    if not owner:
        return "an unknown process (the lock file names no owner)"
    return (f"{owner.get('command', 'an mlff run')} (pid {owner.get('pid')} on "
            f"{owner.get('host')}, started {owner.get('started')})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owned_elsewhere(owner: Dict[str, object]) -> bool:
    """Without flock: whether the recorded owner may still be running."""
    if not owner or (owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()):
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell: never take over another machine's run
    return _alive(int(owner.get("pid", 0)))  # type: ignore[arg-type]


def _locked_error(folder: Path, owner: Dict[str, object], stale_hint: Optional[Path] = None
                  ) -> RunLockedError:
    hint = (f" (if that run is gone from a machine this one cannot check, delete {stale_hint})"
            if stale_hint else "")
    return RunLockedError(
        f"{folder} is in use by another run: {describe(owner)}; wait for it to finish (or stop "
        f"it), or choose another output folder{hint}")


def _acquire(folder: Path, path: Path, command: str) -> int:
    """Open and lock ``path``; returns the descriptor (the lock lasts while it is open)."""
    for _ in range(10):  # retried when the file was replaced between open and lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            has_flock = True
        except BlockingIOError:
            os.close(fd)
            owner = read_owner(path)
            if not owner:  # the holder has locked but not yet written its record
                time.sleep(0.2)
                owner = read_owner(path)
            raise _locked_error(folder, owner) from None
        except OSError as exc:  # no flock on this file system: the owner record decides
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            has_flock = False
        except ImportError:  # not a POSIX system
            has_flock = False
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # removed by its releasing owner after we opened it
            same = False
        if not same:
            os.close(fd)
            continue
        previous = read_owner(path)
        if not has_flock and _owned_elsewhere(previous):
            os.close(fd)
            raise _locked_error(folder, previous, path)
        if previous:
            log.warning("%s: taking over the stale lock of %s, which is no longer running",
                        folder, describe(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        return fd
    raise RunLockedError(f"{folder}: could not take the lock {path} (it keeps being replaced by "
                         "other runs); choose another output folder")


def _release(path: Path, fd: int) -> None:
    try:
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            os.unlink(path)  # before the lock goes, so that nobody locks a file about to vanish
    except OSError:
        pass
    os.close(fd)


@contextlib.contextmanager
def run_lock(folder: Union[str, os.PathLike], command: str,
             lock_name: Optional[str] = None) -> Iterator[Path]:
    """Hold the run lock of ``folder`` (created if missing) for the block.

    Args:
        folder: the run folder. command: what runs (``"mlff md"``), for the other run's message.
        lock_name: the lock file's name in ``folder`` (default :data:`LOCK_NAME`).

    Raises:
        RunLockedError: another live process holds the folder (named in the message).
        OutputError: the folder cannot be created or written.
    """
    folder = Path(folder)
    path = folder / (lock_name or LOCK_NAME)
    key = str(path.absolute())
    if key in _HELD:  # this process holds it already (a run inside a run)
        yield folder
        return
    with removed_if_left_empty(folder, ignore=(path.name,)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _acquire(folder, path, command)
        except OSError as exc:
            raise OutputError(f"cannot write the run folder {folder} ({exc.strerror or exc}); "
                              "choose another location or fix its permissions") from None
        _HELD.add(key)
        try:
            yield folder
        finally:
            _HELD.discard(key)
            _release(path, fd)
