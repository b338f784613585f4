"""The ML/MM end-state correction: the interpolated Hamiltonian's end states and analytic
dU/dlambda with the shipped model (both OpenMM routes, vacuum and water), an exact free energy
(a harmonic bond whose "ML" force constant differs) through the whole sampler and estimators,
the FEP diagnostics, and the ensemble members' corrections by reweighting."""
import numpy as np
import openmm
import pytest
from openmm import unit
from scipy.integrate import quad

from mlff.md_workflows.free_energy import ml_interpolation as mi
from mlff.md_workflows.free_energy.ml_correction import (CorrectionLeg, analyze_correction,
                                                         sample_correction)
from mlff.md_workflows.free_energy.ml_reweighting import (MAX_WORK_SPREAD_KT, fep_screen,
                                                          solute_energies)
from mlff.md_workflows.free_energy.parametrize import (ligand_atom_indices, parametrize_ligand,
                                                       solvated_system, vacuum_system)
from mlff.md_workflows.free_energy.sampling import MOLAR_GAS_CONSTANT_KJ, SamplingSettings

KT = MOLAR_GAS_CONSTANT_KJ * 300.0


def _context(system, pos, platform="Reference"):
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(pos)
    return ctx


def _energy(ctx, lam=None):
    if lam is not None:
        ctx.setParameter(mi.LAMBDA_ML, lam)
    state = ctx.getState(getEnergy=True, getParameterDerivatives=True)
    d = state.getEnergyParameterDerivatives()
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            d[mi.LAMBDA_ML] if mi.LAMBDA_ML in d.keys() else None)


@pytest.fixture(scope="module")
def ethanol(tmp_path_factory):
    params = parametrize_ligand("CCO", name="ethanol", cache_dir=tmp_path_factory.mktemp("cache"))
    top_v, sys_v, pos_v = vacuum_system(params)
    top_w, sys_w, pos_w = solvated_system(params, box_edge_nm=2.0)
    numbers = [a.element.atomic_number for a in top_v.atoms()]
    rng = np.random.default_rng(0)
    pv = np.asarray(pos_v.value_in_unit(unit.nanometer)) + rng.normal(0, 0.004, (len(numbers), 3))
    pw = np.asarray(pos_w.value_in_unit(unit.nanometer))
    solute = ligand_atom_indices(top_w)
    pw[solute] = pv
    return {"vacuum": (sys_v, pv, ligand_atom_indices(top_v)), "water": (sys_w, pw, solute),
            "numbers": numbers}


def _ml_energy_kj(numbers, pos_nm, model="default"):
    from ase import Atoms

    from mlff.graph import atoms_to_graph
    from mlff.io import resolve_model
    from mlff.units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

    p = resolve_model(model)
    g = atoms_to_graph(Atoms(numbers=numbers, positions=pos_nm * NM_TO_ANGSTROM), p.r_cut, p.elements)
    return float(p(g, False, False)["energy"].sum()) * EV_TO_KJ_PER_MOL


@pytest.mark.parametrize("route", ["torch", "python"])
@pytest.mark.parametrize("leg", ["vacuum", "water"])
def test_end_states_and_analytic_derivative(ethanol, leg, route):
    """lambda = 0 is the MM System to round-off; lambda = 1 is MM - MM(solute intra) + ML - c;
    the declared dU/dlambda equals a central difference of the energy in lambda (U is linear
    in lambda, so the difference is exact up to round-off) and U_ML - c - U_MM(intra)."""
    system, pos, solute = ethanol[leg]
    sys_v = ethanol["vacuum"][0]
    numbers = ethanol["numbers"]
    offset = 123.4
    spec = mi.model_spec("default", solute, numbers, route=route, offset_kj_mol=offset)
    interpolated, _ = mi.interpolated_system(system, spec)
    e_mm = _energy(_context(system, pos))[0]
    ctx = _context(interpolated, pos)
    e0, d0 = _energy(ctx, 0.0)
    e1, d1 = _energy(ctx, 1.0)
    assert e0 == pytest.approx(e_mm, abs=1e-6 * max(1.0, abs(e_mm)))
    intra = _energy(_context(sys_v, pos[solute]))[0]
    e_ml = _ml_energy_kj(numbers, pos[solute])
    assert e1 == pytest.approx(e_mm - intra + e_ml - offset, abs=2e-3)
    h = 1e-3
    ep, dm = _energy(ctx, 0.3 + h)[0], _energy(ctx, 0.3 - h)[0]
    d = _energy(ctx, 0.3)[1]
    assert d == pytest.approx((ep - dm) / (2 * h), abs=1e-3 * max(1.0, abs(d)))
    assert d0 == pytest.approx(d, abs=1e-6) and d1 == pytest.approx(d, abs=1e-6)
    assert d == pytest.approx(e_ml - offset - intra, abs=2e-3)
    assert abs(d) > 1.0  # the perturbed geometry makes ML and MM differ: the test can fail


