"""Alchemical transfer (ATM) building blocks: the numpy alchemical potential against OpenMM's
ATMForce, the ATM system's end states, the restraints, and an exact relative binding free
energy (two particles in a Gaussian well of different depth, against quadrature)."""
from __future__ import annotations

import json

import numpy as np
import openmm
import pytest
from scipy.integrate import quad

from mlff.md_workflows.free_energy.rbfe.leg import analyze_atm_leg, prepare_atm_leg, write_atm_report
from mlff.md_workflows.free_energy.rbfe.atm_system import add_atm_force, perturbation_energies, set_state
from mlff.md_workflows.free_energy.rbfe.restraints import add_alignment_restraint, add_centroid_restraint
from mlff.md_workflows.free_energy.rbfe.schedule import (
    ATMState, SoftCore, alchemical_potential, linear_schedule, reduced_energies)
from mlff.md_workflows.free_energy.sampling import MOLAR_GAS_CONSTANT_KJ, SamplingSettings, run_leg
from mlff.md_workflows.free_energy.window_energies import ATMEnergies, state_energies

D = np.array([3.0, 0.0, 0.0])  # nm


def _context(system, positions):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions([openmm.Vec3(*p) for p in positions])
    return ctx


def _energy(ctx, groups=-1) -> float:
    import openmm.unit as unit

    state = ctx.getState(getEnergy=True, groups=groups)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _charged_pair():
    """Two like charges (+1, +1) without cutoff: particle 1 is displaced by -d."""
    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in range(2):
        system.addParticle(1.0)
        nb.addParticle(1.0, 0.3, 0.0)
    system.addForce(nb)
    return system


STATES = linear_schedule(6) + [ATMState(0.1, 0.4, alpha=0.05, uh=20.0, w0=3.0, direction=1),
                               ATMState(0.7, 0.2, alpha=0.1, uh=-5.0, w0=-1.0, direction=-1)]


@pytest.mark.parametrize("state", STATES, ids=lambda s: f"l{s.lambda1}-{s.lambda2}-d{s.direction}")
def test_alchemical_potential_is_openmms_atm_energy(state):
    soft = SoftCore()
    system = _charged_pair()
    atm_index = add_atm_force(system, {1: -D}, soft=soft)
    atm = system.getForce(atm_index)
    ctx = _context(system, [[0, 0, 0], [3.0, 0, 0]])
    set_state(ctx, state)
    # particle 1 at 3 nm - x lands at -x after the displacement: u1 spans the soft core
    for x in (2.0, 0.6, 0.3, 0.2, 0.15, 0.12):
        ctx.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(3.0 + x, 0, 0)])
        u0, u1 = perturbation_energies(atm, ctx)
        assert u0 == pytest.approx(138.935456 / (3.0 + x), rel=1e-5)  # Coulomb at the real distance
        assert u1 == pytest.approx(138.935456 / x, rel=1e-5)
        assert _energy(ctx) == pytest.approx(float(alchemical_potential(u0, u1, state, soft)), rel=1e-9, abs=1e-9)
    assert u1 - u0 > soft.ubcore  # the soft core was exercised


def test_reduced_energies_shape_and_units():
    states = linear_schedule(3)
    assert [s.s for s in states] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [s.direction for s in states] == [1, 1, 1, -1, -1]
    u = reduced_energies(np.array([0.0, 1.0]), np.array([10.0, 1.0]), states, kT_kj=2.0)
    assert u.shape == (5, 2)
    assert u[0, 0] == 0.0 and u[2, 0] == pytest.approx(0.5 * 10.0 / 2.0)  # the intermediate
    assert u[3, 0] == pytest.approx((10.0 + 0.25 * (0.0 - 10.0)) / 2.0)  # leg 2, lambda 1/4
    assert u[4, 0] == pytest.approx(10.0 / 2.0)  # leg 2, lambda 0: the displaced energy


