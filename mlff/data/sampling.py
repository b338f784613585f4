"""Cheap, diverse configurations for training data: MD at several temperatures, normal-mode
sampling and random displacements, for molecules from ``ase.build.molecule`` or from files.

Every sampler returns a list of :class:`ase.Atoms` *without* labels (positions only, plus
``info`` recording how the frame was made: ``sample_method``, ``temperature_K``, ``molecule``).
Labels come afterwards from :mod:`mlff.data.label`, so sampling and labelling can use
different methods. Frames whose covalent bonding graph differs from the starting structure
(dissociation, proton transfer) are rejected: a potential for intact molecules should not
learn from fragments by accident.

Units: Angstrom, eV, K, fs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from mlff.units import FS_ASE, FS_TO_PS, KB_EV_PER_K

logger = logging.getLogger(__name__)

#: Sampling frames are written with these info keys.
INFO_METHOD = "sample_method"
INFO_TEMPERATURE = "temperature_K"
INFO_MOLECULE = "molecule"


def load_molecule(spec: str) -> List[Atoms]:
    """Structures for ``spec``: a name known to ``ase.build.molecule`` or a file ase.io reads
    (xyz, extxyz, pdb, ...; every frame of a multi-frame file is returned).

    Raises:
        ValueError: when ``spec`` is neither an existing file nor a known molecule name.
    """
    from ase.build import molecule
    from ase.collections import g2

    from mlff.structure_files import read_structures

    path = Path(spec)
    if path.exists():
        frames = read_structures(path)
        for frame in frames:
            frame.info.setdefault(INFO_MOLECULE, path.stem)
        return list(frames)
    try:
        atoms = molecule(spec)
    except KeyError:
        raise ValueError(
            f"{spec!r} is neither a file nor a molecule name known to ase.build.molecule; "
            f"give a path to an xyz/pdb file or one of e.g. {', '.join(g2.names[:8])}, ..."
        ) from None
    atoms.info[INFO_MOLECULE] = spec
    return [atoms]


#: A pair is a bond in a relaxed structure below this multiple of the summed covalent radii.
BOND_SCALE = 1.25
#: A reference bond counts as broken beyond this multiple (room for thermal stretching: H2 is
#: 0.74 A at rest, 0.78 A at 1.25 x radii, and stretches past that at 300 K already).
BREAK_SCALE = 1.5
#: A new bond counts as formed below this multiple (well under 1,3-distances, which in five-
#: membered rings come within 1.5 x radii at 1000 K).
FORM_SCALE = 1.1


def bond_graph(atoms: Atoms, scale: float = BOND_SCALE) -> frozenset:
    """Covalent bonds as a frozenset of sorted index pairs: i-j bonded when their distance is
    below ``scale`` times the sum of ASE's natural (covalent) radii."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    cutoffs = natural_cutoffs(atoms, mult=scale)
    i, j = neighbor_list("ij", atoms, cutoffs, self_interaction=False)
    return frozenset((int(a), int(b)) for a, b in zip(i, j) if a < b)


def bonding_preserved(reference: frozenset, atoms: Atoms) -> bool:
    """True when no bond of ``reference`` (from :func:`bond_graph` of the starting structure) is
    stretched beyond ``BREAK_SCALE`` and no other pair is closer than ``FORM_SCALE`` times the
    summed covalent radii: dissociation and proton transfer are caught, thermal motion is not."""
    intact = bond_graph(atoms, BREAK_SCALE)
    formed = bond_graph(atoms, FORM_SCALE)
    return reference <= intact and formed <= reference


def _snapshot(atoms: Atoms, method: str, temperature: Optional[float], molecule: str) -> Atoms:
    frame = Atoms(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.copy(),
        pbc=atoms.pbc.copy(),
    )
    frame.info[INFO_METHOD] = method
    if temperature is not None:
        frame.info[INFO_TEMPERATURE] = float(temperature)
    frame.info[INFO_MOLECULE] = molecule
    for key in ("charge", "multiplicity"):
        if key in atoms.info:
            frame.info[key] = atoms.info[key]
    return frame


