"""Reading structure and data files with ase.io, with one error for every way a file can be bad.

:func:`read_structures` is what every reader of a user's structure file calls (``mlff md``,
``relax``, ``label``, ``eval``, ``stats``, training data): a missing file stays a
``FileNotFoundError``; an empty file, a file ase.io cannot parse (``UnknownFileTypeError``,
``XYZError``, ``IndexError``, ...) or one without atoms is an :class:`~mlff.errors.InputError`
that names the file, what is wrong and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Union

from mlff.errors import InputError

if TYPE_CHECKING:
    from ase import Atoms

#: What the messages suggest for a file that cannot be read.
READ_FIX = ("check that the file is complete and in a format ase.io reads (extxyz, xyz, pdb, ...; "
            "the format is taken from the extension)")


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception (for one-line error messages)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_structures(path: Union[str, os.PathLike], index: str = ":", format: Optional[str] = None,
                    what: str = "structure file") -> List["Atoms"]:
    """The frames of ``path`` (``ase.io.read(path, index, format)``), at least one, each with at
    least one atom.

    Args:
        path: the file. index: ase.io's frame selection. format: ase.io format (default: from
            the extension). what: the file's role in messages (``"data file"``, ...).

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file is empty, cannot be parsed, or holds a frame without atoms.
    """
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory; give a file")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes): it holds no structure; give a file "
                         "with at least one structure")
    try:
        frames = ase.io.read(path, index=index, format=format)
    except Exception as exc:  # ase.io raises whatever its parser meets: XYZError, IndexError, ...
        raise InputError(f"{what} {path} cannot be read ({first_line(exc)}); {READ_FIX}") from exc
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError(f"{what} {path} holds no structure; give a file with at least one")
    for k, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise InputError(f"{what} {path}: frame {k} holds no atoms; give a file with atoms "
                             "(a PDB file needs ATOM or HETATM records)")
    return frames
