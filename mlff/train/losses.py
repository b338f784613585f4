"""Training losses on the outputs of :class:`mlff.models.potential.Potential`.

``weighted_loss(pred, batch, weights)`` = w_E * mean_g[(dE_g / N_g)^2] + w_F * mean_atoms
|dF|^2 / 3 + w_S * mean_g |dS_g|^2 / 9, each term restricted to graphs that carry the target
(``energy_weight``, ``forces_weight``, ``stress_weight`` in the batch) and scaled by the per-graph
``weight``. Energies per atom make the energy term size-independent; units are eV^2/atom^2,
(eV/A)^2 and (eV/A^3)^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor

from mlff import graph as G


@dataclass(frozen=True)
class LossWeights:
    """Relative weights of the loss terms (non-negative; at least one positive)."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 0.0

    def __post_init__(self) -> None:
        values = (self.energy, self.forces, self.stress)
        if any(v < 0 for v in values) or not any(v > 0 for v in values):
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {values}")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    total = mask.sum()
    return (values * mask).sum() / total.clamp(min=1.0)


def loss_terms(pred: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Unweighted per-term mean squared errors (each a scalar tensor)."""
    n_atoms = G.atoms_per_graph(batch)
    w_graph = batch[G.WEIGHT]
    out: Dict[str, Tensor] = {}
    de = (pred["energy"] - batch[G.ENERGY]) / n_atoms
    out["energy"] = _masked_mean(de**2, batch[G.ENERGY_WEIGHT] * w_graph)
    if "forces" in pred:
        atom_w = (batch[G.FORCES_WEIGHT] * w_graph)[batch[G.BATCH]]
        df2 = ((pred["forces"].to(torch.float64) - batch[G.FORCES]) ** 2).mean(dim=1)
        out["forces"] = _masked_mean(df2, atom_w)
    if "stress" in pred:
        ds2 = ((pred["stress"].to(torch.float64) - batch[G.STRESS]) ** 2).mean(dim=(1, 2))
        out["stress"] = _masked_mean(ds2, batch[G.STRESS_WEIGHT] * w_graph)
    return out


def weighted_loss(pred: Dict[str, Tensor], batch: Dict[str, Tensor], weights: LossWeights) -> Tensor:
    """The scalar training loss (see module docstring)."""
    terms = loss_terms(pred, batch)
    total = weights.energy * terms["energy"]
    if "forces" in terms:
        total = total + weights.forces * terms["forces"]
    if "stress" in terms:
        total = total + weights.stress * terms["stress"]
    return total
