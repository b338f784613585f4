"""The shipped default model: it loads from the installed assets, is the 4-member ensemble its
card describes, carries its recalibration factor, and reproduces GFN2-xTB forces on held-out
test structures (a real reference, not a stored number of our own)."""

import ase.io
import numpy as np
import pytest
import torch

from mlff import graph as G
from mlff.assets_path import asset
from mlff.data.dataset import DataKeys, labelled_graph
from mlff.io import load_model_with_metadata

MODEL = "models/mace_organic_gfn2_ensemble.pt"


@pytest.fixture(scope="module")
def default_model():
    return load_model_with_metadata(asset(MODEL))


def test_it_is_the_ensemble_the_card_describes(default_model):
    potential, metadata = default_model
    assert potential.num_members == 4
    assert tuple(potential.model.config.elements) == (1, 6, 7, 8)
    assert potential.r_cut == 5.0
    scale = float(potential.std_scale)
    assert scale == pytest.approx(metadata["calibration"]["std_scale"]) and 0.1 < scale < 20
    text = asset("models/README.md").read_text()
    assert "mace_organic_gfn2_ensemble.pt" in text and "default_model.yaml" in text


def test_forces_match_gfn2_on_test_structures(default_model):
    potential, _ = default_model
    frames = ase.io.read(asset("datasets/organic_gfn2/test.extxyz"), "::50")  # about 20 structures
    keys = DataKeys.xtb()
    graphs = [labelled_graph(f, potential.r_cut, keys, [1, 6, 7, 8], dtype=torch.float32) for f in frames]
    batch = G.collate(graphs)
    out = potential(batch)
    error = (out["forces"].double() - batch[G.FORCES]).abs()
    reference = batch[G.FORCES].abs().mean()
    # the card reports the full test split; here a sample must be far better than predicting zero
    assert float(error.mean()) < 0.15 * float(reference), float(error.mean())
    # the ensemble spread is larger where the errors are (rank correlation per atom)
    from mlff.train.calibration import spearman

    atom_err = np.linalg.norm((out["forces"].double() - batch[G.FORCES]).numpy(), axis=1)
    atom_std = np.linalg.norm(out["forces_std"].double().numpy(), axis=1)
    assert spearman(atom_std, atom_err) > 0.2
