"""Label structures with a real quantum-chemistry method: GFN2-xTB (or GFN1-xTB) via tblite.

``label_file(IN, OUT)`` reads every frame ase.io can read from IN, computes energy and forces
(and stress for periodic frames) with tblite's ASE calculator in ``n_workers`` processes, and
writes an extxyz file OUT whose frames carry:

- ``info[energy_key]`` (eV), ``arrays[forces_key]`` (eV/A), ``info[stress_key]`` (periodic only,
  Voigt xx yy zz yz xz xy, eV/A^3, ASE sign);
- ``arrays[charges_key]``: the method's atomic (Mulliken) charges (e); ``info[dipole_key]``
  (aperiodic only): its dipole moment (e A), targets of learned-charge models;
- ``info["label_index"]``: the frame's index in IN; ``info["label_method"]``,
  ``info["label_software"]``, ``info["label_settings"]``: what produced the numbers.

Frames may set ``info["charge"]`` and ``info["multiplicity"]`` (defaults 0 and the lowest
possible). Frames whose SCF fails are reported and skipped, never silently relabelled.

Nothing is lost on a kill: labelled chunks go to ``OUT.partial/`` as separate files, each written
to a temporary name and renamed; a rerun with the same input and settings skips every chunk
already there; OUT itself appears (atomically) only when all chunks are done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from ase import Atoms

from mlff.atomic import atomic_write_extxyz, atomic_write_text
from mlff.data.label_settings import METHODS, LabelSettings  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)


def _software_versions() -> str:
    from importlib.metadata import version

    return f"tblite {version('tblite')}; ase {version('ase')}"


def _default_multiplicity(atoms: Atoms, charge: int) -> int:
    n_electrons = int(atoms.numbers.sum()) - charge
    return 1 if n_electrons % 2 == 0 else 2


def make_calculator(settings: LabelSettings, charge: int = 0, multiplicity: int = 1):
    """tblite's ASE calculator for ``settings``."""
    from tblite.ase import TBLite

    return TBLite(
        method=settings.method,
        accuracy=settings.accuracy,
        electronic_temperature=settings.electronic_temperature,
        max_iterations=settings.max_iterations,
        charge=charge,
        multiplicity=multiplicity,
        verbosity=0,
    )


def label_atoms(atoms: Atoms, settings: LabelSettings) -> Atoms:
    """Return a labelled copy of ``atoms`` (raises RuntimeError if the SCF fails)."""
    charge = int(atoms.info.get("charge", 0))
    multiplicity = int(atoms.info.get("multiplicity", _default_multiplicity(atoms, charge)))
    work = atoms.copy()
    work.calc = make_calculator(settings, charge, multiplicity)
    try:
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces(), dtype=np.float64)
        stress = np.array(work.get_stress(voigt=True)) if work.pbc.any() else None
        charges = np.array(work.get_charges(), dtype=np.float64)
        dipole = None if work.pbc.any() else np.array(work.get_dipole_moment(), dtype=np.float64)
    except Exception as exc:  # tblite raises plain RuntimeError/TBLiteRuntimeError on SCF failure
        raise RuntimeError(f"{settings.method} failed: {exc}") from exc
    out = atoms.copy()
    out.calc = None
    out.info[settings.energy_key] = energy
    out.arrays[settings.forces_key] = forces
    if stress is not None:
        out.info[settings.stress_key] = stress
    out.arrays[settings.charges_key] = charges
    if dipole is not None:
        out.info[settings.dipole_key] = dipole
    out.info["label_method"] = settings.method
    out.info["label_software"] = _software_versions()
    out.info["label_settings"] = json.dumps(
        {
            "accuracy": settings.accuracy,
            "electronic_temperature_K": settings.electronic_temperature,
            "charge": charge,
            "multiplicity": multiplicity,
        },
        sort_keys=True,
    )
    return out


# --- worker side ---------------------------------------------------------------------------

_WORKER_SETTINGS: Optional[LabelSettings] = None


def _init_worker(settings: LabelSettings) -> None:
    # One OpenMP thread per process: the parallelism is across frames.
    os.environ["OMP_NUM_THREADS"] = "1"
    global _WORKER_SETTINGS
    _WORKER_SETTINGS = settings


def _label_chunk(task: Tuple[int, List[Atoms]]) -> Tuple[int, List[Atoms], List[Tuple[int, str]]]:
    start, frames = task
    assert _WORKER_SETTINGS is not None
    done: List[Atoms] = []
    failed: List[Tuple[int, str]] = []
    for k, atoms in enumerate(frames):
        index = start + k
        try:
            labelled = label_atoms(atoms, _WORKER_SETTINGS)
        except RuntimeError as exc:
            failed.append((index, str(exc)))
            continue
        labelled.info["label_index"] = index
        done.append(labelled)
    return start, done, failed


# --- driver ---------------------------------------------------------------------------------


def _hash_file(path: Path) -> str:
    from mlff.atomic import file_sha256

    return file_sha256(path)


def _read_chunk(chunk: Path, marker: Path) -> List[Atoms]:
    """The frames of a finished chunk (none when all its frames failed).

    Raises:
        CheckpointError: the chunk file or its marker is damaged, with the fix (delete both,
            so that a rerun labels those frames again).
    """
    import ase.io

    from mlff.errors import CheckpointError
    from mlff.structure_files import first_line

    try:
        json.loads(marker.read_text())
        if not chunk.exists() or chunk.stat().st_size == 0:
            return []
        return list(ase.io.read(chunk, index=":", format="extxyz"))
    except Exception as exc:  # json, XYZError, ValueError, ... of a damaged file
        raise CheckpointError(
            f"the labelled chunk {chunk} is damaged ({first_line(exc)[:300]}); delete it and "
            f"{marker.name}, then rerun the same command: those frames are labelled again") from exc