def test_a_tensornet_model_drives_the_correction_with_no_special_case(ethanol, saved_model, tmp_path):
    """The same interpolated Hamiltonian with a TensorNet model file: end state and analytic
    dU/dlambda equal the model's own energy (the free-energy pipeline knows no model type)."""
    system, pos, solute = ethanol["water"]
    numbers = ethanol["numbers"]
    model = str(saved_model(tmp_path, name="tensornet.pt", model_type="tensornet", scale=0.5))
    spec = mi.model_spec(model, solute, numbers, route="torch", offset_kj_mol=0.0)
    interpolated, _ = mi.interpolated_system(system, spec)
    ctx = _context(interpolated, pos)
    e0, _ = _energy(ctx, 0.0)
    e1, d = _energy(ctx, 1.0)
    intra = _energy(_context(ethanol["vacuum"][0], pos[solute]))[0]
    e_ml = _ml_energy_kj(numbers, pos[solute], model)
    assert e1 - e0 == pytest.approx(e_ml - intra, abs=2e-3)
    assert d == pytest.approx(e_ml - intra, abs=2e-3)


def test_split_refuses_unknown_forces_and_reaction_field():
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    force = openmm.CustomCompoundBondForce(3, "angle(p1, p2, p3)")
    force.addBond([0, 1, 2], [])
    system.addForce(force)
    with pytest.raises(ValueError, match="CustomCompoundBondForce acts on solute atoms"):
        mi.split_solute_intramolecular(system, [0, 1, 2])
    rf = openmm.System()
    for _ in range(2):
        rf.addParticle(1.0)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    for _ in range(2):
        nb.addParticle(0.1, 0.3, 0.5)
    rf.addForce(nb)
    with pytest.raises(ValueError, match="reaction-field"):
        mi.split_solute_intramolecular(rf, [0, 1])


N_BONDS = 4  # independent bonds: N times the free energy for the same number of steps


def _diatomics(k_nm2: float, r0: float = 0.15):
    """N_BONDS separate two-particle "molecules" with harmonic bonds, and start positions."""
    system = openmm.System()
    bond = openmm.HarmonicBondForce()
    pos = []
    for i in range(N_BONDS):
        system.addParticle(12.0)
        system.addParticle(12.0)
        bond.addBond(2 * i, 2 * i + 1, r0, k_nm2)
        pos += [[i * 1.0, 0.0, 0.0], [i * 1.0 + r0, 0.0, 0.0]]
    system.addForce(bond)
    return system, bond, np.array(pos)


def _exact_dg_kT(k_mm: float, k_ml: float, r0: float = 0.15) -> float:
    """-ln(Z_ML / Z_MM) of a bond with the r^2 Jacobian, by quadrature."""
    def z(k):
        return quad(lambda r: r * r * np.exp(-0.5 * k * (r - r0) ** 2 / KT), 0.0, r0 + 40 * np.sqrt(KT / k))[0]
    return -np.log(z(k_ml) / z(k_mm))


def _settings(seed, production_ps):
    return SamplingSettings(temperature_K=300.0, timestep_fs=4.0, friction_per_ps=10.0,
                            equilibration_ps=2.0, production_ps=production_ps, sample_every_ps=0.1,
                            platform="Reference", seed=seed, checkpoint_every_samples=200,
                            minimize=False)


def test_exact_correction_of_a_harmonic_bond(tmp_path):
    """MM bond k = 800, "ML" bond k = 1400 kJ/mol/nm^2 (a plain OpenMM force standing in for
    the model, through the same interpolation, sampler and estimators): MBAR, BAR, TI on the
    analytic dU/dlambda and the forward FEP screen give -kT ln(Z_ML/Z_MM) - c/kT within their
    errors. (Forward is the well-behaved direction here: from the broader distribution to the
    narrower one; the other way the exponential average has an infinite variance.)"""
    k_mm, k_ml, offset = 800.0, 1400.0, 1.5
    system, _, pos = _diatomics(k_mm)
    ml_system, ml_bond, _ = _diatomics(k_ml)  # the System owns the force: keep it alive
    atoms = list(range(2 * N_BONDS))
    spec = mi.force_spec(ml_bond, atoms, offset_kj_mol=offset)
    leg = CorrectionLeg("vacuum", system, pos, None, atoms, spec)
    samples = sample_correction(leg, tmp_path / "leg", [0.0, 0.25, 0.5, 0.75, 1.0],
                                _settings(3, 40.0), progress=False)
    out = analyze_correction("vacuum", samples, spec, None, [6] * len(atoms), tmp_path / "leg",
                             KT / 4.184)
    exact = (N_BONDS * _exact_dg_kT(k_mm, k_ml) - offset / KT) * KT / 4.184  # kcal/mol
    for name in ("MBAR", "TI_cubic", "BAR"):
        e = out["estimates"][name]
        assert abs(e["value"] - exact) < 3 * e["error"] + 0.01, (name, e, exact)
    assert out["ti_vs_mbar_sigma"] < 3
    fwd = out["fep"]["forward_from_lambda0"]
    assert fwd["warning"] is None and abs(fwd["value"] - exact) < 3 * fwd["error"] + 0.02
    assert not [w for w in out["warnings"] if not w.startswith("FEP")]
    assert (tmp_path / "leg" / "dudl.png").stat().st_size > 0
    assert (tmp_path / "leg" / "overlap.png").stat().st_size > 0


