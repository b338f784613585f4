"""NVE energy conservation with the shipped default model (4-member ensemble, run in float64)
in both engines: 1 ps of phenol at 0.5 fs. Reports the drift and checks for a trend."""
import csv

import numpy as np
import pytest

from mlff.md_workflows.md import MDConfig, run_md
from mlff.assets_path import asset

PHENOL = asset("examples/phenol.xyz")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_default_model_nve_1ps_float64(engine, tmp_path, capsys):
    cfg = MDConfig(structure=str(PHENOL), out=str(tmp_path / "run"), model="default",
                   engine=engine, ensemble="nve", temperature_K=300.0, timestep_fs=0.5, steps=2000,
                   report_every=20, dtype="float64", seed=1, progress=False)
    run_md(cfg)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    t = np.array([float(r["time_ps"]) for r in rows])
    e = np.array([float(r["total_eV"]) for r in rows])
    n_atoms = 13
    slope = np.polyfit(t, e, 1)[0] / n_atoms          # eV/atom/ps
    half = len(e) // 2
    # a systematic trend would show up as different drifts over the two halves of the run
    slopes = [np.polyfit(t[s], e[s], 1)[0] / n_atoms for s in (slice(0, half), slice(half, None))]
    fluct = np.std(e - np.polyval(np.polyfit(t, e, 1), t)) / n_atoms
    with capsys.disabled():
        print(f"\n[default model {engine} NVE 1 ps, 0.5 fs, float64] drift {slope:.2e} eV/atom/ps "
              f"(halves {slopes[0]:.1e}, {slopes[1]:.1e}), fluctuation {fluct:.1e} eV/atom, "
              f"kinetic range {np.ptp([float(r['kinetic_eV']) for r in rows]):.3f} eV")
    assert t[-1] == pytest.approx(1.0)
    assert abs(slope) < 1e-4
    assert all(abs(s) < 2e-4 for s in slopes)
    # OpenMM reports leapfrog half-step velocities (CPU platform, single-precision positions),
    # so its total energy fluctuates ~6x more than ASE's velocity Verlet; neither drifts
    assert fluct < 1e-3
