"""OpenMM adapters: TorchForce and PythonForce against the ASE calculator, ML/MM selection,
periodic images, serialization, dU/dlambda, ensembles and the openmm-ml entry point."""

import copy

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest
import torch

from mlff.calculators.ase import MLFFCalculator
from mlff.calculators.openmm import (
    MLFFEvaluator,
    make_python_force,
    make_torch_force,
    make_torch_module,
)
from mlff.assets_path import asset
from mlff.graph import InputError
from mlff.units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL, KJ_PER_MOL_PER_NM_TO_EV_PER_A, KJ_PER_MOL_TO_EV

from calc_helpers import OPENMM_CELL, rattled, water_box

PLATFORMS = ["Reference", "CPU"]
KJ_NM = u.kilojoule_per_mole / u.nanometer


@pytest.fixture(scope="module")
def potential(small_potential):
    return small_potential()


@pytest.fixture(scope="module")
def ensemble(small_potential):
    return small_potential(ensemble_size=3)


@pytest.fixture(scope="module", params=[("mace", "none"), ("tensornet", "none"), ("mace", "both"),
                                        ("tensornet", "charges")],
                ids=["mace", "tensornet", "mace-longrange", "tensornet-charges"])
def any_model(small_potential, request):
    """Each model type, and with long-range blocks (charges: Ewald in OpenMM's periodic box,
    the direct sum for a molecule): the OpenMM adapters have no per-model code."""
    model_type, long_range = request.param
    return small_potential(model_type=model_type, long_range=long_range)


def periodic_atoms():
    return water_box(11, n_molecules=5, cell=OPENMM_CELL)


def bare_system(atoms, periodic):
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in atoms.cell.array * ANGSTROM_TO_NM])
    return system


def evaluate(system, positions, box=None, platform="Reference", groups=-1, params=None, derivatives=False):
    """Energy (eV), forces [N, 3] (eV/A) and parameter derivatives (kJ/mol) of a System at
    positions [N, 3] (A)."""
    props = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(
        system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName(platform), props
    )
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box) * ANGSTROM_TO_NM])
    context.setPositions(np.asarray(positions) * ANGSTROM_TO_NM)
    for name, value in (params or {}).items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=derivatives, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
    forces = state.getForces(asNumpy=True).value_in_unit(KJ_NM) * KJ_PER_MOL_PER_NM_TO_EV_PER_A
    derivs = dict(state.getEnergyParameterDerivatives()) if derivatives else {}
    return energy, np.asarray(forces), derivs


def ase_reference(potential, atoms):
    atoms = atoms.copy()
    atoms.calc = MLFFCalculator(potential)
    return atoms.get_potential_energy(), atoms.get_forces()


def assert_same(energy, forces, ref_energy, ref_forces, rtol=1e-6):
    """Energy within rtol; forces within rtol of the largest force component."""
    assert abs(energy - ref_energy) <= rtol * abs(ref_energy)
    np.testing.assert_allclose(forces, ref_forces, rtol=0, atol=rtol * np.abs(ref_forces).max())


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_torch_force_matches_ase(any_model, platform, periodic):
    potential = any_model
    atoms = periodic_atoms() if periodic else rattled()
    system = bare_system(atoms, periodic)
    system.addForce(make_torch_force(potential, atoms, periodic=periodic))
    box = atoms.cell.array if periodic else None
    energy, forces, _ = evaluate(system, atoms.positions, box, platform)
    assert_same(energy, forces, *ase_reference(potential, atoms))


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_python_force_matches_torch_force(any_model, periodic):
    potential = any_model
    atoms = periodic_atoms() if periodic else rattled()
    box = atoms.cell.array if periodic else None
    results = []
    for make in (make_torch_force, make_python_force):
        system = bare_system(atoms, periodic)
        system.addForce(make(potential, atoms, periodic=periodic))
        results.append(evaluate(system, atoms.positions, box))
    (e_t, f_t, _), (e_p, f_p, _) = results
    assert abs(e_t - e_p) <= 1e-10 * abs(e_t)
    np.testing.assert_allclose(f_t, f_p, rtol=0, atol=1e-9)


