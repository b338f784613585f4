"""The run folder of ``mlff md`` (:func:`mlff.md_workflows.md.run_md`): its files, how they
grow while a run goes, and how a resume cuts them back to the checkpoint.

==========================  ================================================================
``frames.bin``              every report step's positions, raw float32 ``[n_frames, N, 3]`` A,
                            appended as the run goes (survives a kill)
``cells.bin``               periodic runs: float64 ``[n_frames, 3, 3]`` A
``log.csv``                 one row a report step (:data:`~mlff.md_workflows.md_config.LOG_COLUMNS`)
``checkpoint.npz``          written atomically at every report step: the engine's arrays and a
                            JSON ``meta`` (step, n_frames, n_atoms, engine, config)
``trajectory.extxyz``       optional, every frame (``write_extxyz``)
``trajectory.dcd``          from ``frames.bin`` at the end (mdtraj), with ``topology.pdb``
``final.pdb``, ``final.extxyz``  the last structure
==========================  ================================================================

Every file written whole is written atomically (:mod:`mlff.atomic`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from mlff.atomic import atomic_path, atomic_savez, atomic_write_extxyz, atomic_write_text
from mlff.md_workflows.md_config import LOG_COLUMNS
from mlff.units import ANGSTROM_TO_NM

_FLOAT32_BYTES = np.dtype(np.float32).itemsize
_FLOAT64_BYTES = np.dtype(np.float64).itemsize


def read_frames(out: Path, n_atoms: int) -> np.ndarray:
    """Frames of a run folder, ``[n_frames, N, 3]`` float32 A (from ``frames.bin``)."""
    raw = np.fromfile(Path(out) / "frames.bin", dtype=np.float32)
    return raw.reshape(-1, n_atoms, 3)


def read_log(path: Path) -> List[Dict[str, str]]:
    """The rows of a ``log.csv`` (strings by column), ``[]`` when there is none."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_log(path: Path, rows: List[Mapping[str, object]]) -> None:
    """A ``log.csv`` with the header and ``rows``, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_trajectory(out: Path, md_topology, n_atoms: int, periodic: bool) -> Path:
    """``trajectory.dcd`` from ``frames.bin`` (and ``cells.bin``), written atomically."""
    import mdtraj

    out = Path(out)
    xyz = read_frames(out, n_atoms) * ANGSTROM_TO_NM
    traj = mdtraj.Trajectory(xyz, md_topology)
    if periodic:
        cells = np.fromfile(out / "cells.bin", dtype=np.float64).reshape(-1, 3, 3)[: len(xyz)]
        traj.unitcell_vectors = cells * ANGSTROM_TO_NM
    path = out / "trajectory.dcd"
    with atomic_path(path) as tmp:
        traj.save_dcd(str(tmp))
    return path


def save_npz_checkpoint(path: Path, arrays: Dict[str, np.ndarray], meta: Dict[str, object]) -> None:
    """An ``.npz`` checkpoint of ``arrays`` and ``meta`` (JSON, under ``"meta"``), atomically."""
    arrays = dict(arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8).copy()
    atomic_savez(path, **arrays)


def load_npz_checkpoint(path: Path, required: Tuple[str, ...] = ()
                        ) -> Tuple[Dict[str, np.ndarray], Dict[str, object]]:
    """``(arrays, meta)`` of a :func:`save_npz_checkpoint` file, ``meta`` with the keys
    ``required``.

    Raises:
        CheckpointError: the file is truncated or damaged (``BadZipFile``, ``EOFError``, a
            missing or unreadable ``meta``), with the fix.
    """
    from mlff.errors import CheckpointError
    from mlff.structure_files import first_line

    path = Path(path)
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        missing = [k for k in required if k not in meta]
        if missing:
            raise KeyError(f"meta has no {missing}")
    except Exception as exc:  # zipfile, numpy and json errors of a damaged file
        raise CheckpointError(
            f"the checkpoint {path} is damaged and cannot be resumed from ({first_line(exc)}); "
            f"start the run again without --resume into a new --out (or move {path.parent} "
            "away)") from exc
    return arrays, meta


def _truncate(path: Path, n_bytes: int) -> None:
    if path.exists() and path.stat().st_size > n_bytes:
        with open(path, "r+b") as f:
            f.truncate(n_bytes)


class RunFolder:
    """The files of one run in ``out`` for ``n_atoms`` atoms.

    Args:
        out: the folder (created). n_atoms: atoms per frame. periodic: write ``cells.bin``.
        write_extxyz: also append every frame to ``trajectory.extxyz``.
    """

    def __init__(self, out: Path, n_atoms: int, periodic: bool, write_extxyz: bool = False) -> None:
        self.out = Path(out)
        self.n_atoms, self.periodic, self.write_extxyz = int(n_atoms), bool(periodic), bool(write_extxyz)
        self.frames = self.out / "frames.bin"
        self.cells = self.out / "cells.bin"
        self.log = self.out / "log.csv"
        self.checkpoint = self.out / "checkpoint.npz"
        self.extxyz = self.out / "trajectory.extxyz"

    def holds_run(self) -> bool:
        """Whether a run (checkpoint or log) is already here."""
        return self.checkpoint.exists() or self.log.exists()

    def start(self, *stale: Path) -> None:
        """A fresh run: create the folder, remove old frames (and ``stale`` files), write an
        empty log."""
        self.out.mkdir(parents=True, exist_ok=True)
        for p in (self.frames, self.cells, self.extxyz, *stale):
            if p.exists():
                p.unlink()
        write_log(self.log, [])

    def save_checkpoint(self, arrays: Dict[str, np.ndarray], meta: Dict[str, object]) -> None:
        """``checkpoint.npz`` with the engine's ``arrays`` and ``meta`` (JSON), atomically."""
        save_npz_checkpoint(self.checkpoint, arrays, meta)

    def load_checkpoint(self) -> Tuple[Dict[str, np.ndarray], Dict[str, object]]:
        """``(arrays, meta)`` of ``checkpoint.npz`` (:func:`load_npz_checkpoint`)."""
        return load_npz_checkpoint(self.checkpoint, ("step", "n_frames", "n_atoms", "engine"))

    def truncate(self, n_frames: int, step: int) -> None:
        """Drop whatever was written after the checkpoint (``n_frames`` frames, log rows up to
        ``step``): a resumed run neither loses nor duplicates a frame."""
        _truncate(self.frames, n_frames * self.n_atoms * 3 * _FLOAT32_BYTES)
        _truncate(self.cells, n_frames * 9 * _FLOAT64_BYTES)
        write_log(self.log, [r for r in read_log(self.log) if int(r["step"]) <= step])
        if self.write_extxyz and self.extxyz.exists():
            import ase.io

            frames = ase.io.read(self.extxyz, ":", format="extxyz")
            if len(frames) > n_frames:
                atomic_write_extxyz(self.extxyz, frames[:n_frames])

    def append_frame(self, positions: np.ndarray, cell: Optional[np.ndarray], numbers: np.ndarray,
                     step: int, energy: float) -> None:
        """Append positions ``[N, 3]`` A (and cell ``[3, 3]`` A; the extxyz frame with its
        ``numbers``, ``step`` and ``energy`` eV)."""
        with open(self.frames, "ab") as f:
            f.write(np.ascontiguousarray(positions, dtype=np.float32).tobytes())
        if self.periodic:
            with open(self.cells, "ab") as f:
                f.write(np.ascontiguousarray(cell, dtype=np.float64).tobytes())
        if self.write_extxyz:
            import ase.io
            from ase import Atoms

            frame = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=self.periodic)
            frame.info.update(step=step, energy=energy)
            with open(self.extxyz, "a") as f:
                ase.io.write(f, frame, format="extxyz")

    def append_row(self, row: Mapping[str, object]) -> None:
        """Append one log row (flushed and fsynced: the checkpoint written next may count it)."""
        with open(self.log, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS, lineterminator="\n").writerow(row)  # as the rewrite on resume
            f.flush()
            os.fsync(f.fileno())

    def read_frames(self) -> np.ndarray:
        """``[n_frames, N, 3]`` float32 A."""
        return read_frames(self.out, self.n_atoms)

    def write_outputs(self, md_topology, final) -> Dict[str, Path]:
        """``topology.pdb`` (first frame), ``final.pdb``, ``trajectory.dcd`` and
        ``final.extxyz`` (``final``: an ase.Atoms of the last structure, A); returns them and
        the log by name."""
        import mdtraj

        files: Dict[str, Path] = {}
        frames = self.read_frames()
        first = mdtraj.Trajectory(frames[:1] * ANGSTROM_TO_NM, md_topology)
        last = mdtraj.Trajectory(frames[-1:] * ANGSTROM_TO_NM, md_topology)
        if self.periodic:
            for t in (first, last):
                t.unitcell_vectors = final.cell.array[None] * ANGSTROM_TO_NM
        for name, t in (("topology", first), ("final", last)):
            files[name] = self.out / f"{name}.pdb"
            with atomic_path(files[name]) as tmp:
                t.save_pdb(str(tmp))
        files["trajectory"] = write_trajectory(self.out, md_topology, self.n_atoms, self.periodic)
        files["final_extxyz"] = self.out / "final.extxyz"
        atomic_write_extxyz(files["final_extxyz"], [final])
        files["log"] = self.log
        return files
