"""Small random models and structures shared by the calculator tests (imported by name, as
tests/mlff/model_mixins.py is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from mlff.io import save_model
from mlff.models.mace import MACE, MACEConfig
from mlff.models.potential import Potential

ELEMENTS = (1, 6, 7, 8)
E0S = (-13.6, -1030.0, -1485.0, -2040.0)


def small_potential(ensemble_size: int = 1, dtype: str = "float64", seed: int = 0) -> Potential:
    """A tiny random MACE (H, C, N, O; cutoff 4 A) in eval mode."""
    torch.manual_seed(seed)
    config = MACEConfig(
        elements=ELEMENTS, channels=8, max_L=1, max_ell=2, correlation=2, r_cut=4.0,
        num_interactions=2, num_bessel=6, radial_mlp=(16, 16), readout_mlp=8,
        avg_num_neighbors=6.0, e0s=E0S, dtype=dtype, ensemble_size=ensemble_size,
    )
    return Potential(MACE(config)).eval()


def saved_model(tmp_path: Path, ensemble_size: int = 1, dtype: str = "float64") -> Path:
    path = Path(tmp_path) / f"model_m{ensemble_size}_{dtype}.pt"
    save_model(small_potential(ensemble_size, dtype), path)
    return path


def rattled(name: str = "CH3CH2OH", seed: int = 0, sigma: float = 0.05) -> Atoms:
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(0, sigma, atoms.positions.shape)
    return atoms


#: A triclinic cell in OpenMM's reduced form (lower triangular, small off-diagonals), A.
OPENMM_CELL = np.array([[5.6, 0.0, 0.0], [0.4, 5.5, 0.0], [-0.3, 0.5, 5.4]])


def water_box(seed: int = 0, n_molecules: int = 4, box: float = 5.5, cell=None) -> Atoms:
    """Water molecules in a periodic cell smaller than twice the cutoff (slightly triclinic and
    random unless ``cell`` [3, 3] (A) is given)."""
    rng = np.random.default_rng(seed)
    if cell is None:
        cell = np.eye(3) * box + rng.normal(0, 0.2, (3, 3))
    cell = np.asarray(cell, dtype=float)
    atoms = Atoms(cell=cell, pbc=True)
    while len(atoms) < 3 * n_molecules:
        w = molecule("H2O")
        w.positions += rng.uniform(0, 1, 3) @ cell
        trial = atoms + w
        if len(atoms) == 0 or trial.get_all_distances(mic=True)[-3:, :-3].min() > 1.8:
            atoms = trial
    atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
    return atoms
