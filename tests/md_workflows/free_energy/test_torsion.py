"""Conformer basins by umbrella sampling against the exact marginal of a torsion potential, and
the conformer-mixture formula against limits that are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
pytest.importorskip("pymbar")

from mlff.md_workflows.free_energy.sampling import MOLAR_GAS_CONSTANT_KJ  # noqa: E402
from mlff.md_workflows.free_energy.torsion import (  # noqa: E402
    KJ_PER_KCAL, mix_conformers, torsion_basin_free_energies,
)

T = 298.15
KT = MOLAR_GAS_CONSTANT_KJ * T  # kJ/mol
K_TORSION = 4.0  # kJ/mol: V = K (1 + cos phi), minimum at phi = 180 (anti)


def four_atoms():
    """A bent four-atom chain with stiff bonds and angles and one torsion term: the marginal
    density of its dihedral is exp(-V(phi)/kT) exactly (the Jacobian of Cartesian -> internal
    coordinates does not depend on the dihedral)."""
    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    for i in range(3):
        bonds.addBond(i, i + 1, 0.15, 2.0e5)
    angles = openmm.HarmonicAngleForce()
    for i in range(2):
        angles.addAngle(i, i + 1, i + 2, math.radians(110.0), 500.0)
    torsion = openmm.PeriodicTorsionForce()
    torsion.addTorsion(0, 1, 2, 3, 1, 0.0, K_TORSION)
    for f in (bonds, angles, torsion):
        system.addForce(f)
    a = math.radians(110.0)
    pos = np.array([[0.15, 0, 0], [0, 0, 0], [0.15 * math.cos(math.pi - a), 0.15 * math.sin(math.pi - a), 0],
                    [0, 0, 0]])
    pos[3] = pos[2] + np.array([0.15, 0.0, 0.02])
    return system, pos


def exact_syn_minus_anti_kcal() -> float:
    phi = np.linspace(-np.pi, np.pi, 200001)
    w = np.exp(-K_TORSION * (1 + np.cos(phi)) / KT)
    syn = np.abs(phi) < np.pi / 2
    return -KT * math.log(w[syn].sum() / w[~syn].sum()) / KJ_PER_KCAL


def test_basin_free_energy_matches_the_exact_marginal():
    system, pos = four_atoms()
    res = torsion_basin_free_energies(system, pos, (0, 1, 2, 3),
                                      {"anti": (180.0, 90.0), "syn": (0.0, 90.0)},
                                      windows=24, samples_per_window=200, steps_per_sample=25,
                                      equilibration_steps=500, bootstrap=20, seed=3)
    exact = exact_syn_minus_anti_kcal()
    got, err = res.basin_free_energy_kcal_mol["syn"], res.basin_error_kcal_mol["syn"]
    assert res.basin_free_energy_kcal_mol["anti"] == 0.0
    print(f"syn - anti: {got:.3f} +/- {err:.3f} kcal/mol, exact {exact:.3f}")
    assert 0 < err < 0.15
    assert abs(got - exact) < max(4 * err, 0.1), (got, exact, err)
    assert abs(res.pmf_angle_deg[np.nanargmin(res.pmf_kcal_mol)]) > 150  # minimum near +-180


def test_bad_input():
    system, pos = four_atoms()
    with pytest.raises(ValueError, match="four distinct atoms"):
        torsion_basin_free_energies(system, pos, (0, 1, 2, 2), {"a": (0.0, 90.0)})
    with pytest.raises(ValueError, match="half width"):
        torsion_basin_free_energies(system, pos, (0, 1, 2, 3), {"a": (0.0, 200.0)})


def test_mix_conformers_limits():
    kt = KT / KJ_PER_KCAL
    # one conformer dominates in both phases: its own value
    v, _ = mix_conformers({"a": -3.0, "b": -9.0}, {"a": 0.0, "b": 30.0})
    assert v == pytest.approx(-3.0, abs=1e-9)
    # equal gas populations, equal hydration: that value
    v, _ = mix_conformers({"a": -5.0, "b": -5.0}, {"a": 0.0, "b": 0.0})
    assert v == pytest.approx(-5.0, abs=1e-12)
    # equal gas populations, different hydration: -kT ln of the mean Boltzmann factor
    v, _ = mix_conformers({"a": -2.0, "b": -4.0}, {"a": 1.0, "b": 1.0})
    assert v == pytest.approx(-kt * math.log(0.5 * (math.exp(2 / kt) + math.exp(4 / kt))), abs=1e-12)
    # errors: a conformer with no weight contributes no error
    v, e = mix_conformers({"a": -3.0, "b": -9.0}, {"a": 0.0, "b": 30.0}, dg_hyd_err={"a": 0.5, "b": 0.7})
    assert e == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="conformers differ"):
        mix_conformers({"a": 1.0}, {"b": 0.0})