def test_translation_by_box_vectors_changes_nothing(potential):
    atoms = periodic_atoms()
    system = bare_system(atoms, True)
    system.addForce(make_torch_force(potential, atoms, periodic=True))
    e0, f0, _ = evaluate(system, atoms.positions, atoms.cell.array)
    moved = atoms.positions.copy()
    cell = atoms.cell.array
    moved[:3] += cell[0] - 2 * cell[2]  # one molecule to another image
    moved[3:6] -= cell[1]
    moved += 0.3 * cell.sum(0)  # and everything by a non-lattice vector (translation invariance)
    e1, f1, _ = evaluate(system, moved, cell)
    assert abs(e1 - e0) <= 1e-10 * abs(e0)
    np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-9)


# --- ML/MM ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dipeptide():
    pdb = app.PDBFile(str(asset("examples/alanine_dipeptide.pdb")))
    forcefield = app.ForceField("amber14-all.xml")
    mm = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    positions = pdb.getPositions(asNumpy=True).value_in_unit(u.angstrom)
    ml_atoms = [a.index for a in pdb.topology.atoms() if a.residue.name == "ALA"]
    return pdb.topology, mm, np.asarray(positions), ml_atoms


def _atoms_of(topology, positions, indices):
    from ase import Atoms

    numbers = [a.element.atomic_number for a in topology.atoms()]
    return Atoms(numbers=[numbers[i] for i in indices], positions=positions[indices])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_mlmm_force_on_selected_atoms_matches_ase(potential, dipeptide, platform):
    topology, mm, positions, ml_atoms = dipeptide
    system = copy.deepcopy(mm)
    force = make_torch_force(potential, topology, atoms=ml_atoms)
    force.setForceGroup(1)
    system.addForce(force)
    energy, forces, _ = evaluate(system, positions, platform=platform, groups={1})
    ref_e, ref_f = ase_reference(potential, _atoms_of(topology, positions, ml_atoms))
    assert_same(energy, forces[ml_atoms], ref_e, ref_f)
    others = [i for i in range(len(positions)) if i not in ml_atoms]
    assert np.all(forces[others] == 0)
    # PythonForce on the same atoms (setParticles) gives the same numbers
    system_py = copy.deepcopy(mm)
    force_py = make_python_force(potential, topology, atoms=ml_atoms)
    force_py.setForceGroup(1)
    system_py.addForce(force_py)
    e_py, f_py, _ = evaluate(system_py, positions, platform=platform, groups={1})
    assert abs(e_py - energy) <= 1e-10 * abs(energy)
    np.testing.assert_allclose(f_py, forces, rtol=0, atol=1e-9)


# --- serialization and lambda ---------------------------------------------------------------


_DESERIALIZE = """
import json, sys
import numpy as np
import torch, openmm, openmm.unit as u
from mlff.calculators.openmm import load_torch_plugins
load_torch_plugins()
system = openmm.XmlSerializer.deserialize(open(sys.argv[1]).read())
data = json.load(open(sys.argv[2]))
context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
context.setPeriodicBoxVectors(*[openmm.Vec3(*r) for r in data["box"]])
context.setPositions(np.array(data["positions"]))
state = context.getState(getEnergy=True, getForces=True)
forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
print(json.dumps({"energy": state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), "forces": forces.tolist()}))
"""


