"""Reference charges and dipoles (``mlff label``'s ``charges_xtb`` / ``dipole_xtb``) as training
targets of learned-charge models: read into graphs, turned into loss terms, learned, and a
config that asks for them without charges to learn is refused."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from mlff import graph as G
from mlff.data.dataset import DataKeys, labelled_graph
from mlff.models.mace import MACE, MACEConfig
from mlff.models.potential import Potential
from mlff.train.config import TrainConfig
from mlff.train.losses import LossWeights, loss_terms, weighted_loss

KEYS = DataKeys(energy=None, forces=None, stress=None, virial=None, charges="charges_ref", dipole="dipole_ref")


def _water(seed):
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(seed).normal(0, 0.05, atoms.positions.shape)
    q = np.array([-0.56, 0.28, 0.28]) + 0.02 * (atoms.get_distance(0, 1) - 0.97)
    atoms.arrays["charges_ref"] = q
    atoms.info["dipole_ref"] = (q[:, None] * atoms.positions).sum(0)
    return atoms


def test_graphs_carry_the_targets_and_their_weights():
    with_targets, without = _water(0), molecule("CH4")
    g = labelled_graph(with_targets, 4.0, KEYS, elements=[1, 6, 8])
    np.testing.assert_allclose(g[G.REF_CHARGES].numpy(), with_targets.arrays["charges_ref"])
    assert g[G.REF_DIPOLE].shape == (1, 3) and float(g[G.CHARGES_WEIGHT]) == 1.0
    h = labelled_graph(without, 4.0, KEYS, elements=[1, 6, 8])
    assert float(h[G.CHARGES_WEIGHT]) == 0.0 and float(h[G.DIPOLE_WEIGHT]) == 0.0
    batch = G.collate([g, h])
    assert batch[G.REF_CHARGES].shape == (8,) and batch[G.REF_DIPOLE].shape == (2, 3)


def test_charge_and_dipole_losses_are_learned():
    torch.manual_seed(0)
    config = MACEConfig(elements=(1, 8), channels=8, max_L=0, max_ell=1, correlation=2, r_cut=4.0,
                        num_interactions=1, radial_mlp=(16,), readout_mlp=8, long_range="charges")
    pot = Potential(MACE(config)).train()
    batch = G.collate([labelled_graph(_water(k), 4.0, KEYS, elements=[1, 8]) for k in range(8)])
    weights = LossWeights(energy=0.0, forces=0.0, charges=1.0, dipole=1.0)
    start = {k: float(v) for k, v in loss_terms(pot(batch), batch).items()}
    optimiser = torch.optim.Adam(pot.parameters(), lr=0.02)
    for _ in range(60):
        optimiser.zero_grad()
        weighted_loss(pot(batch), batch, weights).backward()
        optimiser.step()
    end = {k: float(v) for k, v in loss_terms(pot(batch), batch).items()}
    assert end["charges"] < 0.01 * start["charges"] and end["dipole"] < 0.01 * start["dipole"]


def test_charge_loss_without_learned_charges_is_refused():
    cfg = {"model": {"type": "mace", "r_cut": 4.0}, "out": "run",
           "data": {"train": "t.extxyz", "charges_key": "charges_xtb"}, "loss": {"charges": 1.0}}
    with pytest.raises(ValueError, match="long_range: charges or both"):
        TrainConfig.from_dict(cfg)
    cfg["model"]["long_range"] = "charges"
    TrainConfig.from_dict(cfg)
    del cfg["data"]["charges_key"]
    with pytest.raises(ValueError, match="data.charges_key"):
        TrainConfig.from_dict(cfg)
