"""Labelled structures -> graphs: reading (extxyz or anything ase.io reads), validation with
errors that name the file and frame, conversion to :mod:`mlff.graph` dicts, seeded splits and
batching for training.

Targets are read from configurable keys (:class:`DataKeys`): for ``energy_xtb`` / ``forces_xtb``
the values live in ``atoms.info`` / ``atoms.arrays``; the standard names ``energy`` / ``forces``
/ ``stress`` are also looked up in the results of the calculator ASE attaches when it reads an
extxyz file. Stress may be given as Voigt 6-vector or 3x3 (eV/A^3, ASE sign); a virial (eV)
is converted to stress with ``stress = -virial / volume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from mlff import graph as G
from mlff.graph import Graph, InputError, atoms_to_graph


@dataclass(frozen=True)
class DataKeys:
    """Where targets live in each frame. ``None`` disables a target."""

    energy: Optional[str] = "energy"
    forces: Optional[str] = "forces"
    stress: Optional[str] = "stress"
    virial: Optional[str] = "virial"
    weight: Optional[str] = "config_weight"
    #: targets of learned-charge models (``long_range`` charges): per-atom charges (arrays) and
    #: the dipole (info, e A); None: not read, and the graphs carry no such keys
    charges: Optional[str] = None
    dipole: Optional[str] = None

    @classmethod
    def xtb(cls) -> "DataKeys":
        """Keys written by ``mlff label`` (``energy_xtb``, ``forces_xtb``, ``stress_xtb``)."""
        return cls(energy="energy_xtb", forces="forces_xtb", stress="stress_xtb", virial=None)


def _calc_result(atoms: Atoms, key: str):
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def get_energy(atoms: Atoms, key: Optional[str]) -> Optional[float]:
    """Energy (eV) under ``key`` in info or the attached calculator's results, else None."""
    if key is None:
        return None
    value = atoms.info.get(key, _calc_result(atoms, key))
    return None if value is None else float(value)


def get_forces(atoms: Atoms, key: Optional[str]) -> Optional[np.ndarray]:
    """Forces ``[N, 3]`` (eV/A) under ``key`` in arrays or calculator results, else None."""
    if key is None:
        return None
    value = atoms.arrays.get(key)
    if value is None:
        value = _calc_result(atoms, key)
    return None if value is None else np.asarray(value, dtype=np.float64)


def get_stress(atoms: Atoms, keys: DataKeys) -> Optional[np.ndarray]:
    """Stress ``[3, 3]`` (eV/A^3, ASE sign) from the stress key or, failing that, the virial."""
    from ase.stress import voigt_6_to_full_3x3_stress

    if keys.stress is not None:
        value = atoms.info.get(keys.stress, _calc_result(atoms, keys.stress))
        if value is not None:
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape == (6,):
                return voigt_6_to_full_3x3_stress(arr)
            return arr.reshape(3, 3) if arr.size == 9 else arr
    if keys.virial is not None and keys.virial in atoms.info:
        virial = np.asarray(atoms.info[keys.virial], dtype=np.float64)
        if virial.shape == (6,):
            virial = voigt_6_to_full_3x3_stress(virial)
        return -virial.reshape(3, 3) / atoms.get_volume()
    return None


def validate_frame(
    atoms: Atoms,
    keys: DataKeys,
    where: str,
    elements: Optional[Sequence[int]] = None,
    require: Sequence[str] = (),
) -> None:
    """Check one frame; raise :class:`InputError` naming ``where`` (file and frame).

    Checks: finite positions and cell, elements known to the model, requested targets present,
    target shapes, finite target values.
    """
    pos = torch.from_numpy(np.asarray(atoms.positions, dtype=np.float64))
    G.validate_structure(
        pos, torch.from_numpy(atoms.cell.array.copy()), torch.from_numpy(atoms.pbc.copy()), where=where
    )
    if elements is not None:
        unknown = sorted(set(int(z) for z in atoms.numbers) - set(int(z) for z in elements))
        if unknown:
            raise InputError(
                f"{where}: elements {[chemical_symbols[z] for z in unknown]} are not in the model, "
                f"which knows {[chemical_symbols[int(z)] for z in elements]}; remove these frames "
                "or train a model that includes them"
            )
    energy = get_energy(atoms, keys.energy)
    forces = get_forces(atoms, keys.forces)
    stress = get_stress(atoms, keys) if (keys.stress or keys.virial) else None
    present = {"energy": energy, "forces": forces, "stress": stress}
    for name in require:
        if present.get(name) is None:
            key = getattr(keys, name)
            info_keys = sorted(atoms.info.keys())
            array_keys = sorted(k for k in atoms.arrays.keys() if k not in ("numbers", "positions"))
            raise InputError(
                f"{where}: target {name!r} not found under key {key!r}; info keys are {info_keys}, "
                f"per-atom arrays are {array_keys}; set the right key (e.g. --{name}-key)"
            )
    if energy is not None and not np.isfinite(energy):
        raise InputError(f"{where}: energy under {keys.energy!r} is {energy}")
    if forces is not None:
        if forces.shape != (len(atoms), 3):
            raise InputError(
                f"{where}: forces under {keys.forces!r} have shape {list(forces.shape)}, "
                f"expected [{len(atoms)}, 3]"
            )
        if not np.isfinite(forces).all():
            raise InputError(f"{where}: forces under {keys.forces!r} contain NaN or inf")
    if stress is not None:
        if stress.shape != (3, 3):
            raise InputError(f"{where}: stress has shape {list(stress.shape)}, expected 6 or 3x3")
        if not np.isfinite(stress).all():
            raise InputError(f"{where}: stress contains NaN or inf")