@pytest.mark.parametrize("make", [make_torch_force, make_python_force], ids=["torch", "python"])
def test_xml_serializer_round_trip(potential, make, tmp_path):
    """Serialize, deserialize in a fresh process (a crash there must not take pytest down) and
    compare energies and forces."""
    import json
    import signal
    import subprocess
    import sys

    atoms = periodic_atoms()
    system = bare_system(atoms, True)
    system.addForce(make(potential, atoms, atoms=range(6), periodic=True))
    e0, f0, _ = evaluate(system, atoms.positions, atoms.cell.array)
    xml = tmp_path / "system.xml"
    xml.write_text(openmm.XmlSerializer.serialize(system))
    data = tmp_path / "data.json"
    data.write_text(json.dumps({
        "box": (atoms.cell.array * ANGSTROM_TO_NM).tolist(),
        "positions": (atoms.positions * ANGSTROM_TO_NM).tolist(),
    }))
    script = tmp_path / "deserialize.py"
    script.write_text(_DESERIALIZE)
    proc = subprocess.run([sys.executable, str(script), str(xml), str(data)], capture_output=True, text=True)
    if make is make_torch_force and proc.returncode == -signal.SIGSEGV:
        pytest.xfail("openmm-torch 1.5 wheel crashes deserializing any TorchForce (upstream)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["energy"] * KJ_PER_MOL_TO_EV == pytest.approx(e0, rel=1e-12) and e0 != 0
    np.testing.assert_allclose(np.array(out["forces"]) * KJ_PER_MOL_PER_NM_TO_EV_PER_A, f0, rtol=0, atol=1e-10)


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_lambda_scaling_and_energy_parameter_derivative(potential, periodic):
    atoms = periodic_atoms() if periodic else rattled()
    box = atoms.cell.array if periodic else None
    system = bare_system(atoms, periodic)
    system.addForce(make_torch_force(potential, atoms, periodic=periodic, lambda_name="lambda_ml"))
    full, f_full, _ = evaluate(system, atoms.positions, box)
    lam, h = 0.37, 1e-3
    e, f, derivs = evaluate(system, atoms.positions, box, params={"lambda_ml": lam}, derivatives=True)
    e_plus, _, _ = evaluate(system, atoms.positions, box, params={"lambda_ml": lam + h})
    e_minus, _, _ = evaluate(system, atoms.positions, box, params={"lambda_ml": lam - h})
    finite_difference = (e_plus - e_minus) / (2 * h) * EV_TO_KJ_PER_MOL  # kJ/mol
    assert derivs["lambda_ml"] == pytest.approx(finite_difference, rel=1e-6)
    assert derivs["lambda_ml"] == pytest.approx(full * EV_TO_KJ_PER_MOL, rel=1e-12)
    assert e == pytest.approx(lam * full, rel=1e-12)
    np.testing.assert_allclose(f, lam * f_full, rtol=1e-12, atol=1e-12)
    # the Python route scales the same way
    system_py = bare_system(atoms, periodic)
    system_py.addForce(make_python_force(potential, atoms, periodic=periodic, lambda_name="lambda_ml"))
    e_py, _, _ = evaluate(system_py, atoms.positions, box, params={"lambda_ml": lam})
    assert e_py == pytest.approx(e, rel=1e-12)


# --- ensembles ------------------------------------------------------------------------------


def test_ensemble_force_uses_mean_and_std_is_reachable(ensemble):
    atoms = periodic_atoms()
    system = bare_system(atoms, True)
    system.addForce(make_torch_force(ensemble, atoms, periodic=True))
    energy, forces, _ = evaluate(system, atoms.positions, atoms.cell.array)
    ase_atoms = atoms.copy()
    ase_atoms.calc = MLFFCalculator(ensemble)
    assert_same(energy, forces, ase_atoms.get_potential_energy(), ase_atoms.get_forces())
    ref = ase_atoms.calc.results
    # the evaluator references the same Potential object (no second copy of the weights)
    evaluator = MLFFEvaluator(ensemble, atoms, periodic=True)
    assert evaluator.potential is ensemble
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*r) for r in atoms.cell.array * ANGSTROM_TO_NM])
    context.setPositions(atoms.positions * ANGSTROM_TO_NM)
    state = context.getState(getPositions=True)
    out = evaluator.evaluate(state)
    assert out["energy_std"] == pytest.approx(ref["energy_std"] * EV_TO_KJ_PER_MOL, rel=1e-10)
    np.testing.assert_allclose(
        out["forces_std"] * KJ_PER_MOL_PER_NM_TO_EV_PER_A, ref["forces_std"], rtol=1e-9, atol=1e-12
    )
    # the scripted module exports the same numbers
    module = make_torch_module(ensemble, atoms, periodic=True)
    pos = torch.tensor(atoms.positions * ANGSTROM_TO_NM)
    box = torch.tensor(atoms.cell.array * ANGSTROM_TO_NM)
    std = module.ensemble_std(pos, box)
    assert float(std["energy_std"]) == pytest.approx(out["energy_std"], rel=1e-9)
    np.testing.assert_allclose(std["forces_std"].numpy(), out["forces_std"], rtol=1e-9, atol=1e-10)


# --- errors ---------------------------------------------------------------------------------


def test_unknown_element_and_bad_indices(potential):
    atoms = rattled()
    atoms.symbols[1] = "Cl"
    with pytest.raises(InputError, match=r"Cl.*\['H', 'C', 'N', 'O'\]"):
        make_torch_force(potential, atoms)
    with pytest.raises(InputError, match="Cl"):
        make_python_force(potential, atoms)
    make_torch_force(potential, atoms, atoms=[0, 2, 3])  # Cl outside the ML atoms: fine
    with pytest.raises(ValueError, match="out of range"):
        make_torch_force(potential, rattled(), atoms=[0, 99])


