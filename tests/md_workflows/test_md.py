"""MD workflows end to end on small inputs with tiny random float64 models (conftest.py):
energy conservation (NVE), thermostat (NVT), exact resume, the uncertainty stop, the demo."""

import csv

import numpy as np
import pytest

from mlff.md_workflows.cli import main
from mlff.md_workflows.md import MDConfig, read_frames, run_md

from conftest import ALANINE, grid_gas


def _log(out):
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


def _col(rows, key):
    return np.array([float(r[key]) for r in rows])


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_nve_conserves_energy(engine, tmp_path, model_paths, capsys):
    g = grid_gas(tmp_path)
    cfg = MDConfig(structure=str(g), out=str(tmp_path / "run"), model=str(model_paths["single"]),
                   engine=engine, ensemble="nve", temperature_K=300.0, timestep_fs=0.5, steps=1000,
                   report_every=10, progress=False)
    result = run_md(cfg)
    rows = _log(tmp_path / "run")
    assert result.n_frames == len(rows) == 101
    t, e = _col(rows, "time_ps"), _col(rows, "total_eV")
    n_atoms = 18
    drift = np.polyfit(t, e, 1)[0] / n_atoms  # eV/atom/ps
    spread = (e.max() - e.min()) / n_atoms
    with capsys.disabled():
        print(f"\n[{engine} NVE 0.5 ps, 0.5 fs] drift {drift:.2e} eV/atom/ps, "
              f"max-min {spread:.2e} eV/atom")
    assert abs(drift) < 1e-4
    assert spread < 1e-4
    assert np.ptp(_col(rows, "kinetic_eV")) > 10 * np.ptp(e)  # energy flows, the total stays


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_nvt_mean_temperature(engine, tmp_path, model_paths, capsys):
    g = grid_gas(tmp_path)
    cfg = MDConfig(structure=str(g), out=str(tmp_path / "run"), model=str(model_paths["single"]),
                   engine=engine, ensemble="nvt", temperature_K=300.0, timestep_fs=1.0, steps=2000,
                   report_every=10, friction_per_ps=50.0, progress=False)
    run_md(cfg)
    temps = _col(_log(tmp_path / "run"), "temperature_K")[50:]  # after 0.5 ps
    with capsys.disabled():
        print(f"\n[{engine} NVT 300 K] mean T {temps.mean():.1f} K over {len(temps)} samples")
    assert abs(temps.mean() - 300.0) < 0.05 * 300.0


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_resume_equals_uninterrupted(engine, tmp_path, model_paths):
    common = dict(structure=str(ALANINE), model=str(model_paths["ensemble"]), engine=engine,
                  ensemble="nvt", temperature_K=300.0, timestep_fs=0.5, report_every=10, seed=7,
                  progress=False)
    full = run_md(MDConfig(out=str(tmp_path / "full"), steps=60, **common))
    part = tmp_path / "part"
    run_md(MDConfig(out=str(part), steps=30, **common))
    # a kill after the checkpoint leaves a frame and a log row the checkpoint does not know
    with open(part / "frames.bin", "ab") as f:
        f.write(np.zeros((22, 3), dtype=np.float32).tobytes())
    with open(part / "log.csv", "a") as f:
        f.write("40" + ",0" * 10 + "\n")
    with pytest.raises(FileExistsError):
        run_md(MDConfig(out=str(part), steps=60, **common))
    resumed = run_md(MDConfig(out=str(part), steps=60, **common), resume=True)
    assert resumed.steps_done == full.steps_done == 60
    a, b = read_frames(tmp_path / "full", 22), read_frames(part, 22)
    assert a.shape == b.shape == (7, 22, 3)
    np.testing.assert_allclose(b, a, atol=1e-5)
    la, lb = _log(tmp_path / "full"), _log(part)
    assert [r["step"] for r in lb] == [str(s) for s in range(0, 61, 10)]
    np.testing.assert_allclose(_col(lb, "total_eV"), _col(la, "total_eV"), atol=1e-6)
    # one line ending throughout: rows appended and rows rewritten on resume alike
    for log in (tmp_path / "full" / "log.csv", part / "log.csv"):
        assert b"\r" not in log.read_bytes()
    import mdtraj

    traj = mdtraj.load(str(part / "trajectory.dcd"), top=str(part / "topology.pdb"))
    assert traj.n_frames == 7


