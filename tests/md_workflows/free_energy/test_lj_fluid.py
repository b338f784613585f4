"""Lennard-Jones fluid pieces for the alchemical checks: the JZG equation of state, the tail
correction, the OpenMM system with a softcore solute, Widom insertion, and one short simulation
checked against the equation of state."""

from __future__ import annotations

import itertools
import math

import numpy as np
import openmm
import pytest
from openmm import unit

from mlff.md_workflows.free_energy import lj_eos
from mlff.md_workflows.free_energy.lj_fluid import (
    MOLAR_GAS_CONSTANT_KJ_PER_MOL_K,
    LJFluid,
    build_lj_system,
    insertion_energies,
    simulate_fluid,
    widom_insertion,
)


# --- equation of state ------------------------------------------------------------------------


def test_jzg_reference_values():
    """shared/notes/free_energy_stack.md: JZG mu_ex = -0.729 at T* 1.2, rho* 0.8; P* 1.96 (KN)."""
    assert lj_eos.excess_chemical_potential(0.8, 1.2) == pytest.approx(-0.729, abs=0.005)
    assert lj_eos.pressure(0.8, 1.2) == pytest.approx(1.96, abs=0.05)


def test_kolafa_nezbeda_reference_values():
    """The note's second reference: Kolafa-Nezbeda mu_ex = -0.750, P* = 1.96 at T* 1.2, rho* 0.8;
    and the two equations of state stay within 0.07 epsilon of each other on the test states."""
    assert lj_eos.kn_excess_chemical_potential(0.8, 1.2) == pytest.approx(-0.750, abs=0.005)
    assert lj_eos.kn_pressure(0.8, 1.2) == pytest.approx(1.96, abs=0.005)
    for rho, t in ((0.5, 2.0), (0.8, 2.0), (0.8, 1.0), (0.3, 1.5)):
        assert lj_eos.kn_excess_chemical_potential(rho, t) == pytest.approx(
            lj_eos.excess_chemical_potential(rho, t), abs=0.07)
    assert abs(lj_eos.kn_excess_chemical_potential(1e-7, 2.0)) < 1e-5


def test_jzg_low_density_limit():
    for t in (1.0, 2.0, 5.0):
        assert lj_eos.excess_chemical_potential(0.0, t) == 0.0
        assert abs(lj_eos.excess_chemical_potential(1e-7, t)) < 1e-5
        assert lj_eos.helmholtz_residual(1e-7, t) == pytest.approx(0.0, abs=1e-5)
        assert lj_eos.pressure(1e-7, t) == pytest.approx(1e-7 * t, rel=1e-5)


@pytest.mark.parametrize("rho,t", [(0.1, 1.5), (0.5, 2.0), (0.8, 1.2), (0.9, 3.0)])
def test_jzg_pressure_is_density_derivative_of_helmholtz(rho, t):
    h = 1e-5
    dadrho = (lj_eos.helmholtz_residual(rho + h, t) - lj_eos.helmholtz_residual(rho - h, t)) / (2 * h)
    assert rho**2 * dadrho + rho * t == pytest.approx(lj_eos.pressure(rho, t), rel=1e-7, abs=1e-8)


def test_jzg_rejects_unphysical_state():
    with pytest.raises(ValueError, match="temperature"):
        lj_eos.pressure(0.5, 0.0)
    with pytest.raises(ValueError, match="density"):
        lj_eos.helmholtz_residual(-0.1, 1.0)


# --- state point ------------------------------------------------------------------------------


def test_tail_correction_and_units():
    fluid = LJFluid(500, 0.8, 1.2)
    assert fluid.tail_correction_insert == pytest.approx(-0.496, abs=5e-4)
    assert fluid.kT_kj_mol == pytest.approx(1.2 * 0.997)
    assert fluid.temperature_kelvin * MOLAR_GAS_CONSTANT_KJ_PER_MOL_K == pytest.approx(1.2 * 0.997)
    assert fluid.box_edge_nm == pytest.approx((500 / 0.8) ** (1 / 3) * 0.34)
    # tau = sigma sqrt(m / eps): 2.152 ps for argon-like parameters
    tau = (0.34 * unit.nanometer * (39.948 * unit.amu / (0.997 * unit.kilojoule_per_mole)) ** 0.5)
    assert fluid.tau == pytest.approx(tau.value_in_unit(unit.picosecond))


@pytest.mark.parametrize("kwargs", [dict(n_particles=0), dict(density=-0.1), dict(temperature=0.0),
                                    dict(cutoff=float("nan")), dict(n_particles=10.5)])
def test_fluid_rejects_bad_values(kwargs):
    args = dict(n_particles=100, density=0.5, temperature=1.0) | kwargs
    with pytest.raises(ValueError, match="LJFluid"):
        LJFluid(**args)


