"""A long-range task a short-range model cannot learn: random periodic boxes of +1/-1 ions
(Gaussian charges of width 0.5 A) with their exact Ewald energies and forces. The ions are
spread so that most of each force comes from beyond r_cut = 4 A; a MACE with learned charges
fits it, the same MACE without them does not (bar: at least 5x lower force error)."""

import numpy as np
import torch
from ase import Atoms

from mlff import graph as G
from mlff.models.mace import MACE, MACEConfig
from mlff.models.potential import Potential
from mlff.nn import ewald

R_CUT = 4.0
WIDTH = 0.5
ELEMENTS = (11, 17)


def _ion_boxes(n_frames, seed, n_ions=8, box=11.0, min_distance=3.0):
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < n_frames:
        cell = np.eye(3) * box + rng.normal(0, 0.3, (3, 3))
        positions = rng.uniform(0, 1, (n_ions, 3)) @ cell
        atoms = Atoms(["Na", "Cl"] * (n_ions // 2), positions=positions, cell=cell, pbc=True)
        if atoms.get_all_distances(mic=True)[np.triu_indices(n_ions, 1)].min() < min_distance:
            continue
        q = torch.tensor([1.0 if z == 11 else -1.0 for z in atoms.numbers], dtype=torch.float64)
        pos = torch.tensor(atoms.positions, requires_grad=True)
        energy = ewald.coulomb_energy(q, pos, torch.tensor(cell), True, r_cut=6.0, accuracy=1e-8, width=WIDTH)
        (grad,) = torch.autograd.grad(energy, pos)
        atoms.info["energy"], atoms.arrays["ref_forces"] = float(energy.detach()), -grad.numpy()
        frames.append(atoms)
    return frames


def _batch(frames):
    graphs = [G.atoms_to_graph(a, R_CUT, ELEMENTS) for a in frames]
    batch = G.collate(graphs)
    energy = torch.tensor([a.info["energy"] for a in frames])
    forces = torch.tensor(np.concatenate([a.arrays["ref_forces"] for a in frames]))
    return batch, energy, forces


def _train(long_range, train, steps=150):
    torch.manual_seed(0)
    config = MACEConfig(elements=ELEMENTS, channels=8, max_L=0, max_ell=1, correlation=2, r_cut=R_CUT,
                        num_interactions=1, radial_mlp=(16,), readout_mlp=8, avg_num_neighbors=1.0,
                        long_range=long_range,
                        long_range_options={"charge_width": WIDTH, "accuracy": 1e-4})
    pot = Potential(MACE(config)).train()
    batch, energy, forces = train
    optimiser = torch.optim.Adam(pot.parameters(), lr=0.03)
    n = float(forces.shape[0])
    for _ in range(steps):
        optimiser.zero_grad()
        out = pot(batch)
        loss = ((out["forces"] - forces) ** 2).sum() / n + ((out["energy"] - energy) ** 2).mean() / n
        loss.backward()
        optimiser.step()
    return pot.eval()


def _force_rmse(pot, test):
    batch, _, forces = test
    return float(((pot(batch)["forces"] - forces) ** 2).mean().sqrt())


def test_learned_charges_fit_what_a_short_range_model_cannot():
    train, test = _batch(_ion_boxes(24, 0)), _batch(_ion_boxes(8, 1))
    short = _force_rmse(_train("none", train), test)
    long = _force_rmse(_train("charges", train), test)
    scale = float(test[2].pow(2).mean().sqrt())
    print(f"force RMSE on held-out boxes: short-range {short:.4f}, long-range {long:.4f} eV/A "
          f"(reference forces RMS {scale:.4f} eV/A)")
    assert short > 0.5 * scale  # the short-range model learns little of it
    assert long < short / 5.0
