"""Input structures for MD and relaxation: :func:`load_structure` and hydrogen mass
repartitioning from the topology's bonds (:func:`repartitioned_masses`).

Every structure comes with an OpenMM Topology that has bonds: a pdb keeps OpenMM's (standard
residues and CONECT records); other formats, and a pdb without any bond, get bonds guessed from
covalent radii (:func:`guess_bonds`). Units: Angstrom and amu.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Tuple

import numpy as np

if TYPE_CHECKING:
    import ase
    import openmm.app

log = logging.getLogger(__name__)

#: Two atoms are bonded when closer than this factor times the sum of their covalent radii
#: (ASE's ``natural_cutoffs`` per atom, so each radius is scaled by it).
BOND_TOLERANCE = 1.2
#: Cells with a smaller volume (A^3) count as no cell (non-periodic structure).
MIN_CELL_VOLUME_A3 = 1e-6
#: Repartitioning must leave every heavy atom at least this heavy (amu).
MIN_HEAVY_MASS_AMU = 1.0


def load_structure(path: str) -> Tuple["ase.Atoms", "openmm.app.Topology"]:
    """``(ase.Atoms, openmm.app.Topology)`` of a structure file.

    A pdb keeps its residues and bonds (OpenMM's PDBFile); other formats (ase.io) get one
    residue ``MOL``. Bonds are guessed from covalent radii (:func:`guess_bonds`) when the
    topology has none, so every structure has bonds. The Atoms is periodic when the file has a
    cell (CRYST1, extxyz Lattice) and non-periodic otherwise.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: an empty or unreadable file, or one without atoms.
    """
    import openmm.app as app

    from mlff.errors import InputError
    from mlff.structure_files import first_line, read_structures

    p = Path(path)
    if p.suffix.lower() == ".pdb":
        atoms = read_structures(p, index="-1", format="proteindatabank")[0]
        try:
            topology = app.PDBFile(str(p)).topology
        except Exception as exc:  # OpenMM's parser: IndexError, ValueError, KeyError, ...
            raise InputError(f"structure file {path} cannot be read as a PDB file by OpenMM "
                             f"({first_line(exc)}); check its ATOM/HETATM and CONECT records"
                             ) from exc
    else:
        atoms = read_structures(p, index="-1")[0]
        topology = app.Topology()
        res = topology.addResidue("MOL", topology.addChain())
        for k, z in enumerate(atoms.numbers):
            el = app.Element.getByAtomicNumber(int(z))
            topology.addAtom(f"{el.symbol}{k + 1}", el, res)
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.volume > MIN_CELL_VOLUME_A3
    if not periodic:
        atoms.pbc = False
        atoms.cell = None
    if topology.getNumBonds() == 0 and len(atoms) > 1:
        bonds = guess_bonds(atoms)
        top_atoms = list(topology.atoms())
        for a, b in bonds:
            topology.addBond(top_atoms[a], top_atoms[b])
        log.debug("%s: %d bonds guessed from covalent radii", path, len(bonds))
    return atoms, topology


def guess_bonds(atoms: "ase.Atoms") -> np.ndarray:
    """Bonds ``[n_bonds, 2]`` (atom indices, ``i < j``) from covalent radii.

    Heavy atoms bond to every heavy atom closer than :data:`BOND_TOLERANCE` times the sum of
    their covalent radii (periodic images included); a hydrogen bonds once, to its nearest
    heavy neighbour within that distance, else to its nearest neighbour.
    """
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j, d = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=BOND_TOLERANCE))
    keep = i != j  # an atom next to its own periodic image is not a bond
    i, j, d = i[keep], j[keep], d[keep]
    is_h = np.asarray(atoms.numbers) == 1
    heavy = ~is_h[i] & ~is_h[j]
    # hydrogens: sort by atom, heavy partners first, then distance; keep the first of each
    order = np.lexsort((d, is_h[j], i))
    order = order[is_h[i[order]]]
    first = order[np.unique(i[order], return_index=True)[1]]
    pairs = np.concatenate([np.stack([i[heavy], j[heavy]], 1), np.stack([i[first], j[first]], 1)])
    return np.unique(np.sort(pairs, axis=1), axis=0).reshape(-1, 2)


def repartitioned_masses(topology: "openmm.app.Topology", masses: np.ndarray,
                         hydrogen_mass_amu: float) -> np.ndarray:
    """Masses (amu, ``[N]``) with each hydrogen raised to ``hydrogen_mass_amu`` and the
    difference taken from the heavy atom it is bonded to in ``topology`` (``topology.bonds()``).
    The total mass is unchanged.

    Args:
        topology: N atoms with elements and bonds (from :func:`load_structure`).
        masses: ``[N]`` amu before repartitioning.
        hydrogen_mass_amu: the hydrogens' new mass.

    Raises:
        ValueError: a hydrogen bonded to no heavy atom, or a heavy atom left lighter than
            :data:`MIN_HEAVY_MASS_AMU`.
    """
    numbers = np.array([0 if a.element is None else a.element.atomic_number for a in topology.atoms()])
    masses = np.asarray(masses, dtype=np.float64).copy()
    is_h, is_heavy = numbers == 1, numbers > 1
    bonds = np.array([(b.atom1.index, b.atom2.index) for b in topology.bonds()], dtype=int)
    bonds = bonds.reshape(-1, 2)
    a, b = bonds[:, 0], bonds[:, 1]
    # (hydrogen, heavy atom) pairs, either order in the topology
    pairs = np.concatenate([bonds[is_h[a] & is_heavy[b]], bonds[is_h[b] & is_heavy[a]][:, ::-1]])
    hydrogens, first = np.unique(pairs[:, 0], return_index=True)
    lonely = np.setdiff1d(np.flatnonzero(is_h), hydrogens)
    if len(lonely):
        raise ValueError(f"hydrogen {int(lonely[0])} is bonded to no heavy atom; hmr needs bonded "
                         "hydrogens (drop --hmr and use a 0.5 fs time step)")
    delta = hydrogen_mass_amu - masses[hydrogens]
    masses[hydrogens] += delta
    np.subtract.at(masses, pairs[first, 1], delta)
    light = np.flatnonzero(is_heavy & (masses < MIN_HEAVY_MASS_AMU))
    if len(light):
        raise ValueError(f"hmr leaves heavy atom(s) {light.tolist()} lighter than "
                         f"{MIN_HEAVY_MASS_AMU:g} amu; lower hydrogen_mass_amu")
    return masses
