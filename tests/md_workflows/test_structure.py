"""Structures for MD: every structure gets a topology with bonds, and hydrogen mass
repartitioning follows the topology's bonds (not a distance guess)."""

import ase.io
import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
from ase import Atoms
from ase.build import molecule

from mlff.md_workflows.structure import guess_bonds, load_structure, repartitioned_masses

from conftest import ALANINE

H_MASS = 3.0


def _bonded(topology):
    return {frozenset((b.atom1.index, b.atom2.index)) for b in topology.bonds()}


def test_hmr_on_alanine_dipeptide_follows_the_pdb_bonds():
    atoms, topology = load_structure(str(ALANINE))
    before = atoms.get_masses()
    after = repartitioned_masses(topology, before, H_MASS)
    h = atoms.numbers == 1
    assert after.sum() == pytest.approx(before.sum(), abs=1e-10)
    np.testing.assert_allclose(after[h], H_MASS)
    # each heavy atom gave exactly what its topology hydrogens gained
    expected = before.copy()
    for b in topology.bonds():
        i, j = b.atom1.index, b.atom2.index
        for hyd, heavy in ((i, j), (j, i)):
            if h[hyd] and not h[heavy]:
                expected[heavy] -= H_MASS - before[hyd]
    np.testing.assert_allclose(after[~h], expected[~h])


def test_hmr_uses_the_topology_where_the_distance_guess_differs(tmp_path):
    # C-O with a hydrogen that the pdb's CONECT bonds to C, placed nearer to O
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    c, o, hyd = (top.addAtom(name, el, res) for name, el in
                 (("C1", app.element.carbon), ("O1", app.element.oxygen), ("H1", app.element.hydrogen)))
    top.addBond(c, o)
    top.addBond(c, hyd)
    pos = np.array([[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [1.0, 0.9, 0.0]])  # A: H-O 0.91, H-C 1.35
    path = tmp_path / "conect.pdb"
    with open(path, "w") as f:
        app.PDBFile.writeFile(top, u.Quantity(pos, u.angstrom), f)
    atoms, topology = load_structure(str(path))
    assert _bonded(topology) == {frozenset((0, 1)), frozenset((0, 2))}  # the file's bonds kept
    assert {frozenset(b) for b in guess_bonds(atoms).tolist()} == {frozenset((0, 1)), frozenset((1, 2))}
    masses = atoms.get_masses()
    after = repartitioned_masses(topology, masses, H_MASS)
    assert after[1] == pytest.approx(masses[1])  # O keeps its mass
    assert after[0] == pytest.approx(masses[0] - (H_MASS - masses[2]))


def test_other_formats_get_bonds_from_covalent_radii(tmp_path):
    ase.io.write(tmp_path / "methanol.xyz", molecule("CH3OH"))
    atoms, topology = load_structure(str(tmp_path / "methanol.xyz"))
    assert topology.getNumBonds() == 5  # C-O, 3 C-H, O-H
    assert [r.name for r in topology.residues()] == ["MOL"]
    after = repartitioned_masses(topology, atoms.get_masses(), H_MASS)
    assert after.sum() == pytest.approx(atoms.get_masses().sum(), abs=1e-10)


def test_hmr_errors(tmp_path):
    ase.io.write(tmp_path / "h2.xyz", Atoms("H2CO", positions=[[0, 0, 0], [0.74, 0, 0],
                                                                [5, 0, 0], [6.13, 0, 0]]))
    atoms, topology = load_structure(str(tmp_path / "h2.xyz"))
    with pytest.raises(ValueError, match="hydrogen 0 is bonded to no heavy atom"):
        repartitioned_masses(topology, atoms.get_masses(), H_MASS)
    ase.io.write(tmp_path / "ch4.xyz", molecule("CH4"))
    atoms, topology = load_structure(str(tmp_path / "ch4.xyz"))
    with pytest.raises(ValueError, match="lighter than"):
        repartitioned_masses(topology, atoms.get_masses(), 4.0)
