"""Samplers: bonding preserved, physics of the harmonic sampler, clear errors."""

import numpy as np
import pytest
from ase.build import molecule

from mlff.data.label import LabelSettings, make_calculator
from mlff.data.sampling import (
    bond_graph,
    bonding_preserved,
    load_molecule,
    md_frames,
    normal_mode_frames,
    random_displacement_frames,
    relax,
)
from mlff.units import KB_EV_PER_K


@pytest.fixture(scope="module")
def water_min():
    calc = make_calculator(LabelSettings())
    return relax(molecule("H2O"), calc, fmax=1e-4), calc


def test_normal_mode_sampling_obeys_equipartition(water_min):
    """Harmonic limit: <E - E_min> = (3N - 6) kT / 2 for classical Boltzmann samples."""
    atoms, calc = water_min
    t = 50.0
    frames = normal_mode_frames(atoms, calc, t, 300, seed=1, min_wavenumber_cm=0.0)
    e0 = calc.get_potential_energy(atoms)
    de = []
    for f in frames:
        f.calc = calc
        de.append(f.get_potential_energy() - e0)
    expected = 3 * KB_EV_PER_K * t / 2
    assert np.mean(de) == pytest.approx(expected, rel=0.15)


def test_md_frames_keep_bonds_and_metadata():
    calc = make_calculator(LabelSettings())
    atoms = molecule("CH3OH")
    frames = md_frames(atoms, calc, 500.0, 5, stride=10, equilibration_steps=20, seed=0)
    assert len(frames) == 5
    ref = bond_graph(atoms)
    for f in frames:
        assert bonding_preserved(ref, f)
        assert f.info["sample_method"] == "md" and f.info["temperature_K"] == 500.0
        assert f.calc is None
    assert not np.allclose(frames[0].positions, frames[-1].positions)


def test_random_displacements_have_the_requested_width():
    atoms = molecule("C6H6")
    frames = random_displacement_frames(atoms, 0.03, 40, seed=0)
    d = np.concatenate([(f.positions - atoms.positions).ravel() for f in frames])
    assert len(frames) == 40
    assert np.std(d) == pytest.approx(0.03, rel=0.1)


def test_broken_and_formed_bonds_are_detected_but_stretching_is_not():
    atoms = molecule("H2O")
    ref = bond_graph(atoms)
    assert ref == {(0, 1), (0, 2)}
    broken = atoms.copy()
    broken.positions[1] += [3.0, 0, 0]
    assert not bonding_preserved(ref, broken)
    h2 = molecule("H2")
    stretched = h2.copy()
    stretched.positions[1, 2] += 0.12  # 0.86 A: thermal at 1000 K, not a dissociation
    assert bonding_preserved(bond_graph(h2), stretched)
    formed = atoms.copy()
    formed.positions[2] = formed.positions[1] + [0.0, 0.0, 0.6]  # H-H closer than a bond
    assert not bonding_preserved(ref, formed)


def test_ring_atoms_at_high_temperature_are_not_new_bonds():
    pyrrole = molecule("C4H4NH")
    ref = bond_graph(pyrrole)
    squeezed = pyrrole.copy()
    squeezed.positions *= 0.93  # every 1,3-distance shrinks by 7 %: still no new bond
    assert bonding_preserved(ref, squeezed)


def test_load_molecule_errors_and_files(tmp_path):
    with pytest.raises(ValueError, match="neither a file nor a molecule name"):
        load_molecule("not-a-molecule")
    from mlff.assets_path import asset

    frames = load_molecule(str(asset("examples/alanine_dipeptide_conformers.xyz")))
    assert len(frames) == 5 and len(frames[0]) == 22