def test_box_smaller_than_two_cutoffs_is_rejected():
    with pytest.raises(ValueError, match="n_particles >= 173"):
        build_lj_system(LJFluid(108, 0.8, 1.2))  # edge 5.13 sigma < 6 sigma


# --- OpenMM system ----------------------------------------------------------------------------


def lj_sum(points: np.ndarray, others: np.ndarray, edge: float, rc: float) -> np.ndarray:
    """Brute force: LJ energy (epsilon) of each point with all others over every periodic image
    within r_c (reduced units; loops, no minimum-image shortcut)."""
    shifts = edge * np.array(list(itertools.product((-2, -1, 0, 1, 2), repeat=3)))  # [125, 3]
    out = np.zeros(len(points))
    for i, p in enumerate(points):
        r = np.linalg.norm(p - others[:, None, :] + shifts[None], axis=-1)  # [n_others, 125]
        r = r[r < rc]
        out[i] = np.sum(4.0 * (r**-12 - r**-6))
    return out


def group_energy(context: openmm.Context, group: int) -> float:
    state = context.getState(getEnergy=True, groups={group})
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.fixture(scope="module")
def small_fluid() -> LJFluid:
    return LJFluid(64, 0.2, 1.5)  # box edge 6.84 sigma, cutoff 3 sigma


def make_context(system: openmm.System) -> openmm.Context:
    return openmm.Context(system, openmm.VerletIntegrator(0.001),
                          openmm.Platform.getPlatformByName("Reference"))


def test_system_layout(small_fluid):
    system, pos, box = build_lj_system(small_fluid)
    assert system.getNumParticles() == 65 and pos.shape == (65, 3) and box.shape == (3, 3)
    np.testing.assert_allclose(box, np.eye(3) * small_fluid.box_edge_nm)
    assert np.all((pos >= 0) & (pos < small_fluid.box_edge_nm))
    d = pos[:, None] - pos[None]
    d -= small_fluid.box_edge_nm * np.round(d / small_fluid.box_edge_nm)
    r = np.linalg.norm(d, axis=-1) + np.eye(65) * 1e9
    assert r.min() > 0.9 * small_fluid.sigma_nm  # the solute has a lattice site of its own
    groups = sorted(f.getForceGroup() for f in system.getForces())
    assert groups == [0, 1]
    nb = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    assert not nb.getUseDispersionCorrection()
    assert nb.getParticleParameters(64)[2].value_in_unit(unit.kilojoule_per_mole) == 0.0
    system2, pos2, _ = build_lj_system(small_fluid, with_solute=False)
    assert system2.getNumParticles() == 64 and system2.getNumForces() == 1 and pos2.shape == (64, 3)


def test_solute_energy_at_end_states_matches_direct_sum(small_fluid):
    rng = np.random.default_rng(1)
    sigma = small_fluid.sigma_nm
    system, pos, _ = build_lj_system(small_fluid)
    context = make_context(system)
    edge = small_fluid.box_edge
    fluid_red = pos[:-1] / sigma + rng.normal(scale=0.15, size=(64, 3))
    fluid_red[:5] += edge * rng.integers(-1, 2, size=(5, 3))  # some outside the box
    eps = small_fluid.epsilon_kj_mol
    fluid_energy = None
    for _ in range(3):
        while True:  # a random solute spot not closer than 0.8 sigma to the fluid
            solute = rng.random(3) * edge
            d = fluid_red - solute
            d -= edge * np.round(d / edge)
            if np.linalg.norm(d, axis=1).min() > 0.8:
                break
        context.setPositions(np.vstack([fluid_red, solute]) * sigma)
        context.setParameter("lambda_insert", 0.0)
        assert group_energy(context, 1) == 0.0
        context.setParameter("lambda_insert", 1.0)
        expected = lj_sum(solute[None], fluid_red, edge, small_fluid.cutoff)[0] * eps
        assert group_energy(context, 1) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        # the fluid's own energy: plain truncated LJ (no dispersion correction), blind to the solute
        e0 = group_energy(context, 0)
        if fluid_energy is None:
            fluid_energy = 0.5 * sum(lj_sum(fluid_red[i:i + 1], np.delete(fluid_red, i, 0), edge,
                                            small_fluid.cutoff)[0] for i in range(64)) * eps
        assert e0 == pytest.approx(fluid_energy, rel=1e-9)