def relax(atoms: Atoms, calc: Calculator, fmax: float = 0.01, steps: int = 500) -> Atoms:
    """Relax positions with ASE's BFGS; returns a relaxed copy (input untouched)."""
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = calc
    BFGS(work, logfile=None).run(fmax=fmax, steps=steps)
    work.calc = None
    return work


def md_frames(
    atoms: Atoms,
    calc: Calculator,
    temperature_K: float,
    n_frames: int,
    stride: int = 40,
    timestep_fs: float = 0.5,
    friction_per_ps: float = 10.0,
    equilibration_steps: int = 400,
    seed: int = 0,
    max_restarts: int = 3,
) -> List[Atoms]:
    """Frames from Langevin MD (ASE) at ``temperature_K``, one every ``stride`` steps of
    ``timestep_fs``, after ``equilibration_steps``; ``friction_per_ps`` is the Langevin friction
    (1/ps, the unit the MD workflows use).

    If the bonding graph changes, the trajectory restarts from ``atoms`` with fresh velocities
    (at most ``max_restarts`` times); rejected frames are never returned.
    """
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    rng = np.random.default_rng(seed)
    reference = bond_graph(atoms)
    name = str(atoms.info.get(INFO_MOLECULE, atoms.get_chemical_formula()))
    frames: List[Atoms] = []
    restarts = 0
    while len(frames) < n_frames and restarts <= max_restarts:
        work = atoms.copy()
        work.calc = calc
        thermalize_momenta(work, temperature_K, rng=rng)
        Stationary(work)
        ZeroRotation(work)
        dyn = Langevin(
            work,
            timestep=timestep_fs * FS_ASE,
            temperature_K=temperature_K,
            friction=friction_per_ps * FS_TO_PS / FS_ASE,
            fixcm=False,
            rng=rng,
        )
        dyn.run(equilibration_steps)
        broken = False
        while len(frames) < n_frames:
            dyn.run(stride)
            if not bonding_preserved(reference, work):
                broken = True
                break
            frames.append(_snapshot(work, "md", temperature_K, name))
        if broken:
            restarts += 1
            logger.info("%s: bonding changed at %.0f K; restart %d", name, temperature_K, restarts)
    return frames


def hessian(atoms: Atoms, calc: Calculator, delta_A: float = 0.005) -> np.ndarray:
    """Cartesian Hessian ``[3N, 3N]`` (eV/A^2) by central differences of the forces, with
    displacements of ``delta_A`` (A).

    Written here (6N force calls) rather than through ``ase.vibrations`` to avoid its on-disk
    cache, which collides when several processes sample at once.
    """
    work = atoms.copy()
    work.calc = calc
    n = len(work)
    h = np.zeros((3 * n, 3 * n))
    pos0 = work.positions.copy()
    for a in range(n):
        for d in range(3):
            plus = pos0.copy()
            plus[a, d] += delta_A
            work.positions = plus
            f_plus = work.get_forces().reshape(-1)
            minus = pos0.copy()
            minus[a, d] -= delta_A
            work.positions = minus
            f_minus = work.get_forces().reshape(-1)
            h[3 * a + d] = -(f_plus - f_minus) / (2 * delta_A)
    return 0.5 * (h + h.T)