def _broken_alanine(tmp_path, model):
    """Alanine dipeptide with the two methyl hydrogens of ACE squeezed to 0.35 A, and the
    normal and broken max force std of ``model``."""
    import ase.io

    from mlff.calculators.ase import MLFFCalculator
    from mlff.md_workflows.uq import per_atom_force_std

    atoms = ase.io.read(ALANINE)
    calc = MLFFCalculator(str(model))
    atoms.calc = calc
    atoms.get_forces()
    normal = per_atom_force_std(calc.results["forces_std"]).max()
    broken = atoms.copy()
    d = broken.positions[4] - broken.positions[3]
    broken.positions[4] = broken.positions[3] + 0.35 * d / np.linalg.norm(d)
    broken.calc = calc
    broken.get_forces()
    bad = per_atom_force_std(calc.results["forces_std"]).max()
    path = tmp_path / "broken.xyz"
    ase.io.write(path, broken)
    return path, normal, bad


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_uq_stop_triggers_on_broken_structure_only(engine, tmp_path, model_paths):
    broken, normal, bad = _broken_alanine(tmp_path, model_paths["ensemble"])
    assert bad > 3 * normal  # the members disagree where the structure is broken
    stop = float(np.sqrt(normal * bad))
    common = dict(model=str(model_paths["ensemble"]), engine=engine, ensemble="nvt",
                  temperature_K=10.0, timestep_fs=0.25, steps=20, report_every=10, progress=False,
                  uq_warn=stop / 2, uq_stop=stop)
    ok = run_md(MDConfig(structure=str(ALANINE), out=str(tmp_path / "ok"), **common))
    assert ok.stopped is None and ok.steps_done == 20
    assert np.all(_col(_log(tmp_path / "ok"), "max_force_std_eV_A") < stop)
    res = run_md(MDConfig(structure=str(broken), out=str(tmp_path / "bad"), **common))
    assert res.stopped is not None and res.steps_done == 0
    assert "step 0" in res.stopped and "3" in res.stopped.split("atom(s)")[1]
    import ase.io

    saved = ase.io.read(tmp_path / "bad" / "uncertain_frames.extxyz", ":")
    assert len(saved) == 1 and saved[0].info["step"] == 0
    assert (tmp_path / "bad" / "trajectory.dcd").exists()  # stopped cleanly: outputs written


def test_uq_options_need_an_ensemble(tmp_path, model_paths):
    with pytest.raises(ValueError, match="ensemble"):
        run_md(MDConfig(structure=str(ALANINE), out=str(tmp_path / "r"), steps=1,
                        model=str(model_paths["single"]), uq_stop=1.0, progress=False))


def test_md_cli_and_analyze(tmp_path, model_paths, capsys):
    out = tmp_path / "md"
    assert main(["md", str(ALANINE), "--model", str(model_paths["single"]), "--steps", "20",
                 "--report-every", "10", "--timestep", "2", "--hmr", "--out", str(out),
                 "--no-progress"]) == 0
    assert "trajectory" in capsys.readouterr().out
    for name in ("trajectory.dcd", "topology.pdb", "log.csv", "traces.png", "final.pdb",
                 "final.extxyz", "checkpoint.npz"):
        assert (out / name).exists(), name
    assert main(["analyze", str(out)]) == 0
    assert (out / "analysis" / "ramachandran.png").exists()
    rows = list(csv.DictReader(open(out / "analysis" / "analysis.csv")))
    assert len(rows) == 3 and "phi0_deg" in rows[0]