def test_softcore_is_finite_on_top_of_a_fluid_particle(small_fluid):
    system, pos, _ = build_lj_system(small_fluid, softcore_alpha=0.5, parameter="lam")
    pos = pos.copy()
    pos[-1] = pos[0]  # the solute exactly on fluid particle 0
    context = make_context(system)
    context.setPositions(pos)
    assert context.getParameter("lam") == 1.0
    context.setParameter("lam", 0.5)
    energy = group_energy(context, 1)
    # all other fluid particles contribute the softcore sum at their distances
    eps, lam, alpha = small_fluid.epsilon_kj_mol, 0.5, 0.5
    d = pos[1:-1] - pos[-1]
    d -= small_fluid.box_edge_nm * np.round(d / small_fluid.box_edge_nm)
    r = np.linalg.norm(d, axis=1) / small_fluid.sigma_nm
    x = alpha * (1 - lam) + np.where(r < 3.0, r, np.inf) ** 6
    others = np.sum(4 * eps * lam * (1 / x**2 - 1 / x))
    on_top = 4 * eps * lam * (1 / 0.25**2 - 1 / 0.25)  # x = alpha (1 - lam) = 0.25 at r = 0
    assert math.isfinite(energy)
    assert energy == pytest.approx(on_top + others, rel=1e-9)
    # forces: at r = 0 exactly the direction is undefined (OpenMM gives 0/0), so move it 1e-3 sigma
    pos[-1, 0] += 1e-3 * small_fluid.sigma_nm
    context.setPositions(pos)
    forces = context.getState(getForces=True, groups={1}).getForces(asNumpy=True)
    forces = forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert np.all(np.isfinite(forces)) and np.abs(forces).max() < 100 * eps / small_fluid.sigma_nm


def test_bad_build_arguments(small_fluid):
    with pytest.raises(ValueError, match="softcore_alpha"):
        build_lj_system(small_fluid, softcore_alpha=-1.0)
    with pytest.raises(ValueError, match="parameter"):
        build_lj_system(small_fluid, parameter="lambda insert")
    with pytest.raises(ValueError, match="force_group"):
        build_lj_system(small_fluid, force_group=0)


# --- Widom insertion --------------------------------------------------------------------------


def test_widom_ideal_gas_limit():
    fluid = LJFluid(10, 10 / 40.0**3, 1.5)  # ten particles in a 40 sigma box
    rng = np.random.default_rng(0)
    frames = rng.random((4, 10, 3)) * fluid.box_edge_nm
    mu, err = widom_insertion(frames, fluid.box_edge_nm, fluid, n_insertions=2000, rng=rng)
    assert abs(mu) < 0.01
    assert math.isfinite(err) and err >= 0


def test_widom_matches_brute_force_on_one_configuration():
    fluid = LJFluid(5, 5 / 7.0**3, 1.3)  # five particles in a 7 sigma box
    sigma, edge = fluid.sigma_nm, fluid.box_edge
    positions = np.array([[0.2, 0.3, 0.1], [6.9, 0.4, 0.2], [3.5, 3.5, 3.5],
                          [1.0, 6.5, 5.9], [-0.5, 8.0, 3.0]])  # the last outside the box
    seed, n = 7, 300
    points = np.random.default_rng(seed).random((n, 3)) * edge
    du = lj_sum(points, positions, edge, fluid.cutoff)
    np.testing.assert_allclose(insertion_energies(points * sigma, positions * sigma,
                                                  fluid.box_edge_nm, fluid), du, rtol=1e-10)
    expected = -1.3 * math.log(np.mean(np.exp(-du / 1.3))) + fluid.tail_correction_insert
    mu, err = widom_insertion(positions * sigma, fluid.box_edge_nm, fluid, n_insertions=n, rng=seed)
    assert mu == pytest.approx(expected, rel=1e-10)
    assert math.isnan(err)  # one frame: no block error


def test_widom_rejects_bad_input():
    fluid = LJFluid(5, 5 / 7.0**3, 1.3)
    with pytest.raises(ValueError, match="NaN"):
        widom_insertion(np.full((2, 5, 3), np.nan), fluid.box_edge_nm, fluid)
    with pytest.raises(ValueError, match="twice the cutoff"):
        widom_insertion(np.zeros((1, 5, 3)), 5.0 * fluid.sigma_nm, fluid)


def test_widom_on_short_simulation_agrees_with_jzg():
    """256 particles at T* 2.0, rho* 0.5, 22k Langevin steps (110 tau) on the CPU platform."""
    fluid = LJFluid(256, 0.5, 2.0)
    frames = simulate_fluid(fluid, n_frames=200, steps_per_frame=100, equilibration_steps=2000,
                            platform="CPU", threads=1, seed=3)
    assert frames.shape == (200, 256, 3) and np.all(np.isfinite(frames))
    mu, err = widom_insertion(frames, fluid.box_edge_nm, fluid, n_insertions=500, rng=3,
                              n_blocks=10)
    reference = lj_eos.excess_chemical_potential(0.5, 2.0)  # -0.531
    assert 0 < err < 0.1
    print(f"Widom mu_ex {mu:.3f} +/- {err:.3f}, JZG {reference:.3f}, "
          f"KN {lj_eos.kn_excess_chemical_potential(0.5, 2.0):.3f}")
    assert abs(mu - reference) < 0.15 + 3 * err, (mu, err, reference)