def normal_mode_frames(
    atoms: Atoms,
    calc: Calculator,
    temperature_K: float,
    n_frames: int,
    seed: int = 0,
    min_wavenumber_cm: float = 100.0,
    hessian_matrix: Optional[np.ndarray] = None,
) -> List[Atoms]:
    """Classical Boltzmann samples of the harmonic approximation around ``atoms`` (which should
    be a minimum): each normal coordinate q_k ~ N(0, kT / omega_k^2) in mass-weighted units.

    The six (five for linear molecules) rigid-body modes are dropped; soft modes are stiffened to
    ``min_wavenumber_cm`` so torsions do not produce unphysical displacements.
    """
    from ase.units import invcm

    rng = np.random.default_rng(seed)
    h = hessian(atoms, calc) if hessian_matrix is None else hessian_matrix
    masses = np.repeat(atoms.get_masses(), 3)
    inv_sqrt_m = 1.0 / np.sqrt(masses)
    mw = h * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    evals, evecs = np.linalg.eigh(mw)
    n_rigid = 5 if _is_linear(atoms) else 6
    n_rigid = min(n_rigid, len(evals) - 1)
    evals, evecs = evals[n_rigid:], evecs[:, n_rigid:]
    # Eigenvalues are omega^2 in ASE units (eV / (A^2 amu) = 1 / ASE-time^2). Stiffen soft (or
    # negative) modes to the floor: hbar * omega_floor = min_wavenumber_cm * invcm (eV).
    from ase.units import J, _hbar, second

    hbar = _hbar * J * second  # eV * ASE-time
    floor_energy = min_wavenumber_cm * invcm
    floor_omega2 = (floor_energy / hbar) ** 2  # (1/ASE time)^2 == eV/(A^2 amu)
    omega2 = np.maximum(evals, floor_omega2)
    kt = KB_EV_PER_K * temperature_K

    def propose() -> np.ndarray:
        q = rng.normal(size=omega2.shape) * np.sqrt(kt / omega2)
        return ((evecs @ q) * inv_sqrt_m).reshape(-1, 3)

    return _displaced_frames(atoms, propose, n_frames, "normal_mode", temperature_K)


def random_displacement_frames(
    atoms: Atoms, sigma_A: float, n_frames: int, seed: int = 0
) -> List[Atoms]:
    """Frames with independent Gaussian displacements of width ``sigma_A`` (A) on every atom,
    rejected when the bonding graph changes."""
    rng = np.random.default_rng(seed)
    return _displaced_frames(
        atoms, lambda: rng.normal(scale=sigma_A, size=atoms.positions.shape), n_frames,
        "random_displacement", None,
    )


def _displaced_frames(
    atoms: Atoms,
    propose: Callable[[], np.ndarray],
    n_frames: int,
    method: str,
    temperature: Optional[float],
) -> List[Atoms]:
    """Up to ``n_frames`` copies of ``atoms`` displaced by ``propose()`` ``[N, 3]`` (A), keeping
    only those with the starting bonding graph (at most 20 proposals per frame)."""
    name = str(atoms.info.get(INFO_MOLECULE, atoms.get_chemical_formula()))
    reference = bond_graph(atoms)
    frames: List[Atoms] = []
    attempts = 0
    while len(frames) < n_frames and attempts < 20 * n_frames:
        attempts += 1
        trial = atoms.copy()
        trial.positions = atoms.positions + propose()
        if bonding_preserved(reference, trial):
            frames.append(_snapshot(trial, method, temperature, name))
    return frames


def _is_linear(atoms: Atoms, tol: float = 1e-3) -> bool:
    if len(atoms) <= 2:
        return True
    centred = atoms.positions - atoms.positions.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return bool(s[1] < tol * max(s[0], 1e-12))


def sample_molecule(
    atoms: Atoms,
    calc_factory: Callable[[], Calculator],
    md_temperatures: Sequence[float] = (300.0, 500.0, 750.0, 1000.0),
    md_frames_per_temperature: int = 20,
    nm_temperatures: Sequence[float] = (300.0, 600.0, 1000.0),
    nm_frames_per_temperature: int = 10,
    stride: int = 40,
    timestep_fs: float = 0.5,
    seed: int = 0,
    relax_first: bool = True,
) -> List[Atoms]:
    """The standard recipe for one molecule: relax, then MD at each of ``md_temperatures``
    and normal-mode sampling at each of ``nm_temperatures``. Returns unlabelled frames."""
    calc = calc_factory()
    start = relax(atoms, calc) if relax_first else atoms.copy()
    start.info = dict(atoms.info)
    frames: List[Atoms] = []
    for k, temperature in enumerate(md_temperatures):
        frames += md_frames(
            start,
            calc,
            temperature,
            md_frames_per_temperature,
            stride=stride,
            timestep_fs=timestep_fs,
            seed=seed * 1000 + k,
        )
    if nm_frames_per_temperature > 0 and len(start) >= 2:
        h = hessian(start, calc)
        for k, temperature in enumerate(nm_temperatures):
            frames += normal_mode_frames(
                start,
                calc,
                temperature,
                nm_frames_per_temperature,
                seed=seed * 1000 + 100 + k,
                hessian_matrix=h,
            )
    return frames
