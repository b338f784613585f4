"""Workflow-test fixtures: small float64 random models (single and 3-member ensemble) saved to
files, built with the factory of ``tests/conftest.py``, plus structures (imported by name:
``from conftest import ALANINE, grid_gas``)."""

from pathlib import Path

import pytest
import torch

ALANINE = Path(__file__).resolve().parents[2] / "data" / "examples" / "alanine_dipeptide.pdb"

#: Energy scale (eV) of the workflow models: it keeps random forces gentle (a few tenths of
#: eV/A) so short MD stays physical enough to test.
GENTLE_SCALE_EV = 0.05


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory, saved_model) -> dict:
    """``{"single": path, "ensemble": path}`` of small saved models (energy scale
    :data:`GENTLE_SCALE_EV`)."""
    d = tmp_path_factory.mktemp("models")
    return {name: saved_model(d, m, name=f"{name}.pt", scale=GENTLE_SCALE_EV)
            for name, m in (("single", 1), ("ensemble", 3))}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def grid_gas(tmp_path: Path, spacing: float = 2.6) -> Path:
    """An xyz file of 18 H/C/N/O atoms on a 3x3x2 grid (``spacing`` A): with the tiny random
    models atoms are nearly free, and a grid (unlike a compact molecule) keeps them from
    passing through each other in a few ps."""
    import ase.io
    from ase import Atoms

    pos = [(i * spacing, j * spacing, k * spacing) for i in range(3) for j in range(3) for k in range(2)]
    symbols = ("HCHOHN" * 3)[: len(pos)]
    path = tmp_path / "grid.xyz"
    ase.io.write(path, Atoms(symbols, positions=pos))
    return path
