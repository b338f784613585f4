"""Exact validation of the free-energy engine: harmonic oscillators sampled by the same
sampler (OpenMM Langevin, per-window checkpoints) and analysed by the same estimators as the
hydration free energies. dG = f(last) - f(first) = (d N / 2) ln(k_last / k_first) kT for N
independent d-dimensional oscillators; moving the centre changes nothing."""
import json
import math

import numpy as np
import openmm
import pytest

from mlff.md_workflows.free_energy.estimators import analyze
from mlff.md_workflows.free_energy.sampling import SamplingSettings, load_leg, prepare_leg, run_leg, run_window


def oscillators(n: int, dim: int, k0: float, k1: float, shift_nm: float, mass: float = 12.0):
    """N particles in a harmonic well (kJ/mol/nm^2) whose constant and centre move with lambda."""
    system = openmm.System()
    for _ in range(n):
        system.addParticle(mass)
    coords = ["x", "y", "z"][:dim]
    expr = "0.5*kl*(" + "+".join(f"({c}-{c}0-lambda*shift)^2" for c in coords) + ")"
    expr += "; kl = k0 + lambda*(k1 - k0)"
    force = openmm.CustomExternalForce(expr)
    force.addGlobalParameter("lambda", 0.0)
    for name, value in (("k0", k0), ("k1", k1), ("shift", shift_nm)):
        force.addGlobalParameter(name, value)
    for c in coords:
        force.addPerParticleParameter(f"{c}0")
    rng = np.random.default_rng(1)
    centres = rng.uniform(-1, 1, (n, dim))
    for i in range(n):
        force.addParticle(i, list(centres[i]))
    system.addForce(force)
    positions = np.zeros((n, 3))
    positions[:, :dim] = centres
    return system, positions


def settings(seed: int, production_ps: float = 150.0) -> SamplingSettings:
    return SamplingSettings(temperature_K=300.0, timestep_fs=4.0, friction_per_ps=20.0,
                            equilibration_ps=2.0, production_ps=production_ps, sample_every_ps=0.25,
                            platform="Reference", seed=seed, checkpoint_every_samples=100,
                            minimize=False)


STATES = [{"lambda": x} for x in np.linspace(0.0, 1.0, 6)]


@pytest.mark.parametrize("dim,n,k0,k1,shift", [(1, 4, 200.0, 800.0, 0.0), (3, 3, 400.0, 100.0, 0.05)])
def test_estimators_match_analytic(tmp_path, dim, n, k0, k1, shift):
    system, pos = oscillators(n, dim, k0, k1, shift)
    out = prepare_leg(tmp_path / "leg", system, pos, STATES, settings(seed=3), ti_parameters=["lambda"])
    leg = run_leg(out, workers=1, progress=False)
    exact = 0.5 * dim * n * math.log(k1 / k0)
    res = analyze(leg.u_kln, leg.dudl, leg.lambdas)
    for name in ("MBAR", "BAR", "TI_cubic", "EXP_forward", "EXP_reverse"):
        est = res.estimates[name]
        assert est.error > 0
        assert abs(est.value - exact) < 2.5 * est.error + 0.02, (name, est, exact)
    # trapezoid has a quadrature bias on 1/k(lambda)-shaped curves; it must still be close
    assert abs(res.estimates["TI_trapezoid"].value - exact) < 0.1 * abs(exact)
    assert res.overlap.shape == (6, 6)
    np.testing.assert_allclose(res.overlap.sum(axis=1), 1.0, atol=1e-8)
    assert res.min_neighbour_overlap > 0.05


