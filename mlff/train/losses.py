"""Training losses on the outputs of :class:`mlff.models.potential.Potential`.

``weighted_loss(pred, batch, weights)`` = w_E * mean_g[(dE_g / N_g)^2] + w_F * mean_atoms
|dF|^2 / 3 + w_S * mean_g |dS_g|^2 / 9, each term restricted to graphs that carry the target
(``energy_weight``, ``forces_weight``, ``stress_weight`` in the batch) and scaled by the per-graph
``weight``; optional terms for learned-charge models, ``w_q * mean_atoms dq^2 + w_mu *
mean_g |dmu_g|^2 / 3`` (targets ``ref_charges``, ``ref_dipole``; e^2 and (e A)^2); with
``member_weight`` [M, B] in the batch (bootstrap ensembles) each member's
terms also weight each graph by its own count. Energies per atom make the energy term size-independent; units are eV^2/atom^2,
(eV/A)^2 and (eV/A^3)^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

from mlff import graph as G

MEMBER_WEIGHT = "member_weight"  # [M, B] float64, per-member graph weights (bootstrap counts)


@dataclass(frozen=True)
class LossWeights:
    """Relative weights of the loss terms (non-negative; at least one positive)."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 0.0
    charges: float = 0.0
    dipole: float = 0.0

    def __post_init__(self) -> None:
        values = (self.energy, self.forces, self.stress, self.charges, self.dipole)
        if any(v < 0 for v in values) or not any(v > 0 for v in values):
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {values}")


def _masked_mean(values: Tensor, mask: Tensor, total: Optional[Tensor] = None) -> Tensor:
    """``values`` ``[M, K]``, ``mask`` ``[1, K]`` or ``[M, K]``: sum over members of each
    member's weighted mean (denominator ``total`` ``[M]`` or ``[1]`` when given: the global
    count when a batch is shared between processes)."""
    if total is None:
        total = mask.sum(dim=1)
    return ((values * mask).sum(dim=1) / total.clamp(min=1e-12)).sum()


def _masks(batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
    w_graph = batch[G.WEIGHT].unsqueeze(0)  # [1, B]
    if MEMBER_WEIGHT in batch:
        w_graph = w_graph * batch[MEMBER_WEIGHT]  # [M, B]
    masks = {"energy": batch[G.ENERGY_WEIGHT].unsqueeze(0) * w_graph,
             "forces": (batch[G.FORCES_WEIGHT].unsqueeze(0) * w_graph)[:, batch[G.BATCH]]}
    if G.STRESS_WEIGHT in batch:
        masks["stress"] = batch[G.STRESS_WEIGHT].unsqueeze(0) * w_graph
    if G.CHARGES_WEIGHT in batch:
        masks["charges"] = (batch[G.CHARGES_WEIGHT].unsqueeze(0) * w_graph)[:, batch[G.BATCH]]
    if G.DIPOLE_WEIGHT in batch:
        masks["dipole"] = batch[G.DIPOLE_WEIGHT].unsqueeze(0) * w_graph
    return masks


def loss_denominators(batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The weighted counts each loss term divides by (``[M]`` or ``[1]`` per term): summed
    over the shares of a global batch, they make each share's loss a part of the global mean."""
    return {k: m.sum(dim=1).to(torch.float64) for k, m in _masks(batch).items()}


def loss_terms(pred: Dict[str, Tensor], batch: Dict[str, Tensor],
               totals: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
    """Unweighted per-term mean squared errors (each a scalar tensor).

    Each member of an ensemble is fitted on its own: the terms are the sums over members of the
    members' mean squared errors (``member_*`` outputs; one member for a single model), so the
    gradient of every member's weights is that of training it alone. ``totals``: denominators
    (:func:`loss_denominators` summed over the processes sharing the batch).
    """
    totals = totals or {}
    masks = _masks(batch)
    n_atoms = G.atoms_per_graph(batch)
    out: Dict[str, Tensor] = {}
    energy = pred.get("member_energy", pred["energy"].unsqueeze(0))  # [M, B]
    de = (energy - batch[G.ENERGY].unsqueeze(0)) / n_atoms
    out["energy"] = _masked_mean(de**2, masks["energy"], totals.get("energy"))
    if "forces" in pred:
        forces = pred.get("member_forces", pred["forces"].unsqueeze(0))  # [M, N, 3]
        df2 = ((forces.to(torch.float64) - batch[G.FORCES].unsqueeze(0)) ** 2).mean(dim=2)
        out["forces"] = _masked_mean(df2, masks["forces"], totals.get("forces"))
    if "stress" in pred:
        stress = pred.get("member_stress", pred["stress"].unsqueeze(0))  # [M, B, 3, 3]
        ds2 = ((stress.to(torch.float64) - batch[G.STRESS].unsqueeze(0)) ** 2).mean(dim=(2, 3))
        out["stress"] = _masked_mean(ds2, masks["stress"], totals.get("stress"))
    if "member_charges" in pred and "charges" in masks:
        dq2 = (pred["member_charges"] - batch[G.REF_CHARGES].unsqueeze(0)) ** 2  # [M, N]
        out["charges"] = _masked_mean(dq2, masks["charges"], totals.get("charges"))
    if "member_dipole" in pred and "dipole" in masks:
        dmu2 = ((pred["member_dipole"] - batch[G.REF_DIPOLE].unsqueeze(0)) ** 2).mean(dim=2)  # [M, B]
        out["dipole"] = _masked_mean(dmu2, masks["dipole"], totals.get("dipole"))
    return out


def weighted_loss(pred: Dict[str, Tensor], batch: Dict[str, Tensor], weights: LossWeights,
                  totals: Optional[Dict[str, Tensor]] = None) -> Tensor:
    """The scalar training loss (see module docstring); ``totals`` as in :func:`loss_terms`."""
    terms = loss_terms(pred, batch, totals)
    total = weights.energy * terms["energy"]
    if "forces" in terms:
        total = total + weights.forces * terms["forces"]
    if "stress" in terms:
        total = total + weights.stress * terms["stress"]
    if "charges" in terms and weights.charges > 0:
        total = total + weights.charges * terms["charges"]
    if "dipole" in terms and weights.dipole > 0:
        total = total + weights.dipole * terms["dipole"]
    return total
