"""build_ml_system: the one entry to the OpenMM boundary (new Systems, ML/MM additions, lambda,
both routes, one model build, evaluation of the same model instance on a State)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import openmm
import openmm.unit as u
import pytest

import mlff.io
from mlff.calculators.ase import MLFFCalculator
from mlff.calculators.openmm import ROUTES, build_ml_system
from mlff.units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL, KJ_PER_MOL_PER_NM_TO_EV_PER_A

from calc_helpers import OPENMM_CELL, rattled, water_box

KJ_NM = u.kilojoule_per_mole / u.nanometer


def context_of(system, atoms, params=None):
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName("Reference"))
    if atoms.pbc.all():
        context.setPeriodicBoxVectors(*[openmm.Vec3(*r) for r in atoms.cell.array * ANGSTROM_TO_NM])
    context.setPositions(atoms.positions * ANGSTROM_TO_NM)
    for name, value in (params or {}).items():
        context.setParameter(name, value)
    return context


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_new_system_matches_ase(route, periodic, small_potential):
    """A new System from an ASE Atoms: particles, masses, box and the energy/forces of the ASE
    calculator; evaluate() on the Context's State gives the same numbers."""
    potential = small_potential(ensemble_size=2)
    atoms = water_box(3, n_molecules=4, cell=OPENMM_CELL) if periodic else rattled()
    ml = build_ml_system(potential, atoms, route=route)
    assert ml.system.getNumParticles() == len(atoms)
    masses = [ml.system.getParticleMass(i).value_in_unit(u.dalton) for i in range(len(atoms))]
    np.testing.assert_allclose(masses, atoms.get_masses())
    assert ml.periodic == periodic and ml.num_members == 2
    ref = atoms.copy()
    ref.calc = MLFFCalculator(potential)
    e_ref, f_ref = ref.get_potential_energy(), ref.get_forces()
    state = context_of(ml.system, atoms).getState(getEnergy=True, getForces=True, getPositions=True)
    e = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) / EV_TO_KJ_PER_MOL
    f = np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM)) * KJ_PER_MOL_PER_NM_TO_EV_PER_A
    assert abs(e - e_ref) <= 1e-9 * abs(e_ref)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-7)
    out = ml.evaluate(state)
    assert abs(out["energy"] / EV_TO_KJ_PER_MOL - e_ref) <= 1e-9 * abs(e_ref)
    np.testing.assert_allclose(out["forces"] * KJ_PER_MOL_PER_NM_TO_EV_PER_A, f_ref, atol=1e-7)
    np.testing.assert_allclose(out["forces_std"] * KJ_PER_MOL_PER_NM_TO_EV_PER_A,
                               ref.calc.results["forces_std"], atol=1e-7)
    assert out["energy_std"] / EV_TO_KJ_PER_MOL == pytest.approx(ref.calc.results["energy_std"], rel=1e-8)


@pytest.mark.parametrize("route", ROUTES)
def test_added_to_mm_system_with_lambda(route, small_potential):
    """ML force on a subset of an existing System, scaled by lambda: the energy scales, and
    dU/dlambda (TorchForce's parameter derivative; evaluate() for both routes) is the unscaled
    ML energy."""
    potential = small_potential()
    atoms = rattled()
    ml_atoms = list(range(6))
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))
    ml = build_ml_system(potential, [int(z) for z in atoms.numbers], system, atoms=ml_atoms,
                         lambda_name="lambda_ml", route=route, force_group=3)
    assert ml.system is system and ml.force.getForceGroup() == 3
    sub = atoms[ml_atoms]
    sub.calc = MLFFCalculator(potential)
    e_ml = sub.get_potential_energy() * EV_TO_KJ_PER_MOL
    for lam in (1.0, 0.3):
        context = context_of(system, atoms, {"lambda_ml": lam})
        state = context.getState(getEnergy=True, getPositions=True,
                                 getParameterDerivatives=route == "torch")
        assert state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) == pytest.approx(lam * e_ml, rel=1e-9)
        assert ml.evaluate(state)["energy"] == pytest.approx(e_ml, rel=1e-9)
        if route == "torch":
            assert state.getEnergyParameterDerivatives()["lambda_ml"] == pytest.approx(e_ml, rel=1e-9)


def test_model_file_is_built_once(tmp_path, monkeypatch, saved_model):
    """A model file goes straight into the TorchScript module: one model build per System."""
    path = saved_model(tmp_path)
    calls = []
    real = mlff.io.build_model
    monkeypatch.setattr(mlff.io, "build_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    build_ml_system(path, rattled())
    assert len(calls) == 1


def test_bad_arguments_are_named(small_potential):
    atoms = rattled()
    with pytest.raises(ValueError, match="route must be one of"):
        build_ml_system(small_potential(), atoms, route="jax")
    system = openmm.System()
    system.addParticle(1.0)
    with pytest.raises(ValueError, match="the System has 1 particles"):
        build_ml_system(small_potential(), atoms, system)


def test_importing_the_adapter_loads_no_plugins(tmp_path, saved_model):
    """Plugin loading is explicit: importing the package loads nothing, building a TorchForce
    calls the loader."""
    code = (
        "import mlff.calculators.openmm as m, mlff.calculators.openmm.plugins as p\n"
        "assert not p._LOADED and p._CALLS == 0, (p._LOADED, p._CALLS)\n"
        "from calc_helpers import rattled\n"
        f"m.build_ml_system({str(saved_model(tmp_path))!r}, rattled())\n"
        "assert p._CALLS == 1\n"
    )
    here = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("route", ROUTES)
def test_a_model_with_the_d3_prior_runs_in_openmm(route, small_potential):
    """The D3 prior reads positions and cells and builds its own neighbour list inside the
    model: both OpenMM routes (TorchScript and Python) give the ASE calculator's numbers."""
    potential = small_potential(priors={"d3": {"functional": "pbe", "cutoff": 10.0}})
    plain = small_potential()
    atoms = water_box(3, n_molecules=4, cell=OPENMM_CELL)
    ml = build_ml_system(potential, atoms, route=route)
    state = context_of(ml.system, atoms).getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) / EV_TO_KJ_PER_MOL
    f = np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM)) * KJ_PER_MOL_PER_NM_TO_EV_PER_A
    ref, bare = atoms.copy(), atoms.copy()
    ref.calc, bare.calc = MLFFCalculator(potential), MLFFCalculator(plain)
    assert ref.get_potential_energy() - bare.get_potential_energy() < -1e-2  # D3 is there
    assert abs(e - ref.get_potential_energy()) <= 1e-9 * abs(e)
    np.testing.assert_allclose(f, ref.get_forces(), rtol=0, atol=1e-7)