def test_reported_errors_are_honest(tmp_path):
    """Across independent seeds, the spread of MBAR and BAR estimates matches their errors."""
    n, dim, k0, k1 = 2, 3, 200.0, 600.0
    exact = 0.5 * dim * n * math.log(k1 / k0)
    z = {"MBAR": [], "BAR": [], "TI_cubic": []}
    for seed in range(8):
        system, pos = oscillators(n, dim, k0, k1, 0.02)
        out = prepare_leg(tmp_path / f"s{seed}", system, pos, STATES, settings(seed, 60.0),
                          ti_parameters=["lambda"])
        leg = run_leg(out, workers=1, progress=False)
        res = analyze(leg.u_kln, leg.dudl, leg.lambdas, with_convergence=False)
        for name in z:
            e = res.estimates[name]
            z[name].append((e.value - exact) / e.error)
    for name, values in z.items():
        rms = float(np.sqrt(np.mean(np.square(values))))
        # 8 standard normals: RMS z lies in [0.45, 1.6] with probability > 99%
        assert 0.4 < rms < 1.7, (name, values)


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    """A window stopped after a checkpoint and resumed gives exactly the uninterrupted samples."""
    system, pos = oscillators(2, 3, 200.0, 400.0, 0.0)
    s = settings(seed=5, production_ps=10.0)
    s = SamplingSettings(**{**s.__dict__, "checkpoint_every_samples": 8})
    full = prepare_leg(tmp_path / "full", system, pos, STATES[:2], s, ["lambda"])
    run_window(full, 0)
    part = prepare_leg(tmp_path / "part", system, pos, STATES[:2], s, ["lambda"])
    # emulate a kill: run to completion, then cut the file back to the 16-sample checkpoint
    import mlff.md_workflows.free_energy.sampling as sampling

    calls = {"n": 0}
    real = sampling.atomic_savez

    def crash_after_third_save(path, **arrays):
        real(path, **arrays)
        calls["n"] += 1
        if calls["n"] == 3:  # saves at 0, 8, 16 samples
            raise KeyboardInterrupt("simulated kill")

    sampling.atomic_savez = crash_after_third_save
    try:
        with pytest.raises(KeyboardInterrupt):
            run_window(part, 0)
    finally:
        sampling.atomic_savez = real
    assert json.loads((part / "window_000" / "progress.json").read_text())["done"] in (8, 16)
    assert int(np.load(part / "window_000" / "samples.npz")["done_samples"]) == 16
    run_window(part, 0)
    a = np.load(full / "window_000" / "samples.npz")
    b = np.load(part / "window_000" / "samples.npz")
    np.testing.assert_array_equal(a["time_ps"], b["time_ps"])
    np.testing.assert_allclose(a["u_kln"], b["u_kln"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["dudl"], b["dudl"], rtol=0, atol=1e-12)


def test_longer_production_extends_windows_exactly(tmp_path):
    """Re-preparing a leg with a longer production continues each window from its last
    checkpoint: the samples equal one uninterrupted run of the longer length; shorter is refused."""
    system, pos = oscillators(2, 3, 200.0, 400.0, 0.0)
    short, long_ = settings(seed=3, production_ps=8.0), settings(seed=3, production_ps=12.0)
    full = prepare_leg(tmp_path / "full", system, pos, STATES[:2], long_, ["lambda"])
    run_window(full, 0)
    ext = prepare_leg(tmp_path / "ext", system, pos, STATES[:2], short, ["lambda"])
    run_window(ext, 0)
    prepare_leg(ext, system, pos, STATES[:2], long_, ["lambda"])
    run_window(ext, 0)
    a = np.load(full / "window_000" / "samples.npz")
    b = np.load(ext / "window_000" / "samples.npz")
    assert int(b["done_samples"]) == long_.n_samples
    np.testing.assert_array_equal(a["time_ps"], b["time_ps"])
    np.testing.assert_allclose(a["u_kln"], b["u_kln"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="would drop samples"):
        prepare_leg(ext, system, pos, STATES[:2], short, ["lambda"])


def test_bad_inputs_are_named(tmp_path):
    system, pos = oscillators(1, 1, 100.0, 200.0, 0.0)
    with pytest.raises(ValueError, match="no force of the system defines"):
        prepare_leg(tmp_path / "a", system, pos, [{"lambda_x": 0.0}, {"lambda_x": 1.0}], settings(0))
    with pytest.raises(ValueError, match="at least two states"):
        prepare_leg(tmp_path / "b", system, pos, [{"lambda": 0.0}], settings(0))
    with pytest.raises(ValueError, match="production_ps"):
        SamplingSettings(production_ps=0.1, sample_every_ps=1.0)
    with pytest.raises(RuntimeError, match="not finished"):
        prepare_leg(tmp_path / "c", system, pos, STATES[:2], settings(0))
        load_leg(tmp_path / "c")


def test_decorrelation_ignores_what_no_estimator_sees():
    """A slowly drifting energy common to every state (a solvent's own energy) changes no
    estimate, so it must change neither the equilibration cut nor the samples kept."""
    from mlff.md_workflows.free_energy.estimators import subsample

    rng = np.random.default_rng(7)
    n, k = 400, 4
    # independent samples of three linear-response windows: work values are white noise
    u_kln = []
    for i in range(k):
        x = rng.normal(size=n)
        u_kln.append(np.stack([0.5 * (j - i) ** 2 + (j - i) * x for j in range(k)]))
    plain = subsample(u_kln)
    # add a slow common drift (an AR(1) process with a 50-sample memory) to every row
    drift = np.zeros(n)
    for t in range(1, n):
        drift[t] = 0.98 * drift[t - 1] + rng.normal() * 5.0
    drifted = subsample([u + drift for u in u_kln])
    # the drift is slow enough that a rule based on u_k itself would keep under a tenth
    from pymbar import timeseries

    assert timeseries.statistical_inefficiency(u_kln[1][1] + drift) > 10
    assert sum(len(i) for i in drifted.indices) > 0.5 * n * k
    for a, b in zip(plain.indices, drifted.indices):
        np.testing.assert_array_equal(a, b)


def test_a_window_that_blows_up_fails_at_once_and_saves_no_nan(tmp_path):
    """A stiff state sampled with a far too long timestep: the window stops with a named error
    at the first non-finite frame instead of recording NaN samples for the analysis to trip on."""
    from mlff.md_workflows.free_energy.sampling import SimulationUnstableError

    system, pos = oscillators(2, 3, 100.0, 5.0e7, 0.0)
    s = SamplingSettings(temperature_K=300.0, timestep_fs=4.0, friction_per_ps=1.0,
                         equilibration_ps=0.4, production_ps=2.0, sample_every_ps=0.2,
                         platform="Reference", seed=1, checkpoint_every_samples=1, minimize=False)
    out = prepare_leg(tmp_path / "leg", system, pos, [{"lambda": 0.0}, {"lambda": 1.0}], s,
                      ti_parameters=["lambda"])
    run_window(out, 0)  # the soft end is fine
    with pytest.raises(SimulationUnstableError, match=r"window 1 \(lambda=1\) blew up.*timestep"):
        run_window(out, 1)
    saved = out / "window_001" / "samples.npz"
    assert not saved.exists() or int(np.load(saved)["done_samples"]) == 0


def test_window_killed_with_sigkill_resumes_to_the_uninterrupted_samples(tmp_path):
    """A real kill -9 of the process sampling a window, at a moment nobody chose, then a resume:
    the samples equal those of one uninterrupted run (the window restarts from its last
    checkpoint; what was sampled after it is sampled again, identically)."""
    import signal
    import subprocess
    import sys
    import time

    system, pos = oscillators(40, 3, 200.0, 400.0, 0.0)
    s = SamplingSettings(**{**settings(seed=9, production_ps=400.0).__dict__, "checkpoint_every_samples": 50})
    full = prepare_leg(tmp_path / "full", system, pos, STATES[:2], s, ["lambda"])
    part = prepare_leg(tmp_path / "part", system, pos, STATES[:2], s, ["lambda"])
    script = ("import sys; from mlff.md_workflows.free_energy.sampling import run_window; "
              "run_window(sys.argv[1], 0)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(part)])
    progress = part / "window_000" / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["done"] >= 100:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the window finished before it could be killed: sample longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = int(np.load(part / "window_000" / "samples.npz")["done_samples"])
    assert 100 <= kept < s.n_samples
    run_window(part, 0)
    run_window(full, 0)
    a = np.load(full / "window_000" / "samples.npz")
    b = np.load(part / "window_000" / "samples.npz")
    assert int(b["done_samples"]) == s.n_samples
    np.testing.assert_array_equal(a["time_ps"], b["time_ps"])
    np.testing.assert_array_equal(a["u_kln"], b["u_kln"])
    np.testing.assert_array_equal(a["dudl"], b["dudl"])