def _two_ligand_system():
    """A fixed 'receptor' atom 0, ligand A (atoms 1, 2, bonded) and ligand B (3, 4, bonded),
    all with LJ and charges."""
    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    bonds = openmm.HarmonicBondForce()
    for k, q in enumerate([-0.4, 0.3, -0.2, 0.25, -0.1]):
        system.addParticle(12.0)
        nb.addParticle(q, 0.3, 0.5)
    for i, j in ((1, 2), (3, 4)):
        bonds.addBond(i, j, 0.15, 1e5)
        nb.addException(i, j, 0.0, 0.3, 0.0)
    system.addForce(nb)
    system.addForce(bonds)
    return system


POSITIONS = np.array([[0.0, 0.0, 0.0], [0.35, 0.05, 0.0], [0.45, 0.12, 0.05], [3.3, -0.1, 0.2], [3.42, -0.05, 0.28]])


def test_atm_end_states_are_the_real_and_the_displaced_system():
    reference = _context(_two_ligand_system(), POSITIONS)
    e_real = _energy(reference)
    displaced = POSITIONS.copy()
    displaced[1:3] += D
    displaced[3:5] -= D
    reference.setPositions([openmm.Vec3(*p) for p in displaced])
    e_displaced = _energy(reference)
    system = _two_ligand_system()
    add_atm_force(system, {1: D, 2: D, 3: -D, 4: -D})
    assert "NonbondedForce" not in [type(f).__name__ for f in system.getForces()]
    ctx = _context(system, POSITIONS)
    states = linear_schedule(3)
    set_state(ctx, states[0])  # leg 1, lambda 0: A bound
    assert _energy(ctx) == pytest.approx(e_real, rel=1e-10)
    set_state(ctx, states[-1])  # leg 2, lambda 0: B bound
    assert _energy(ctx) == pytest.approx(e_displaced, rel=1e-10)
    set_state(ctx, states[2])  # both legs meet at lambda = 1/2
    half = _energy(ctx)
    set_state(ctx, ATMState(0.5, 0.5, direction=-1, leg=2, s=0.5))
    assert _energy(ctx) == pytest.approx(half, rel=1e-12)
    assert half == pytest.approx(0.5 * (e_real + e_displaced), rel=1e-10)


def test_atm_system_refuses_what_a_displacement_would_change():
    system = _two_ligand_system()
    system.getForce(1).addBond(0, 1, 0.3, 100.0)  # a receptor-ligand bond
    with pytest.raises(ValueError, match="joins atoms \\[0, 1\\]"):
        add_atm_force(system, {1: D, 2: D, 3: -D, 4: -D})
    system = _two_ligand_system()
    system.addForce(openmm.CustomExternalForce("x"))
    with pytest.raises(ValueError, match="CustomExternalForce is not known"):
        add_atm_force(system, {1: D, 2: D})
    system = _two_ligand_system()
    add_atm_force(system, {1: D, 2: D})
    with pytest.raises(ValueError, match="already has an ATMForce"):
        add_atm_force(system, {1: D, 2: D})
    with pytest.raises(ValueError, match="joins atoms \\[1, 2\\]"):  # half a ligand displaced
        add_atm_force(_two_ligand_system(), {1: D})
    with pytest.raises(ValueError, match="not in the system"):
        add_atm_force(_two_ligand_system(), {9: D})
    with pytest.raises(ValueError, match="direction must be 1 or -1"):
        ATMState(0.0, 0.0, direction=0)
    with pytest.raises(ValueError, match="need alpha > 0"):
        ATMState(0.1, 0.2)


def _alignment_numpy(x, d, kd, kt, kp):
    a, b = x[1] - x[0], x[4] - x[3]
    c, f = x[2] - x[0], x[5] - x[3]
    na, nb = np.cross(a, c), np.cross(b, f)  # the reference planes' normals
    cos_t = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    cos_p = na @ nb / np.linalg.norm(na) / np.linalg.norm(nb)
    return 0.5 * kd * np.sum((x[3] - x[0] - d) ** 2) + 0.5 * kt * (1 - cos_t) + 0.5 * kp * (1 - cos_p)


