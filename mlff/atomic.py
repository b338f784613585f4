"""Atomic file writes: write a hidden temporary file next to the target, fsync it, then rename
it over the target (``os.replace``), so a reader or a resumed run sees either the old file or
the new one, never half of one. Used for checkpoints, logs and results across mlff."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (what resumed runs compare their inputs by)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Check, before any work, that ``folder`` can be created (or already exists) and written,
    without creating it: a temporary file is made and removed in its nearest existing ancestor.

    Raises:
        OutputError: ``folder`` (or an ancestor) is a file, or the location is not writable;
            the message names the path, the reason and the fix.
    """
    import tempfile

    from mlff.errors import OutputError

    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    fix = "choose another location or fix its permissions"
    if not existing.is_dir():
        raise OutputError(f"cannot write the {what} {folder}: {existing} is a file, not a folder; "
                          f"{fix}")
    try:
        fd, name = tempfile.mkstemp(prefix=".mlff-write-check-", dir=existing)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {folder}: {existing} is not writable "
                          f"({exc.strerror or exc}); {fix}") from None


@contextlib.contextmanager
def removed_if_left_empty(folder: str | os.PathLike, ignore: Sequence[str] = ()) -> Iterator[Path]:
    """Run a block that may create ``folder``: if the block fails, the folders it created on the
    way (``folder`` and missing parents) are removed again when they hold nothing but files
    named in ``ignore`` (removed with them), so a failed run leaves no empty output folder
    behind. ``folder`` itself is not created here."""
    folder = Path(folder).absolute()
    created = []
    missing = folder
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    try:
        yield folder
    except BaseException:
        for d in created:  # deepest first
            try:
                if not set(os.listdir(d)) <= set(ignore):
                    break
                for name in os.listdir(d):
                    os.unlink(d / name)
                d.rmdir()
            except OSError:
                break
        raise


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp.{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that takes a file name (matplotlib,
    mdtraj, torch.save, ase.io): on a clean exit the file is fsynced and renamed over ``path``;
    on an exception it is removed and ``path`` is left as it was. The temporary name keeps
    ``path``'s suffix, so writers that choose a format by extension still work::

        with atomic_path(out / "plot.png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_savefig(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix), then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    tmp = _temporary(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: str | os.PathLike, **arrays) -> None:
    """``np.savez(path, **arrays)`` atomically (``path`` is used as given, no suffix added)."""
    path = Path(path)
    tmp = _temporary(path)
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_extxyz(path: str | os.PathLike, frames: Sequence["Atoms"]) -> None:
    """Write ASE ``frames`` to ``path`` as extxyz atomically (``ase.io`` is imported here, so
    importing this module stays light)."""
    import ase.io

    with atomic_path(path) as tmp:
        ase.io.write(tmp, list(frames), format="extxyz")