def test_demo_at_reduced_length(tmp_path, model_paths, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(model_paths["ensemble"]), "--steps", "20",
                 "--report-every", "10", "--out", str(out), "--threads", "1",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for name in ("trajectory.dcd", "traces.png", "uncertainty.png", "analysis/ramachandran.png"):
        assert (out / name).exists(), name
        assert str(out / name) in printed
    assert main(["demo", "--model", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_uq_reporter_is_registered_and_fires_at_report_steps(model_paths):
    import openmm.unit as u

    from mlff.md_workflows.engines import make_engine
    from mlff.md_workflows.structure import load_structure
    from mlff.md_workflows.uq import UQMonitor, UQReporter

    cfg = MDConfig(structure=str(ALANINE), out="unused", model=str(model_paths["ensemble"]),
                   steps=30, report_every=10, progress=False)
    atoms, topology = load_structure(cfg.structure)
    engine = make_engine(cfg, atoms, topology, UQMonitor())
    reporters = engine.simulation.reporters
    assert len(reporters) == 1 and isinstance(reporters[0], UQReporter)
    assert reporters[0].ml is engine.ml and engine.num_members == 3
    fired = []
    report = reporters[0].report
    reporters[0].report = lambda sim, state: (fired.append(sim.currentStep), report(sim, state))
    engine.step(25)
    assert fired == [10, 20]
    engine.step(5)
    assert fired == [10, 20, 30] and reporters[0].last.step == 30
    # the reporter evaluates the force's own model: its energy is the State's potential energy
    state = reporters[0].state
    energy = engine.ml.evaluate(state)["energy"]
    assert energy == pytest.approx(state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
                                   rel=1e-6)


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_uq_stop_after_steps_saves_the_step_and_resumes(engine, tmp_path, model_paths, monkeypatch):
    # the stop level drops to ~0 from step 10: OpenMM raises inside Simulation.step (reporter)
    from mlff.md_workflows.uq import UQMonitor

    check = UQMonitor.check

    def stop_from_step_10(self, step, *args, **kwargs):
        self.stop = 1e-12 if step >= 10 else None
        return check(self, step, *args, **kwargs)

    common = dict(structure=str(ALANINE), model=str(model_paths["ensemble"]), engine=engine,
                  ensemble="nvt", steps=30, report_every=10, progress=False, seed=2)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(UQMonitor, "check", stop_from_step_10)
        res = run_md(MDConfig(out=str(out), **common))
    assert res.stopped is not None and "step 10" in res.stopped
    assert res.steps_done == 10 and res.n_frames == 2
    assert [r["step"] for r in _log(out)] == ["0", "10"]
    assert np.isfinite(_col(_log(out), "max_force_std_eV_A")).all()
    assert read_frames(out, 22).shape == (2, 22, 3)
    resumed = run_md(MDConfig(out=str(out), **common), resume=True)
    assert resumed.stopped is None and resumed.steps_done == 30
    assert [r["step"] for r in _log(out)] == ["0", "10", "20", "30"]
    assert read_frames(out, 22).shape == (4, 22, 3)


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_tensornet_model_conserves_energy_through_the_cli(engine, tmp_path, saved_model):
    """A TensorNet model file runs in `mlff md` on both engines with nothing model-specific:
    NVE at 0.5 fs conserves the total energy."""
    from conftest import GENTLE_SCALE_EV

    model = saved_model(tmp_path, name="tensornet.pt", model_type="tensornet", scale=GENTLE_SCALE_EV)
    out = tmp_path / "run"
    assert main(["md", str(grid_gas(tmp_path)), "--model", str(model), "--engine", engine,
                 "--ensemble", "nve", "--temperature", "300", "--timestep", "0.5", "--steps", "400",
                 "--report-every", "10", "--out", str(out), "--no-progress"]) == 0
    rows = _log(out)
    e = _col(rows, "total_eV")
    assert len(rows) == 41
    assert (e.max() - e.min()) / 18 < 1e-4
    assert np.ptp(_col(rows, "kinetic_eV")) > 10 * np.ptp(e)
