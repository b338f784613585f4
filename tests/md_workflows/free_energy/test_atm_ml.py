"""ML ligands in an ATM leg: both ligands' intramolecular energy from the shipped model (one
ML force per ligand, outside the ATMForce), everything else MM: the end states against MM
without the ligands' intramolecular terms plus the model's energy of each ligand, both routes,
and the sampler's windows with the ML recipe attached."""
from __future__ import annotations

import numpy as np
import openmm
import pytest
from ase import Atoms

from mlff.calculators.ase import MLFFCalculator
from mlff.md_workflows.free_energy.ml_interpolation import attach_ml, split_solute_intramolecular
from mlff.md_workflows.free_energy.rbfe.atm_system import add_atm_force, set_state
from mlff.md_workflows.free_energy.rbfe.leg import prepare_atm_leg
from mlff.md_workflows.free_energy.rbfe.ml_ligands import use_ml_ligands
from mlff.md_workflows.free_energy.rbfe.schedule import linear_schedule
from mlff.md_workflows.free_energy.sampling import SamplingSettings, load_leg, run_leg
from mlff.units import EV_TO_KJ_PER_MOL

D = np.array([3.0, 0.0, 0.0])
A, B = [1, 2, 3], [4, 5, 6]
NUMBERS = [[8, 1, 1], [8, 1, 1]]


def _mm_system():
    """A charged LJ 'receptor' atom (fixed) and two flexible TIP3P-like waters."""
    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    bonds, angles = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce()
    system.addParticle(0.0)
    nb.addParticle(0.5, 0.4, 1.0)
    for o in (1, 4):
        for mass, q, sigma, eps in ((15.999, -0.834, 0.315061, 0.6364), (1.008, 0.417, 0.1, 0.0), (1.008, 0.417, 0.1, 0.0)):
            system.addParticle(mass)
            nb.addParticle(q, sigma, eps)
        bonds.addBond(o, o + 1, 0.09572, 462750.4)
        bonds.addBond(o, o + 2, 0.09572, 462750.4)
        angles.addAngle(o + 1, o, o + 2, np.deg2rad(104.52), 836.8)
        for i, j in ((o, o + 1), (o, o + 2), (o + 1, o + 2)):
            nb.addException(i, j, 0.0, 0.1, 0.0)
    for f in (nb, bonds, angles):
        system.addForce(f)
    return system


WATER = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.0240, 0.0927, 0.0]])
POSITIONS = np.vstack([[[0.0, 0.0, 0.0]], WATER + [0.32, 0.0, 0.0],
                       WATER * [1.03, 0.97, 1.0] + D + [0.30, 0.05, 0.02]])


def _energy(system, positions, state=None) -> float:
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    if state is not None:
        set_state(ctx, state)
    return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)


def _ml_kj(atoms_idx) -> float:
    calc = MLFFCalculator("default")
    return calc.get_potential_energy(Atoms("OH2", positions=10.0 * POSITIONS[atoms_idx])) * EV_TO_KJ_PER_MOL


@pytest.mark.parametrize("route", ["torch", "python"])
def test_ml_ligand_end_states(route):
    displaced = POSITIONS.copy()
    displaced[A] += D
    displaced[B] -= D
    split = _mm_system()
    split_solute_intramolecular(split, A)
    split_solute_intramolecular(split, B)
    ml = _ml_kj(A) + _ml_kj(B)
    atm_system = _mm_system()
    spec = use_ml_ligands(atm_system, [A, B], NUMBERS, "default", route=route)
    add_atm_force(atm_system, {**{i: D for i in A}, **{i: -D for i in B}})
    # as in every sampling process: the MM System read back from XML, then the ML forces
    window = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(atm_system))
    attach_ml(window, spec)
    names = [f.getName() for f in window.getForces()]
    assert names.count("TorchForce" if route == "torch" else "PythonForce") == 2  # one per ligand
    # the ML forces may also be there before the ATMForce: add_atm_force keeps them outside
    direct = _mm_system()
    attach_ml(direct, use_ml_ligands(direct, [A, B], NUMBERS, "default", route=route))
    add_atm_force(direct, {**{i: D for i in A}, **{i: -D for i in B}})
    states = linear_schedule(3)
    assert _energy(window, POSITIONS, states[0]) == pytest.approx(_energy(split, POSITIONS) + ml, rel=1e-7)
    assert _energy(window, POSITIONS, states[-1]) == pytest.approx(_energy(split, displaced) + ml, rel=1e-7)
    for state in states:
        assert _energy(direct, POSITIONS, state) == pytest.approx(_energy(window, POSITIONS, state), rel=1e-12)
    # what was removed is exactly the waters' intramolecular MM energy (their bonds and angles:
    # every intramolecular pair is excluded in this water model)
    grouped = _mm_system()
    for f in grouped.getForces():
        f.setForceGroup(1 if type(f).__name__ in ("HarmonicBondForce", "HarmonicAngleForce") else 0)
    ctx = openmm.Context(grouped, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(POSITIONS)
    bonded = ctx.getState(getEnergy=True, groups={1}).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert bonded > 1.0  # the geometries are strained: the check has something to see
    assert _energy(_mm_system(), POSITIONS) - _energy(split, POSITIONS) == pytest.approx(bonded, rel=1e-9)


def test_ml_ligand_windows_run_on_the_sampler(tmp_path):
    system = _mm_system()
    spec = use_ml_ligands(system, [A, B], NUMBERS, "default", route="torch")
    add_atm_force(system, {**{i: D for i in A}, **{i: -D for i in B}})
    settings = SamplingSettings(temperature_K=300.0, timestep_fs=0.5, equilibration_ps=0.01, production_ps=0.02,
                                sample_every_ps=0.01, platform="Reference", minimize=False)
    prepare_atm_leg(tmp_path / "atm", system, POSITIONS, linear_schedule(2), settings, ml=spec)
    run_leg(tmp_path / "atm", workers=1, progress=False)
    leg = load_leg(tmp_path / "atm")
    assert len(leg.u_kln) == 3 and all(u.shape == (3, 2) and np.all(np.isfinite(u)) for u in leg.u_kln)
    assert leg.ti_parameters == ["s"]
