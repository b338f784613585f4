"""Error metrics of predictions against labelled batches: MAE and RMSE of energy per atom
(meV/atom), force components (meV/A) overall and per element, and stress (meV/A^3)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch
from ase.data import chemical_symbols
from torch import Tensor

from mlff import graph as G


class ErrorAccumulator:
    """Accumulate errors over batches; :meth:`summary` returns MAE/RMSE in meV units.

    ``add(pred, batch)`` takes a :class:`~mlff.models.potential.Potential` output and its batch.
    """

    def __init__(self) -> None:
        self.energy: List[Tensor] = []
        self.forces: List[Tensor] = []
        self.force_numbers: List[Tensor] = []
        self.stress: List[Tensor] = []

    @torch.no_grad()
    def add(self, pred: Dict[str, Tensor], batch: Dict[str, Tensor]) -> None:
        n_atoms = G.atoms_per_graph(batch)
        has_e = batch[G.ENERGY_WEIGHT] > 0
        de = (pred["energy"].detach().to(torch.float64) - batch[G.ENERGY]) / n_atoms
        self.energy.append(de[has_e])
        if "forces" in pred:
            has_f = (batch[G.FORCES_WEIGHT] > 0)[batch[G.BATCH]]
            df = pred["forces"].detach().to(torch.float64) - batch[G.FORCES]
            self.forces.append(df[has_f])
            self.force_numbers.append(batch[G.ATOMIC_NUMBERS][has_f])
        if "stress" in pred:
            has_s = batch[G.STRESS_WEIGHT] > 0
            ds = pred["stress"].detach().to(torch.float64) - batch[G.STRESS]
            self.stress.append(ds[has_s].reshape(-1, 9))

    @staticmethod
    def _mae_rmse(x: Tensor, scale: float) -> Dict[str, float]:
        if x.numel() == 0:
            return {"mae": float("nan"), "rmse": float("nan"), "n": 0}
        return {"mae": float(x.abs().mean()) * scale, "rmse": float(x.pow(2).mean().sqrt()) * scale,
                "n": int(x.shape[0])}

    def summary(self) -> Dict[str, object]:
        out: Dict[str, object] = {}
        if self.energy:
            out["energy_per_atom_meV"] = self._mae_rmse(torch.cat(self.energy), 1e3)
        if self.forces:
            f = torch.cat(self.forces)
            z = torch.cat(self.force_numbers)
            out["forces_meV_per_A"] = self._mae_rmse(f.reshape(-1), 1e3)
            out["forces_meV_per_A_by_element"] = {
                chemical_symbols[int(e)]: self._mae_rmse(f[z == e].reshape(-1), 1e3)
                for e in torch.unique(z).tolist()
            }
        if self.stress:
            out["stress_meV_per_A3"] = self._mae_rmse(torch.cat(self.stress).reshape(-1), 1e3)
        return out


def plot_learning_curve(history: List[Dict[str, object]], path: Path) -> None:
    """Train and validation loss per epoch (log scale) from ``metrics.jsonl`` records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlff.atomic import atomic_savefig

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(epochs, [r["train_loss"] for r in history], label="train")
    ax.semilogy(epochs, [r["valid_loss"] for r in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)
