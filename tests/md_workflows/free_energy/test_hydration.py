"""The hydration workflow: alchemical system, a short end-to-end run (the CI smoke version of
benchmarks/freesolv.py), alchemlyb compatibility, resume, the CLI and the Dask path."""
import json
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

from mlff.md_workflows.free_energy.alchemical import LambdaSchedule, alchemical_system
from mlff.md_workflows.free_energy.estimators import mbar
from mlff.md_workflows.free_energy.hydration import HydrationConfig, run_hydration
from mlff.md_workflows.free_energy.parametrize import ligand_atom_indices, parametrize_ligand, solvated_system
from mlff.md_workflows.free_energy.sampling import load_leg

sys.path.insert(0, str(Path(__file__).parent))
from test_harmonic_exact import STATES, oscillators, settings  # noqa: E402


@pytest.fixture(scope="module")
def ethanol_water(tmp_path_factory):
    params = parametrize_ligand("CCO", name="ethanol", cache_dir=tmp_path_factory.mktemp("cache"))
    top, system, pos = solvated_system(params, box_edge_nm=2.0, constraints=None, rigid_water=False)
    return top, system, pos


def _energy(system, pos, params=None, box=None):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(pos)
    for k, v in (params or {}).items():
        ctx.setParameter(k, v)
    return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_schedule_and_validation():
    s = LambdaSchedule()
    states = s.states()
    assert states[0] == {"lambda_electrostatics": 1.0, "lambda_sterics": 1.0}
    assert states[-1] == {"lambda_electrostatics": 0.0, "lambda_sterics": 0.0}
    assert len(states) == len(s.electrostatics) + len(s.sterics) - 1
    assert len(s.states(include_sterics=False)) == len(s.electrostatics)
    with pytest.raises(ValueError, match="from 1.0 to 0.0"):
        LambdaSchedule(electrostatics=(0.0, 1.0))
    with pytest.raises(ValueError, match="decrease strictly"):
        LambdaSchedule(sterics=(1.0, 0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="unknown keys"):
        HydrationConfig.from_dict({"smiles": "C", "windows": 3})
    with pytest.raises(ValueError, match="too small"):
        HydrationConfig(smiles="C", box_edge_nm=1.5)
    with pytest.raises(ValueError, match="exactly one of smiles"):
        HydrationConfig()
    with pytest.raises(ValueError, match="exactly one of smiles"):
        HydrationConfig(smiles="C", molecule_file="c.mol")
    with pytest.raises(ValueError, match="needs 'smiles'.*or 'molecule_file'"):
        HydrationConfig.from_dict({"name": "x"})
    from_file = HydrationConfig(molecule_file="data/anti.mol")
    assert Path(from_file.molecule_file).is_absolute() and from_file.label == "anti"


def test_alchemical_end_states(ethanol_water):
    """Fully coupled = the original system; fully decoupled = the solute feels no water."""
    top, system, pos = ethanol_water
    box = top.getPeriodicBoxVectors()
    solute = ligand_atom_indices(top)
    alch = alchemical_system(system, solute)
    coupled = {"lambda_electrostatics": 1.0, "lambda_sterics": 1.0}
    decoupled = {"lambda_electrostatics": 0.0, "lambda_sterics": 0.0}
    e_ref = _energy(system, pos, box=box)
    assert _energy(alch, pos, coupled, box) == pytest.approx(e_ref, abs=0.05)
    # move the solute rigidly (far from its images): interacting energy changes, decoupled does not
    shifted = np.array(pos.value_in_unit(unit.nanometer))
    shifted[solute] += np.array([0.31, -0.22, 0.17])
    d_coupled = _energy(alch, shifted, coupled, box) - _energy(alch, pos, coupled, box)
    d_decoupled = _energy(alch, shifted, decoupled, box) - _energy(alch, pos, decoupled, box)
    assert abs(d_coupled) > 1.0
    assert abs(d_decoupled) < 0.05
    with pytest.raises(ValueError, match="outside"):
        alchemical_system(system, [system.getNumParticles() + 3])


def test_hydration_smoke_run_resume_and_alchemlyb(tmp_path):
    """A few windows, short sampling: files, finite estimates, alchemlyb reads and agrees, and a
    second run resumes with no new sampling."""
    cfg = HydrationConfig(smiles="CCO", name="ethanol", electrostatics_windows=(1.0, 0.5, 0.0),
                          sterics_windows=(1.0, 0.5, 0.0), box_edge_nm=2.0, equilibration_ps=0.4,
                          production_ps=1.0, sample_every_ps=0.2, workers=1,
                          cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "run"
    res = run_hydration(cfg, out, progress=False)
    assert set(res["dG_hyd_kcal_mol"]) >= {"MBAR", "BAR", "TI_trapezoid", "TI_cubic", "EXP_forward", "EXP_reverse"}
    assert np.isfinite(res["dG_hyd"]) and res["dG_hyd_err"] > 0
    assert res["legs"]["water"]["windows"] == 5 and res["legs"]["vacuum"]["windows"] == 3
    for leg in ("water", "vacuum"):
        for name in ("overlap.png", "convergence.png", "dudl.png", "u_nk.parquet", "dHdl.parquet"):
            assert (out / leg / name).stat().st_size > 0
    assert json.loads((out / "result.json").read_text())["dG_hyd"] == pytest.approx(res["dG_hyd"])
    assert (out / "ligand" / "ligand.prmtop").exists() or list((out / "ligand").glob("*.prmtop"))

    # alchemlyb reads our parquet files, and its MBAR on all samples equals ours on all samples
    from alchemlyb.estimators import MBAR as AlchemlybMBAR
    from alchemlyb.parsing.parquet import extract_dHdl, extract_u_nk

    u_nk = extract_u_nk(str(out / "water" / "u_nk.parquet"), T=cfg.temperature_K)
    dhdl = extract_dHdl(str(out / "water" / "dHdl.parquet"), T=cfg.temperature_K)
    assert list(dhdl.columns) == ["lambda_electrostatics", "lambda_sterics"]
    leg = load_leg(out / "water")
    _, f, _ = mbar(leg.u_kln)
    est = AlchemlybMBAR().fit(u_nk)
    assert est.delta_f_.iloc[0, -1] == pytest.approx(f[0, -1], abs=1e-4)

    # resume: nothing left to sample, identical result
    stamp = (out / "water" / "window_000" / "samples.npz").stat().st_mtime_ns
    again = run_hydration(cfg, out, progress=False)
    assert again["dG_hyd"] == pytest.approx(res["dG_hyd"], abs=1e-9)
    assert (out / "water" / "window_000" / "samples.npz").stat().st_mtime_ns == stamp
    # more workers on resume are fine (parallelism is not part of the protocol)
    more = run_hydration(HydrationConfig(**{**cfg.to_dict(), "workers": 2}), out, progress=False)
    assert more["dG_hyd"] == pytest.approx(res["dG_hyd"], abs=1e-9)
    # a different protocol in the same directory is refused
    with pytest.raises(ValueError, match="different config"):
        run_hydration(HydrationConfig(**{**cfg.to_dict(), "sample_every_ps": 0.1}), out, progress=False)
    # a longer production extends every window: the first samples are kept as they were
    before = load_leg(out / "water").u_kln[0]
    longer = run_hydration(HydrationConfig(**{**cfg.to_dict(), "production_ps": 2.0}), out, progress=False)
    assert longer["legs"]["water"]["samples_per_window"] == [10] * 5
    np.testing.assert_array_equal(load_leg(out / "water").u_kln[0][:, :5], before)
    with pytest.raises(ValueError, match="different config"):  # shorter would drop samples
        run_hydration(cfg, out, progress=False)

    # a model on top: the finished MM legs are reused, the ML/MM corrections run after them
    stamp = (out / "water" / "window_000" / "samples.npz").stat().st_mtime_ns
    ml_cfg = HydrationConfig(**{**cfg.to_dict(), "production_ps": 2.0, "model": "default",
                                "ml_windows": (0.0, 0.5, 1.0), "ml_equilibration_ps": 0.1,
                                "ml_production_ps": 0.4, "ml_sample_every_ps": 0.1})
    res = run_hydration(ml_cfg, out, progress=False)
    assert (out / "water" / "window_000" / "samples.npz").stat().st_mtime_ns == stamp
    ml = res["ml"]
    assert ml["dG_hyd_ml_mm"] == pytest.approx(
        res["dG_hyd"] + ml["dG_corr_water"] - ml["dG_corr_vacuum"], abs=1e-9)
    assert ml["dG_hyd_ml_mm_err"] > res["dG_hyd_err"]
    assert len(ml["members_dG_corr"]) == 4 and ml["model_error"] > 0
    assert ml["model"] == "mace_organic_gfn2_ensemble.pt"
    for leg in ("water", "vacuum"):
        info = ml["legs"][leg]
        assert set(info["estimates"]) >= {"MBAR", "TI_cubic", "EXP_forward"}
        assert {"forward_from_lambda0", "reverse_from_lambda1", "from_mm_leg"} <= set(info["fep"])
        for png in ("dudl.png", "overlap.png"):
            assert Path(info["files"][f"{png[:-4]}_png"]).stat().st_size > 0
    assert json.loads((out / "result.json").read_text())["ml"]["dG_hyd_ml_mm"] == pytest.approx(
        ml["dG_hyd_ml_mm"])
    again = run_hydration(ml_cfg, out, progress=False)  # resumes: nothing sampled again
    assert again["ml"]["dG_hyd_ml_mm"] == pytest.approx(ml["dG_hyd_ml_mm"], abs=1e-9)


def test_cli_help_and_errors(capsys, tmp_path):
    from mlff.md_workflows.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fe", "hydration", "--help"])
    assert e.value.code == 0
    assert "--molecule FILE" in capsys.readouterr().out
    assert main(["fe", "hydration", "--smiles", "CCO", "--box-edge-nm", "1.0", "--out", "/tmp/x"]) == 2
    assert "too small" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # one molecule: --smiles or --molecule, not both
        main(["fe", "hydration", "--smiles", "CCO", "--molecule", "x.mol", "--out", "/tmp/x"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(["fe", "hydration", "--molecule", str(tmp_path / "none.sdf"), "--out",
                 str(tmp_path / "out")]) == 2
    assert "none.sdf does not exist" in capsys.readouterr().err


def test_windows_run_on_a_dask_cluster(tmp_path):
    """--scheduler: the windows run as tasks on a dask.distributed cluster, same samples."""
    distributed = pytest.importorskip("distributed")
    from mlff.md_workflows.free_energy.sampling import prepare_leg, run_leg

    system, pos = oscillators(2, 3, 200.0, 400.0, 0.0)
    s = settings(seed=2, production_ps=5.0)
    local = run_leg(prepare_leg(tmp_path / "local", system, pos, STATES[:3], s, ["lambda"]),
                    workers=1, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        remote = run_leg(prepare_leg(tmp_path / "dask", system, pos, STATES[:3], s, ["lambda"]),
                         scheduler=cluster.scheduler_address, progress=False)
    for a, b in zip(local.u_kln, remote.u_kln):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_replica_exchange_agrees_with_independent_windows(tmp_path):
    """Vacuum charging of ethanol: openmmtools replica exchange and independent windows give
    the same dG within their errors; a second call resumes a finished run without sampling."""
    from mlff.md_workflows.free_energy.estimators import analyze
    from mlff.md_workflows.free_energy.parametrize import vacuum_system
    from mlff.md_workflows.free_energy.replica_exchange import acceptance_matrix, run_hrex_leg
    from mlff.md_workflows.free_energy.sampling import SamplingSettings, prepare_leg, run_leg

    params = parametrize_ligand("CCO", cache_dir=tmp_path / "cache")
    top, system, pos = vacuum_system(params, hydrogen_mass_amu=3.0)
    alch = alchemical_system(system, ligand_atom_indices(top))
    states = LambdaSchedule(electrostatics=(1.0, 0.5, 0.0)).states(include_sterics=False)
    s = SamplingSettings(temperature_K=298.15, timestep_fs=2.0, equilibration_ps=2.0,
                         production_ps=24.0, sample_every_ps=0.2, platform="Reference",
                         checkpoint_every_samples=50, seed=4)
    hrex = run_hrex_leg(tmp_path / "hrex", alch, pos, states, s, progress=False)
    assert [u.shape for u in hrex.u_kln] == [(3, 120)] * 3
    acc = acceptance_matrix(tmp_path / "hrex")
    assert acc[0, 1] > 0.05 and np.allclose(acc.sum(axis=1), 1.0)
    indep = run_leg(prepare_leg(tmp_path / "ind", alch, pos, states, s, ["lambda_electrostatics"]),
                    progress=False)
    a = analyze(hrex.u_kln).estimates["MBAR"]
    b = analyze(indep.u_kln).estimates["MBAR"]
    assert abs(a.value - b.value) < 3 * np.hypot(a.error, b.error) + 0.1, (a, b)
    stamp = (tmp_path / "hrex" / "hrex.nc").stat().st_mtime_ns
    again = run_hrex_leg(tmp_path / "hrex", alch, pos, states, s, progress=False)
    np.testing.assert_array_equal(again.u_kln[1], hrex.u_kln[1])
    assert (tmp_path / "hrex" / "hrex.nc").stat().st_mtime_ns == stamp