def read_frames(path: Union[str, Path], index: str = ":") -> List[Atoms]:
    """Read frames with ase.io (format from the extension).

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: an empty or unreadable file (:func:`mlff.structure_files.read_structures`).
    """
    from mlff.structure_files import read_structures

    return read_structures(path, index, what="data file")


def labelled_graph(
    atoms: Atoms,
    r_cut: float,
    keys: DataKeys,
    elements: Optional[Sequence[int]] = None,
    dtype: torch.dtype = torch.float64,
    backend: str = "vesin",
) -> Graph:
    """One frame -> graph (:func:`mlff.graph.atoms_to_graph`) with targets: ``energy`` ``[1]``
    (eV), ``forces`` ``[N, 3]`` (eV/A), ``stress`` ``[1, 3, 3]`` (eV/A^3) and the ``*weight``
    keys, all float64; missing targets get zeros and a zero ``*_weight``.

    Args:
        atoms: the structure. r_cut: neighbour cutoff (A).
        keys: where targets live.
        elements: the model's atomic numbers, in species-index order; sets ``species``.
        dtype: float dtype of positions and cell (targets are always float64).
    """
    g = atoms_to_graph(atoms, r_cut, elements, dtype, backend)
    f64 = torch.float64
    energy = get_energy(atoms, keys.energy)
    forces = get_forces(atoms, keys.forces)
    stress = get_stress(atoms, keys) if (keys.stress or keys.virial) else None
    n = len(atoms)
    g[G.ENERGY] = torch.tensor([energy if energy is not None else 0.0], dtype=f64)
    g[G.FORCES] = torch.tensor(forces if forces is not None else np.zeros((n, 3)), dtype=f64)
    g[G.STRESS] = torch.tensor(
        stress if stress is not None else np.zeros((3, 3)), dtype=f64
    ).unsqueeze(0)
    weight = atoms.info.get(keys.weight, 1.0) if keys.weight else 1.0
    g[G.WEIGHT] = torch.tensor([float(weight)], dtype=f64)
    g[G.ENERGY_WEIGHT] = torch.tensor([1.0 if energy is not None else 0.0], dtype=f64)
    g[G.FORCES_WEIGHT] = torch.tensor([1.0 if forces is not None else 0.0], dtype=f64)
    g[G.STRESS_WEIGHT] = torch.tensor([1.0 if stress is not None else 0.0], dtype=f64)
    if keys.charges is not None:
        charges = atoms.arrays.get(keys.charges)
        g[G.REF_CHARGES] = torch.tensor(charges if charges is not None else np.zeros(n), dtype=f64)
        g[G.CHARGES_WEIGHT] = torch.tensor([1.0 if charges is not None else 0.0], dtype=f64)
    if keys.dipole is not None:
        dipole = atoms.info.get(keys.dipole)
        g[G.REF_DIPOLE] = torch.tensor(dipole if dipole is not None else np.zeros(3), dtype=f64).view(1, 3)
        g[G.DIPOLE_WEIGHT] = torch.tensor([1.0 if dipole is not None else 0.0], dtype=f64)
    return g


class GraphDataset(torch.utils.data.Dataset):
    """Frames of one or more files as graphs, validated on load, built once and kept in memory.

    Args:
        paths: data files (extxyz or anything ase.io reads).
        r_cut: neighbour cutoff (A).
        keys: where targets live.
        elements: the model's atomic numbers (species order); default: all elements found.
        require: targets every frame must have (subset of "energy", "forces", "stress").
        dtype: float dtype of positions/cell.
    """

    def __init__(
        self,
        paths: Union[str, Path, Sequence[Union[str, Path]]],
        r_cut: float,
        keys: DataKeys = DataKeys(),
        elements: Optional[Sequence[int]] = None,
        require: Sequence[str] = ("energy", "forces"),
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.frames: List[Atoms] = []
        self.sources: List[Tuple[str, int]] = []
        for path in paths:
            frames = read_frames(path)
            for k, atoms in enumerate(frames):
                self.frames.append(atoms)
                self.sources.append((str(path), k))
        if elements is None:
            elements = sorted({int(z) for a in self.frames for z in a.numbers})
        self.elements = [int(z) for z in elements]
        for atoms, (path, k) in zip(self.frames, self.sources):
            validate_frame(atoms, keys, f"{path}, frame {k}", self.elements, require)
        self.graphs: List[Graph] = [
            labelled_graph(a, r_cut, keys, self.elements, dtype) for a in self.frames
        ]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> Graph:
        return self.graphs[index]


def random_split(
    n: int, fractions: Sequence[float], seed: int
) -> List[np.ndarray]:
    """Seeded random partition of ``range(n)`` by ``fractions`` (they must sum to 1)."""
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {list(fractions)}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum([0.0, *fractions]) * n).astype(int)
    return [np.sort(order[bounds[k] : bounds[k + 1]]) for k in range(len(fractions))]


def batches(
    dataset: Sequence[Graph], batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[Graph]:
    """Yield collated batches of ``batch_size`` graphs (last one may be smaller)."""
    order = np.arange(len(dataset))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(dataset))
    for start in range(0, len(order), batch_size):
        yield G.collate([dataset[int(k)] for k in order[start : start + batch_size]])

