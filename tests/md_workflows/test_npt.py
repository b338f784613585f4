"""NPT in both engines on an ideal gas, where the answer is exact: a model with a zero energy
scale has no interactions (forces and stress vanish), so the isothermal-isobaric volume
distribution is p(V) ~ V^N exp(-PV/kT) with mean (N + 1) kT / P (N = 18 particles) for both
OpenMM's Monte Carlo barostat and ASE's Langevin (BAOAB) barostat. Wrong units or a wrong sign
would miss by orders of magnitude (this test found the ASE engine passing +P where ASE wants
the stress, -P: the box grew without bound); sampling noise here is a few per cent."""
import csv

import ase.io
import numpy as np
import pytest
from ase import Atoms

from mlff.md_workflows.md import MDConfig, run_md
from mlff.units import BAR_TO_EV_PER_A3, KB_EV_PER_K


@pytest.fixture(scope="module")
def ideal_gas(tmp_path_factory, saved_model):
    d = tmp_path_factory.mktemp("gas")
    saved_model(d, 1, name="free.pt", scale=0.0)
    rng = np.random.default_rng(0)
    n, box = 18, 33.0
    atoms = Atoms(("HCHOHN" * 3)[:n], positions=rng.uniform(0, box, (n, 3)), cell=[box] * 3, pbc=True)
    ase.io.write(d / "gas.extxyz", atoms)
    return d


@pytest.mark.parametrize("engine", ["openmm", "ase"])
def test_npt_ideal_gas_volume(engine, ideal_gas, tmp_path, capsys):
    # K, bar: about 2,200 A^3 per particle, so that two free atoms rarely come within the
    # calculator's 0.1 A safety distance
    temperature, pressure = 300.0, 20.0
    # free particles allow long steps; OpenMM's Monte Carlo barostat is a pure MC chain in V
    # here (no energy changes), so it tries a move every step
    steps = 3000 if engine == "openmm" else 8000
    cfg = MDConfig(structure=str(ideal_gas / "gas.extxyz"), out=str(tmp_path / "run"),
                   model=str(ideal_gas / "free.pt"), engine=engine, ensemble="npt",
                   temperature_K=temperature, pressure_bar=pressure, timestep_fs=4.0, steps=steps,
                   report_every=10, friction_per_ps=5.0, barostat_every=1, seed=3, progress=False)
    run_md(cfg)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    vol = np.array([float(r["volume_A3"]) for r in rows])[len(rows) // 5:]
    expected = 19 * KB_EV_PER_K * temperature / (pressure * BAR_TO_EV_PER_A3)
    with capsys.disabled():
        print(f"\n[{engine} NPT ideal gas] <V> {vol.mean():.0f} A^3, expected {expected:.0f} "
              f"({vol.mean() / expected - 1:+.1%}), relative std {vol.std() / vol.mean():.2f}")
    assert np.ptp(vol) > 0.1 * vol.mean()            # the box really fluctuates
    assert vol.mean() == pytest.approx(expected, rel=0.12)
    assert "density_g_cm3" in rows[0] and float(rows[-1]["density_g_cm3"]) > 0
