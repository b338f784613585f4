"""mlff relax: ASE optimisers reach fmax on a distorted molecule and a strained cell; OpenMM's
minimiser lowers the energy."""

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from mlff.md_workflows.cli import main
from mlff.md_workflows.relax import RelaxConfig, relax

from conftest import ALANINE, grid_gas


@pytest.mark.parametrize("optimizer", ["FIRE"])
def test_ase_relax_reaches_fmax_on_distorted_molecule(optimizer, tmp_path, model_paths):
    atoms = ase.io.read(ALANINE)
    atoms.rattle(0.05, seed=1)
    path = tmp_path / "distorted.xyz"
    ase.io.write(path, atoms)
    res = relax(RelaxConfig(structure=str(path), out=str(tmp_path / "r"), fmax_eV_per_A=2e-3, steps=500,
                            model=str(model_paths["single"]), optimizer=optimizer))
    assert res.converged and res.fmax_final < 2e-3
    relaxed = ase.io.read(res.files["relaxed"])
    assert np.abs(relaxed.get_forces()).max() < 2e-3


def test_cell_relax_on_strained_periodic_cell(tmp_path, model_paths):
    atoms = bulk("C", "diamond", a=3.9, cubic=True)  # strained diamond
    atoms.rattle(0.02, seed=2)
    path = tmp_path / "strained.extxyz"
    ase.io.write(path, atoms)
    res = relax(RelaxConfig(structure=str(path), out=str(tmp_path / "r"), fmax_eV_per_A=2e-3, steps=500,
                            cell=True, pressure_bar=1e4, model=str(model_paths["single"])))
    assert res.converged and res.fmax_final < 2e-3
    relaxed = ase.io.read(res.files["relaxed"])
    # the tiny model is soft: 1 GPa of external pressure must compress the cell
    assert relaxed.get_volume() < 0.99 * atoms.get_volume()


def test_openmm_minimizer_and_cli(tmp_path, model_paths, capsys):
    # a spread-out input: minimising the tiny random model lets a compact molecule collapse
    assert main(["relax", str(grid_gas(tmp_path)), "--engine", "openmm", "--model",
                 str(model_paths["single"]), "--out", str(tmp_path / "o"), "--fmax", "0.005"]) == 0
    assert "converged" in capsys.readouterr().out
    assert (tmp_path / "o" / "relaxed.extxyz").exists()
