"""Losses, metrics, EMA and checkpoints: values known by construction, atomic writes, exact
RNG restoration."""

import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.build import molecule

from mlff import graph as G
from mlff.data.dataset import DataKeys, labelled_graph
from mlff.train.checkpoint import load_checkpoint, save_checkpoint
from mlff.train.ema import ExponentialMovingAverage
from mlff.train.losses import MEMBER_WEIGHT, LossWeights, loss_terms, weighted_loss
from mlff.train.metrics import ErrorAccumulator


def labelled_batch():
    graphs = []
    for k, name in enumerate(["H2O", "CH4"]):
        a = molecule(name)
        a.info["energy"] = -10.0 * (k + 1)
        a.arrays["forces"] = np.full((len(a), 3), 0.1 * (k + 1))
        graphs.append(labelled_graph(a, 3.0, DataKeys(stress=None, virial=None), [1, 6, 8]))
    return G.collate(graphs)


def test_loss_terms_known_values():
    batch = labelled_batch()
    pred = {"energy": batch[G.ENERGY] + torch.tensor([0.3, 1.0], dtype=torch.float64),
            "forces": batch[G.FORCES] + 0.2}
    terms = loss_terms(pred, batch)
    expected_e = ((0.3 / 3) ** 2 + (1.0 / 5) ** 2) / 2
    assert float(terms["energy"]) == pytest.approx(expected_e)
    assert float(terms["forces"]) == pytest.approx(0.04)
    total = weighted_loss(pred, batch, LossWeights(energy=2.0, forces=10.0))
    assert float(total) == pytest.approx(2 * expected_e + 10 * 0.04)


def test_missing_targets_are_masked():
    batch = labelled_batch()
    batch[G.FORCES_WEIGHT] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    pred = {"energy": batch[G.ENERGY].clone(), "forces": batch[G.FORCES].clone()}
    pred["forces"][3:] += 5.0  # the CH4 atoms, whose forces are marked missing
    assert float(loss_terms(pred, batch)["forces"]) == 0.0


def test_member_weights_give_each_member_its_own_resample():
    """Bootstrap counts [M, B]: member 0 sees only graph 0 (twice), member 1 both graphs once;
    each member's terms equal those of a single model on its own resample."""
    batch = labelled_batch()
    e_err = torch.tensor([[0.3, 1.0], [0.6, -0.5]], dtype=torch.float64)  # [M, B] energy errors
    pred = {"energy": batch[G.ENERGY], "member_energy": batch[G.ENERGY].unsqueeze(0) + e_err,
            "member_forces": batch[G.FORCES].unsqueeze(0) + torch.tensor([0.2, 0.1],
                                                                         dtype=torch.float64)[:, None, None],
            "forces": batch[G.FORCES]}
    batch[MEMBER_WEIGHT] = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    terms = loss_terms(pred, batch)
    member0 = (0.3 / 3) ** 2                        # only H2O (3 atoms)
    member1 = ((0.6 / 3) ** 2 + (0.5 / 5) ** 2) / 2
    assert float(terms["energy"]) == pytest.approx(member0 + member1)
    assert float(terms["forces"]) == pytest.approx(0.04 + 0.01)
    # all-ones member weights change nothing
    batch[MEMBER_WEIGHT] = torch.ones(2, 2, dtype=torch.float64)
    plain = dict(batch)
    del plain[MEMBER_WEIGHT]
    assert float(loss_terms(pred, batch)["energy"]) == pytest.approx(float(loss_terms(pred, plain)["energy"]))


def test_loss_weights_validation():
    with pytest.raises(ValueError, match="at least one"):
        LossWeights(0.0, 0.0, 0.0)


def test_metrics_per_element():
    batch = labelled_batch()
    pred = {"energy": batch[G.ENERGY] + 0.03, "forces": batch[G.FORCES].clone()}
    pred["forces"][batch[G.ATOMIC_NUMBERS] == 1] += 0.01
    acc = ErrorAccumulator()
    acc.add(pred, batch)
    s = acc.summary()
    assert s["forces_meV_per_A_by_element"]["H"]["mae"] == pytest.approx(10.0)
    assert s["forces_meV_per_A_by_element"]["O"]["mae"] == pytest.approx(0.0)
    assert s["energy_per_atom_meV"]["mae"] == pytest.approx((30 / 3 + 30 / 5) / 2)


def test_ema_average_and_restore():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ExponentialMovingAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    with ema.average_parameters(model):
        assert torch.allclose(model.weight, torch.full_like(model.weight, 0.5))
    assert torch.allclose(model.weight, torch.ones_like(model.weight))
    other = ExponentialMovingAverage(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5 and other.num_updates == 1


def test_checkpoint_restores_every_rng(tmp_path):
    path = tmp_path / "ckpt.pt"
    model = torch.nn.Linear(3, 2)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached Gaussian in Python's state
    save_checkpoint(path, {"model": model.state_dict(), "step": 7})
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1).item())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    state = load_checkpoint(path)
    got = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1).item())
    assert got == expected
    assert state["step"] == 7
    restored = torch.nn.Linear(3, 2)
    restored.load_state_dict(state["model"])
    assert torch.equal(restored.weight, model.weight)


def test_checkpoint_is_never_torn_by_a_kill(tmp_path):
    """A writer killed with SIGKILL while rewriting a checkpoint in a loop leaves a readable one."""
    path = tmp_path / "ckpt.pt"
    code = (
        "import torch, sys; from mlff.train.checkpoint import save_checkpoint\n"
        f"p = {str(path)!r}\n"
        "big = torch.randn(2_000_000)\n"
        "i = 0\n"
        "while True:\n"
        "    save_checkpoint(p, {'step': i, 'big': big}); i += 1\n"
        "    print(i, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    for _ in range(3):
        proc.stdout.readline()  # at least three complete writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(path, restore_rng=False)
    assert state["step"] >= 2 and state["big"].shape == (2_000_000,)


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_checkpoint(tmp_path / "none.pt")
