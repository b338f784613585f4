"""Structures shared by the calculator tests, imported by name (``from calc_helpers import ...``,
also in subprocesses and in ``parametrize``); the models come from the factories of
``tests/conftest.py`` (fixtures ``small_potential`` and ``saved_model``).

Not a ``conftest.py``: every conftest module is named ``conftest``, so a second directory
conftest imported by name would shadow ``tests/md_workflows/conftest.py`` whenever pytest is
given both directories.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import molecule


def rattled(name: str = "CH3CH2OH", seed: int = 0, sigma: float = 0.05) -> Atoms:
    """``ase.build.molecule(name)`` with Gaussian noise of width ``sigma`` (A) on the positions."""
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
