"""Atomic file writes: write a hidden temporary file next to the target, fsync it, then rename
it over the target (``os.replace``), so a reader or a resumed run sees either the old file or
the new one, never half of one. Used for checkpoints, logs and results across mlff."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp.{os.getpid()}")


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