def test_poor_overlap_is_flagged(tmp_path):
    """Two windows between bonds of 2000 and 20 kJ/mol/nm^2 barely overlap: the MBAR and FEP
    warnings fire."""
    system, _, pos = _diatomics(2000.0)
    ml_system, ml_bond, _ = _diatomics(20.0)
    atoms = list(range(2 * N_BONDS))
    spec = mi.force_spec(ml_bond, atoms)
    leg = CorrectionLeg("vacuum", system, pos, None, atoms, spec)
    samples = sample_correction(leg, tmp_path / "leg", [0.0, 1.0], _settings(5, 10.0), progress=False)
    out = analyze_correction("vacuum", samples, spec, None, [6] * len(atoms), tmp_path / "leg",
                             KT / 4.184)
    assert out["min_neighbour_overlap"] < 0.03
    assert any("overlap poorly" in w for w in out["warnings"])
    assert out["fep"]["reverse_from_lambda1"]["warning"] is not None


def test_fep_screen_gaussian_work():
    """Gaussian w: dG = mean - var/2 (kT). A narrow distribution is trusted and right; a wide
    one is flagged."""
    rng = np.random.default_rng(0)
    narrow = rng.normal(1.0, 0.5, 4000) * KT
    r = fep_screen(narrow, KT)
    assert r["warning"] is None
    assert r["dG_kT"] == pytest.approx(1.0 - 0.125, abs=4 * r["dG_err_kT"] + 0.01)
    wide = fep_screen(rng.normal(1.0, 2 * MAX_WORK_SPREAD_KT, 4000) * KT, KT)
    assert wide["warning"] is not None and "unreliable" in wide["warning"]


def test_members_reweighted_from_the_mean_model_samples(ethanol, tmp_path):
    """A short vacuum correction with the shipped 4-member ensemble: every estimate finite, four
    member corrections whose spread is the model error, the solute frames' energies agree with
    the windows' own dU/dlambda, and a rerun resumes without sampling."""
    system, pos, solute = ethanol["vacuum"]
    numbers = ethanol["numbers"]
    spec = mi.model_spec("default", solute, numbers, route="torch")
    spec["offset_kj_mol"] = mi.ml_minus_mm(system, spec, pos)
    leg = CorrectionLeg("vacuum", system, pos, None, list(solute), spec)
    settings = SamplingSettings(temperature_K=300.0, timestep_fs=2.0, equilibration_ps=0.1,
                                production_ps=0.6, sample_every_ps=0.05, platform="Reference",
                                seed=1)
    samples = sample_correction(leg, tmp_path / "leg", [0.0, 0.5, 1.0], settings, progress=False)
    assert samples.positions_nm is not None and samples.positions_nm[0].shape == (12, 9, 3)
    # the frames' ML - MM equals the analytic dU/dlambda the window stored with them
    energies = solute_energies(system, numbers, "default", samples.positions_nm[1])
    np.testing.assert_allclose(energies.work(spec["offset_kj_mol"]),
                               samples.dudl[1][:, 0] * settings.kT_kj_mol, atol=0.05)
    out = analyze_correction("vacuum", samples, spec, system, numbers, tmp_path / "leg",
                             settings.kT_kj_mol / 4.184)
    assert np.isfinite(out["dG"]) and out["dG_err"] > 0
    assert len(out["members"]) == 4 and out["model_error"] > 0
    assert out["model_error"] == pytest.approx(np.std(out["members"]))
    stamp = (tmp_path / "leg" / "window_000" / "samples.npz").stat().st_mtime_ns
    again = sample_correction(leg, tmp_path / "leg", [0.0, 0.5, 1.0], settings, progress=False)
    assert (tmp_path / "leg" / "window_000" / "samples.npz").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.u_kln[2], samples.u_kln[2])