def test_alignment_and_centroid_restraints():
    rng = np.random.default_rng(3)
    a = rng.normal(scale=0.15, size=(3, 3))
    system = openmm.System()
    for _ in range(7):
        system.addParticle(10.0)
    add_alignment_restraint(system, [0, 1, 2], [3, 4, 5], D, k_distance=1000.0, k_theta=40.0, k_psi=30.0)
    group = add_centroid_restraint(system, [6], [0, 1, 2], offset_nm=(0.0, 0.0, 0.0), k=500.0, tolerance_nm=0.1)
    system.getForce(group).setForceGroup(2)
    x = np.vstack([a, a + D, [[0.0, 0.0, 0.0]]])
    ctx = _context(system, x)
    assert _energy(ctx, {0}) == pytest.approx(0.0, abs=1e-9)  # B is A translated by d
    for _ in range(3):
        y = x + rng.normal(scale=0.05, size=x.shape)
        ctx.setPositions([openmm.Vec3(*p) for p in y])
        assert _energy(ctx, {0}) == pytest.approx(_alignment_numpy(y, D, 1000.0, 40.0, 30.0), rel=1e-9)
        ctx.setPositions([openmm.Vec3(*p) for p in y + np.array([0.7, -0.2, 1.1])])  # rigid translation
        assert _energy(ctx, {0}) == pytest.approx(_alignment_numpy(y, D, 1000.0, 40.0, 30.0), rel=1e-9)
    # B's third-atom vector along A's first axis (where a psi measured about A's axis divides
    # by zero) and its plane flipped: finite forces, the energy of the flipped plane
    y = x.copy()
    y[:3] = [[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]
    y[3:6] = np.array([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.1 + 1e-7, 1e-7, 0.0]]) + D
    ctx.setPositions([openmm.Vec3(*p) for p in y])
    forces = ctx.getState(getForces=True, groups={0}).getForces(asNumpy=True).value_in_unit(
        openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    assert np.all(np.isfinite(forces)) and np.abs(forces).max() < 1e4
    assert _energy(ctx, {0}) == pytest.approx(_alignment_numpy(y, D, 1000.0, 40.0, 30.0), rel=1e-6)
    centroid = a.mean(axis=0)  # equal masses
    r = np.linalg.norm(centroid)
    expected = 0.5 * 500.0 * max(r - 0.1, 0.0) ** 2
    ctx.setPositions([openmm.Vec3(*p) for p in x])
    assert _energy(ctx, {2}) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    shifted = x.copy()
    shifted[:3] += np.array([0.5, 0.0, 0.0]) - centroid  # centroid 0.5 nm from the site
    ctx.setPositions([openmm.Vec3(*p) for p in shifted])
    assert _energy(ctx, {2}) == pytest.approx(0.5 * 500.0 * 0.4 ** 2, rel=1e-9)


# -- an exact relative binding free energy ------------------------------------------------------
EPS_A, EPS_B, SIGMA, K_R, T = 8.0, 3.0, 0.05, 1000.0, 300.0  # kJ/mol, nm, kJ/mol/nm^2, K


def _exact_ddG_kT(kT):
    """G(B bound) - G(A bound) (kT): each bound ligand feels -eps exp(-r^2 / 2 sigma^2) on top of
    its harmonic site restraint; the unbound partner's restraint integral cancels."""
    def z(eps):
        return quad(lambda r: r * r * np.exp(-(0.5 * K_R * r * r - eps * np.exp(-r * r / (2 * SIGMA ** 2))) / kT),
                    0.0, 1.0, epsabs=0, epsrel=1e-12, limit=200)[0]

    return -np.log(z(EPS_B) / z(EPS_A))


def _well_system(soft: SoftCore = SoftCore()):
    """Receptor atom 0 (fixed, at the site), ligand particles A (1) and B (2): a Gaussian well
    between the receptor and each ligand (inside the ATMForce), harmonic restraints of A to
    the site and B to the site + d (outside)."""
    system = openmm.System()
    for mass in (0.0, 10.0, 10.0):
        system.addParticle(mass)
    well = openmm.CustomNonbondedForce("-eps1*eps2*exp(-r^2/(2*sigma^2))")
    well.addGlobalParameter("sigma", SIGMA)
    well.addPerParticleParameter("eps")
    for eps in (1.0, EPS_A, EPS_B):
        well.addParticle([eps])
    well.addInteractionGroup([0], [1, 2])
    system.addForce(well)
    atm_index = add_atm_force(system, {1: D, 2: -D}, soft=soft)
    restraint = openmm.CustomExternalForce("0.5*kr*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    restraint.addGlobalParameter("kr", K_R)
    for name in ("x0", "y0", "z0"):
        restraint.addPerParticleParameter(name)
    restraint.addParticle(1, [0.0, 0.0, 0.0])
    restraint.addParticle(2, list(D))
    system.addForce(restraint)
    return system, atm_index


def test_atm_energies_equal_one_evaluation_per_state():
    """The sampler's shortcut (every state from one (u0, u1)) against setting each state's
    parameters and evaluating the context, on a configuration inside the soft core."""
    soft = SoftCore(umax=5.0, ubcore=1.0)
    system, _ = _well_system(soft)
    states = linear_schedule(4)
    ctx = _context(system, [[0, 0, 0], [0.02, 0.01, 0], D + np.array([0.03, -0.02, 0.01])])
    kT = MOLAR_GAS_CONSTANT_KJ * T
    spec = {"states": [st.as_dict() for st in states], "soft": {"umax": 5.0, "ubcore": 1.0, "acore": 0.0625}}
    shortcut = ATMEnergies(system, spec, kT)
    with pytest.raises(ValueError, match="differs from its ATMForce"):
        ATMEnergies(system, {**spec, "soft": {"umax": 6.0, "ubcore": 1.0, "acore": 0.0625}}, kT)
    for k, state in enumerate(states):
        set_state(ctx, state)
        u, d = shortcut(ctx, k)
        set_state(ctx, state)
        reference, _ = state_energies(ctx, [st.parameters() for st in states], kT, state.parameters(), [], 1e-3)
        assert u - u[0] == pytest.approx(reference - reference[0], abs=1e-9)
        assert d.shape == (1,)
    u0, u1 = perturbation_energies(shortcut.atm, ctx)
    assert abs(u1 - u0) > soft.ubcore  # the configuration is inside the soft core


def test_relative_binding_free_energy_is_exact_on_an_analytic_model(tmp_path):
    """The whole ATM route (system, restraints, the engine's resumable sampler, MBAR/TI along
    the path) on two ligands whose bound free energies are known by quadrature."""
    system, _ = _well_system()
    settings = SamplingSettings(temperature_K=T, timestep_fs=4.0, friction_per_ps=20.0, equilibration_ps=2.0,
                                production_ps=80.0, sample_every_ps=0.1, platform="Reference", seed=3,
                                checkpoint_every_samples=200)
    states = linear_schedule(6)
    start = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], D + 0.01])
    prepare_atm_leg(tmp_path / "atm", system, start, states, settings)
    run_leg(tmp_path / "atm", workers=1, progress=False)
    result = analyze_atm_leg(tmp_path / "atm", detect_equilibration=False)
    exact = _exact_ddG_kT(settings.kT_kj_mol)
    assert abs(exact) > 1.0  # the two ligands differ by more than 1 kT
    assert result.ddG_err_kT < 0.1
    assert result.ddG_kT == pytest.approx(exact, abs=max(4 * result.ddG_err_kT, 0.03))
    assert result.leg1_kT[0] - result.leg2_kT[0] == pytest.approx(result.ddG_kT, abs=1e-9)
    assert result.path.estimates["TI_cubic"].value == pytest.approx(exact, abs=0.15)
    assert result.path.estimates["BAR"].value == pytest.approx(exact, abs=max(4 * result.ddG_err_kT, 0.03))
    assert result.path.min_neighbour_overlap > 0.03
    files = write_atm_report(tmp_path / "atm", result, settings.kT_kj_mol / 4.184)
    record = json.loads(files["result"].read_text())
    assert set(record) >= {"ddG_kcal_mol", "ddG_err_kcal_mol", "leg1_kcal_mol", "leg2_kcal_mol", "estimators"}
    assert record["ddG_kcal_mol"] == pytest.approx(result.ddG_kT * settings.kT_kj_mol / 4.184)
    assert all(files[k].stat().st_size > 1000 for k in ("overlap", "convergence", "dudl"))