@dataclass
class LabelReport:
    """What :func:`label_file` did."""

    output: str
    n_input: int
    n_labelled: int
    n_skipped_already_done: int
    failed: List[Tuple[int, str]] = field(default_factory=list)


def label_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    settings: LabelSettings = LabelSettings(),
    n_workers: int = 2,
    chunk_size: int = 64,
    progress: bool = True,
) -> LabelReport:
    """Label every frame of ``input_path`` and write ``output_path`` (extxyz); resumable.

    Args:
        input_path: any file ase.io reads (extxyz, xyz, pdb, traj, ...).
        output_path: extxyz file to create; ``output_path + ".partial/"`` holds work in progress.
        settings: method and output keys.
        n_workers: processes (each single-threaded).
        chunk_size: frames per checkpointed chunk.
        progress: show a tqdm progress bar.

    Raises:
        InputError: an empty or unreadable input. OutputError: the output cannot be written.
        RunLockedError: another process labels into ``output_path``.
        CheckpointError: a damaged chunk of the partial work (with the fix).
        ResumeMismatchError: the partial work is for another input or other settings.
    """
    from mlff.atomic import check_writable
    from mlff.run_lock import LOCK_NAME, run_lock

    input_path, output_path = Path(input_path), Path(output_path)
    check_writable(output_path.parent, "output folder")
    # one labelling run at a time per output: its lock file sits next to it
    with run_lock(output_path.parent, "mlff label", f".{output_path.name}{LOCK_NAME}"):
        return _label_file(input_path, output_path, settings, n_workers, chunk_size, progress)


def _label_file(input_path: Path, output_path: Path, settings: LabelSettings, n_workers: int,
                chunk_size: int, progress: bool) -> LabelReport:
    """:func:`label_file` holding the output's run lock."""
    import ase.io
    import multiprocessing as mp

    from tqdm.auto import tqdm

    from mlff.errors import ResumeMismatchError
    from mlff.structure_files import read_structures

    frames = read_structures(input_path, what="input file")
    n = len(frames)
    identity = {
        "input_sha256": _hash_file(input_path),
        "n_frames": n,
        "chunk_size": chunk_size,
        "settings": asdict(settings),
    }
    partial = output_path.with_name(output_path.name + ".partial")

    if output_path.exists():
        try:
            existing = ase.io.read(output_path, index=":")
        except Exception:  # unreadable: certainly not our finished output
            existing = []
        meta = existing[0].info.get("label_input_sha256") if existing else None
        if existing and meta == identity["input_sha256"] and all(
            f.info.get("label_method") == settings.method for f in existing
        ):
            logger.info("%s is already labelled; nothing to do", output_path)
            return LabelReport(str(output_path), n, 0, len(existing))
        raise FileExistsError(
            f"{output_path} exists but was not produced from {input_path} with {settings.method}; "
            "remove it or choose another output path"
        )

    partial.mkdir(parents=True, exist_ok=True)
    meta_path = partial / "identity.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old != identity:
            raise ResumeMismatchError(
                f"{partial} holds work for a different input or settings ({old['settings']}); "
                "delete that folder to start over"
            )
    else:
        atomic_write_text(meta_path, json.dumps(identity, indent=1, sort_keys=True))

    starts = list(range(0, n, chunk_size))
    chunk_file: Dict[int, Path] = {s: partial / f"chunk_{s:08d}.extxyz" for s in starts}
    fail_file: Dict[int, Path] = {s: partial / f"chunk_{s:08d}.failed.json" for s in starts}
    todo = [s for s in starts if not fail_file[s].exists()]
    done_chunks = {s: _read_chunk(chunk_file[s], fail_file[s]) for s in starts if s not in todo}
    n_skipped = n - sum(min(chunk_size, n - s) for s in todo)
    tasks = [(s, frames[s : s + chunk_size]) for s in todo]

    bar = tqdm(total=n, initial=n_skipped, desc=f"labelling {settings.method}", unit="frame",
               disable=not progress)
    if tasks:
        ctx = mp.get_context("spawn")
        workers = max(1, min(n_workers, len(tasks)))
        if workers == 1:
            _init_worker(settings)
            results = map(_label_chunk, tasks)
            pool = None
        else:
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(settings,))
            results = pool.imap_unordered(_label_chunk, tasks)
        try:
            for start, done, failed in results:
                for frame in done:
                    frame.info["label_input_sha256"] = identity["input_sha256"]
                atomic_write_extxyz(chunk_file[start], done)
                # The .failed.json marker is written last: it is what marks a chunk complete.
                atomic_write_text(fail_file[start], json.dumps(failed))
                bar.update(min(chunk_size, n - start))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    bar.close()

    labelled: List[Atoms] = []
    failures: List[Tuple[int, str]] = []
    for s in starts:
        failures += [tuple(x) for x in json.loads(fail_file[s].read_text())]
        labelled += done_chunks[s] if s in done_chunks else _read_chunk(chunk_file[s], fail_file[s])
    for index, why in failures:
        logger.warning("frame %d of %s was not labelled: %s", index, input_path, why)
    atomic_write_extxyz(output_path, labelled)
    shutil.rmtree(partial)
    return LabelReport(str(output_path), n, len(labelled) - n_skipped, n_skipped, failures)
