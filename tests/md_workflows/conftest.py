"""Small float64 random MACE models (single and 3-member ensemble) saved to files, shared by the
workflow tests. Built here, never downloaded: the tests do not depend on the shipped model."""

from pathlib import Path

import pytest
import torch

from mlff.io import save_model
from mlff.models.mace import MACE, MACEConfig
from mlff.models.potential import Potential

ALANINE = Path(__file__).resolve().parents[2] / "data" / "examples" / "alanine_dipeptide.pdb"


def small_potential(ensemble_size: int = 1, seed: int = 0, scale: float = 0.05) -> Potential:
    """A tiny float64 MACE (H C N O, r_cut 4 A) with random weights; the small energy scale keeps
    random forces gentle (a few tenths of eV/A) so short MD stays physical enough to test."""
    torch.manual_seed(seed)
    cfg = MACEConfig(elements=(1, 6, 7, 8), channels=8, max_L=1, max_ell=2, correlation=2,
                     r_cut=4.0, num_interactions=2, num_bessel=6, radial_mlp=(16, 16),
                     readout_mlp=8, avg_num_neighbors=6.0, e0s=(-10.7, -48.8, -70.9, -102.5),
                     scale=scale, dtype="float64", ensemble_size=ensemble_size)
    return Potential(MACE(cfg)).eval()


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory) -> dict:
    """``{"single": path, "ensemble": path}`` of small saved models."""
    d = tmp_path_factory.mktemp("models")
    paths = {"single": d / "single.pt", "ensemble": d / "ensemble.pt"}
    save_model(small_potential(1), paths["single"])
    save_model(small_potential(3), paths["ensemble"])
    return paths


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
