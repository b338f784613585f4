"""The Potential wrapper shared by every model: energies per graph, forces by autograd, stress
and virial from a symmetric strain of positions and cell, per-atom energies; batches of graphs
of any sizes; float32 and float64 models; TorchScript-able.

``Potential(model)(graph, compute_forces=True, compute_stress=False)`` returns a dict with
``energy`` ``[B]`` (eV, float64), ``energies`` ``[N]`` (eV, float64), ``forces`` ``[N, 3]`` (eV/A),
and with stress ``stress`` ``[B, 3, 3]`` (eV/A^3, ASE sign: ``(1/V) dE/d(strain)``) and
``virial`` ``[B, 3, 3]`` (eV, ``-dE/d(strain)``). Graph keys as in :mod:`mlff.graph`.

In training mode (``potential.train()``) the derivative graph is kept (``create_graph``) so that
losses on forces and stress can be back-propagated; call ``potential.eval()`` for inference,
which is several times cheaper in memory and time.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor, nn

from mlff import graph as G


class Potential(nn.Module):
    """Wrap an energy model ``model(species, edge_index, vectors) -> energies [N]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.model_dtype: torch.dtype = next(model.parameters()).dtype
        self.r_cut = float(model.r_cut)

    def forward(
        self,
        graph: Dict[str, Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
    ) -> Dict[str, Tensor]:
        positions = graph[G.POSITIONS]
        cell = graph[G.CELL]
        batch = graph[G.BATCH]
        edge_index = graph[G.EDGE_INDEX]
        unit_shifts = graph[G.UNIT_SHIFTS]
        n_graphs = cell.shape[0]

        strain = torch.zeros(n_graphs, 3, 3, dtype=positions.dtype, device=positions.device)
        if compute_forces:
            positions = positions.detach().requires_grad_(True)
        if compute_stress:
            strain.requires_grad_(True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions_s = positions + torch.bmm(positions.unsqueeze(1), sym[batch]).squeeze(1)
            cell_s = cell + torch.bmm(cell, sym)
        else:
            positions_s = positions
            cell_s = cell
        edge_graph = batch[edge_index[1]]
        shifts = G.compute_shifts(unit_shifts, cell_s, edge_graph)
        pos_m = positions_s.to(self.model_dtype)
        vectors = pos_m[edge_index[0]] - pos_m[edge_index[1]] + shifts.to(self.model_dtype)
        energies = self.model(graph[G.SPECIES], edge_index, vectors)  # [N] float64
        energy = torch.zeros(n_graphs, dtype=energies.dtype, device=energies.device).index_add_(
            0, batch, energies
        )
        out: Dict[str, Tensor] = {"energy": energy, "energies": energies}
        if compute_forces or compute_stress:
            inputs: List[Tensor] = []
            if compute_forces:
                inputs.append(positions)
            if compute_stress:
                inputs.append(strain)
            grads = torch.autograd.grad(
                [energy.sum()], inputs, create_graph=self.training, allow_unused=True
            )
            k = 0
            if compute_forces:
                g = grads[k]
                k += 1
                out["forces"] = -g if g is not None else torch.zeros_like(positions)
            if compute_stress:
                g = grads[k]
                de_dstrain = g if g is not None else torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(cell))
                out["virial"] = -de_dstrain
                out["stress"] = de_dstrain / volume.clamp(min=1e-12).view(-1, 1, 1)
        return out