# --- openmm-ml ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, saved_model):
    return str(saved_model(tmp_path_factory.mktemp("model")))


def test_openmmml_entry_point_is_registered():
    from importlib.metadata import entry_points

    from openmmml import MLPotential

    names = [ep.name for ep in entry_points(group="openmmml.potentials")]
    assert "mlff" in names
    assert "mlff" in MLPotential._implFactories


@pytest.mark.parametrize("implementation", ["torch", "python"])
def test_openmmml_create_system_matches_ase(dipeptide, model_path, implementation):
    from mlff.io import load_model
    from openmmml import MLPotential

    topology, _, positions, _ = dipeptide
    system = MLPotential("mlff", modelPath=model_path, implementation=implementation).createSystem(topology)
    energy, forces, _ = evaluate(system, positions)
    ref_e, ref_f = ase_reference(load_model(model_path), _atoms_of(topology, positions, list(range(len(positions)))))
    assert_same(energy, forces, ref_e, ref_f)


def test_openmmml_rejects_unknown_arguments(dipeptide, model_path):
    from openmmml import MLPotential

    with pytest.raises(ValueError, match=r"unknown keyword argument\(s\) \['modelpath'\]; valid: .*modelPath"):
        MLPotential("mlff", modelpath=model_path)
    potential = MLPotential("mlff", modelPath=model_path)
    with pytest.raises(ValueError, match=r"\['cutoff'\]"):
        potential.createSystem(dipeptide[0], cutoff=5.0)


def test_openmmml_default_model_missing_is_a_clear_error():
    from mlff.assets_path import assets_dir
    from openmmml import MLPotential

    if (assets_dir() / "models" / "mace_organic_gfn2_ensemble.pt").exists():
        pytest.skip("the default model is shipped in this checkout")
    with pytest.raises(FileNotFoundError, match="not shipped"):
        MLPotential("mlff")


@pytest.mark.parametrize("ml_residues", [("ACE", "ALA", "NME"), ("ALA",)], ids=["whole", "residue"])
def test_create_mixed_system_interpolates_between_mm_and_mixed(dipeptide, model_path, ml_residues):
    """lambda_interpolate = 0 is the MM system, 1 the mixed (non-interpolated) system. With a
    single residue, openmm-ml adds link-atom virtual sites to the ML region."""
    from openmmml import MLPotential

    topology, mm, positions, _ = dipeptide
    ml_atoms = [a.index for a in topology.atoms() if a.residue.name in ml_residues]
    potential = MLPotential("mlff", modelPath=model_path)
    mixed = potential.createMixedSystem(topology, mm, ml_atoms)
    interpolated = potential.createMixedSystem(topology, mm, ml_atoms, interpolate=True)

    def energy(system, lam=None):
        context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
        n_extra = system.getNumParticles() - len(positions)
        context.setPositions(np.vstack([positions, np.zeros((n_extra, 3))]) * ANGSTROM_TO_NM)
        context.computeVirtualSites()
        if lam is not None:
            context.setParameter("lambda_interpolate", lam)
        state = context.getState(getEnergy=True, getForces=True)
        f = state.getForces(asNumpy=True).value_in_unit(KJ_NM)[: len(positions)]
        return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), np.asarray(f)

    e_mm, f_mm = energy(mm)
    e_mixed, f_mixed = energy(mixed)
    e0, f0 = energy(interpolated, 0.0)
    e1, f1 = energy(interpolated, 1.0)
    assert abs(e_mm - e_mixed) > 1.0  # the two end states differ
    # 1e-7: openmm-ml re-expresses the changed MM nonbonded pairs as a CustomBondForce whose
    # Coulomb constant is rounded (138.935456), ~1e-6 kJ/mol here; ML terms agree to 1e-12
    assert e0 == pytest.approx(e_mm, rel=1e-7)
    assert e1 == pytest.approx(e_mixed, rel=1e-7)
    np.testing.assert_allclose(f0, f_mm, rtol=0, atol=1e-5)
    np.testing.assert_allclose(f1, f_mixed, rtol=0, atol=1e-5)
