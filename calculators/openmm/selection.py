"""Which particles of an OpenMM System the model sees, and their species indices."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import openmm.app
from torch import Tensor

from mlff.graph import species_of
from mlff.models.potential import Potential

#: The atoms of a whole System: an OpenMM Topology, an ASE Atoms, or one atomic number a particle.
ElementsLike = Union[openmm.app.Topology, Sequence[int], "ase.Atoms"]  # noqa: F821


def atomic_numbers_of(elements: ElementsLike, ml_atoms: Optional[Iterable[int]] = None) -> List[int]:
    """Atomic numbers ``[P]`` of every particle.

    Particles outside ``ml_atoms`` may lack an element (virtual sites, extra particles, waters
    of an MM region); 0 is recorded for them and never read.

    Raises:
        ValueError: an ML atom of a Topology without an element.
    """
    if isinstance(elements, openmm.app.Topology):
        wanted = None if ml_atoms is None else set(int(a) for a in ml_atoms)
        numbers = []
        for atom in elements.atoms():
            if atom.element is not None:
                numbers.append(int(atom.element.atomic_number))
            elif wanted is None or atom.index in wanted:
                raise ValueError(
                    f"atom {atom.index} ({atom.name} in {atom.residue.name}) has no element; "
                    "exclude it from the ML atoms with `atoms=`"
                )
            else:
                numbers.append(0)
        return numbers
    if hasattr(elements, "numbers"):  # ase.Atoms
        return [int(z) for z in elements.numbers]
    return [int(z) for z in elements]


def masses_of(elements: ElementsLike) -> np.ndarray:
    """Particle masses ``[P]`` (amu) from a Topology's elements, an Atoms or atomic numbers
    (0 for particles without an element)."""
    if isinstance(elements, openmm.app.Topology):
        import openmm.unit as u

        return np.array([0.0 if a.element is None else a.element.mass.value_in_unit(u.dalton)
                         for a in elements.atoms()])
    if hasattr(elements, "get_masses"):
        return np.asarray(elements.get_masses(), dtype=np.float64)
    from ase.data import atomic_masses

    return np.array([atomic_masses[int(z)] for z in elements], dtype=np.float64)


def ml_indices(atoms: Optional[Iterable[int]], n_particles: int) -> Optional[List[int]]:
    """Validated ML atom indices, or ``None`` for all particles.

    Raises:
        ValueError: empty, duplicated or out-of-range indices.
    """
    if atoms is None:
        return None
    idx = [int(a) for a in atoms]
    if len(idx) == 0:
        raise ValueError("atoms is empty; give the indices of the ML atoms (or None for all)")
    if len(set(idx)) != len(idx):
        raise ValueError("atoms contains duplicate indices")
    bad = [a for a in idx if a < 0 or a >= n_particles]
    if bad:
        raise ValueError(f"atom indices {bad[:10]} out of range for {n_particles} particles")
    if idx == list(range(n_particles)):
        return None
    return idx


def ml_selection(
    elements: ElementsLike, atoms: Optional[Iterable[int]], potential: Potential
) -> Tuple[int, Optional[List[int]], List[int], Tensor]:
    """Number of particles, ML atom indices (None: all), the ML atoms' atomic numbers and
    species indices ``[n_ml]`` (unknown elements: InputError naming them)."""
    numbers = atomic_numbers_of(elements, atoms)
    ml = ml_indices(atoms, len(numbers))
    ml_numbers = numbers if ml is None else [numbers[i] for i in ml]
    return len(numbers), ml, ml_numbers, species_of(ml_numbers, potential.elements)