def test_nonequilibrium_switching_exact_and_flagged(tmp_path):
    """Switches between MM bonds k = 800 and "ML" bonds k = 1400: BAR on the forward and
    reverse works and both Jarzynski estimates give the exact answer within errors, and a
    rerun resumes from the checkpoint; instantaneous switches to k = 20 are flagged."""
    from mlff.md_workflows.free_energy.ml_switching import SwitchingProtocol, run_switching

    system, _, pos = _diatomics(800.0)
    ml_system, ml_bond, _ = _diatomics(1400.0)
    atoms = list(range(2 * N_BONDS))
    spec = mi.force_spec(ml_bond, atoms)
    protocol = SwitchingProtocol(n_switches=40, switch_ps=1.0, lambda_steps=25, spacing_ps=0.4,
                                 equilibration_ps=2.0)
    out = run_switching(tmp_path / "neq", system, pos, None, spec, _settings(7, 1.0), protocol)
    exact = N_BONDS * _exact_dg_kT(800.0, 1400.0)
    for name in ("bar", "jarzynski_forward", "jarzynski_reverse"):
        e = out[name]
        assert abs(e["value"] - exact) < 3 * e["error"] + 0.05, (name, e, exact)
    assert out["warnings"] == [] and 0 <= out["dissipation_kT"] < 1.0
    again = run_switching(tmp_path / "neq", system, pos, None, spec, _settings(7, 1.0), protocol)
    assert again["bar"] == out["bar"]

    ml_system, soft, _ = _diatomics(20.0)
    fast = SwitchingProtocol(n_switches=10, switch_ps=0.004, lambda_steps=1, spacing_ps=0.2,
                             equilibration_ps=1.0)
    poor = run_switching(tmp_path / "poor", system, pos, None, mi.force_spec(soft, atoms),
                         _settings(8, 1.0), fast)
    assert any("dissipated" in w for w in poor["warnings"])


def test_python_route_samples_like_the_torch_route(ethanol, tmp_path):
    """The PythonForce route (model inside the CustomCVForce) through the sampler: same
    analytic dU/dlambda as the TorchForce route on the same first frame."""
    system, pos, solute = ethanol["vacuum"]
    settings = SamplingSettings(temperature_K=300.0, timestep_fs=2.0, equilibration_ps=0.0,
                                production_ps=0.1, sample_every_ps=0.05, platform="Reference",
                                seed=2, minimize=False)
    first = {}
    for route in ("torch", "python"):
        spec = mi.model_spec("default", solute, ethanol["numbers"], route=route, offset_kj_mol=-29900.0)
        leg = CorrectionLeg("vacuum", system, pos, None, list(solute), spec)
        samples = sample_correction(leg, tmp_path / route, [0.0, 1.0], settings, progress=False)
        first[route] = samples.dudl[0][0, 0]
        assert np.all(np.isfinite(np.concatenate(samples.u_kln, axis=1)))
    assert first["python"] == pytest.approx(first["torch"], abs=1e-3)


def test_switching_with_the_torch_route_starts_at_either_end(ethanol, tmp_path):
    """Switches with the TorchForce route (its lambda parameter shares the CustomCVForce's
    default): both directions run and give finite works."""
    from mlff.md_workflows.free_energy.ml_switching import SwitchingProtocol, run_switching

    system, pos, solute = ethanol["vacuum"]
    spec = mi.model_spec("default", solute, ethanol["numbers"], offset_kj_mol=-29900.0)
    settings = SamplingSettings(temperature_K=300.0, timestep_fs=1.0, platform="Reference", seed=4)
    protocol = SwitchingProtocol(n_switches=2, switch_ps=0.01, lambda_steps=2, spacing_ps=0.005,
                                 equilibration_ps=0.0)
    out = run_switching(tmp_path / "neq", system, pos, None, spec, settings, protocol)
    assert out["n_switches"] == [2, 2] and np.isfinite(out["bar"]["value"])


def test_config_rejects_bad_ml_settings():
    from mlff.md_workflows.free_energy.hydration_config import HydrationConfig

    with pytest.raises(ValueError, match="ml_windows must rise from 0 to 1"):
        HydrationConfig(smiles="C", model="default", ml_windows=(0.0, 0.5))
    with pytest.raises(ValueError, match="ml_route"):
        HydrationConfig(smiles="C", model="default", ml_route="jit")
    with pytest.raises(ValueError, match="fewer than 3 samples"):
        HydrationConfig(smiles="C", model="default", ml_production_ps=1.0)
    with pytest.raises(ValueError, match="ml_switches"):
        HydrationConfig(smiles="C", model="default", ml_switches=1)
    assert HydrationConfig(smiles="C", model="default").ml_windows == (0.0, 0.25, 0.5, 0.75, 1.0)
