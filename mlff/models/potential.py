"""The Potential wrapper shared by every model: energies per graph, forces by autograd, stress
and virial from a symmetric strain of positions and cell, per-atom energies; batches of graphs
of any sizes; float32 and float64 models; TorchScript-able.

``Potential(model)(graph, compute_forces=True, compute_stress=False)`` returns a dict with
``energy`` ``[B]`` (eV, float64), ``energies`` ``[N]`` (eV, float64), ``forces`` ``[N, 3]`` (eV/A),
and with stress ``stress`` ``[B, 3, 3]`` (eV/A^3, ASE sign: ``(1/V) dE/d(strain)``) and
``virial`` ``[B, 3, 3]`` (eV, ``-dE/d(strain)``). Graph keys as in :mod:`mlff.graph`.

Ensembles (M > 1 members): ``energy``, ``energies``, ``forces``, ``stress`` are member means;
``member_energy`` ``[M, B]``, ``member_forces`` ``[M, N, 3]``, ``member_stress`` ``[M, B, 3, 3]``
hold every member (also present, with M = 1, for single models); ``energy_std`` ``[B]``,
``forces_std`` ``[N, 3]`` and ``stress_std`` are the standard deviations over members times the
recalibration factor ``std_scale`` (``*_std_raw``: without it).

Memory: with a budget (``memory_gb`` argument or :meth:`Potential.set_memory_budget`; default
``MLFF_MEMORY_GB``, else half the machine's memory) every layer takes its edges and its
per-atom work in chunks that keep the call within it, recomputed in the backward pass
(:mod:`mlff.nn.edge_chunks`): same results, bounded memory, eager only (a scripted Potential
evaluates in one piece).

In training mode (``potential.train()``) the derivative graph is kept (``create_graph``) so that
losses on forces and stress can be back-propagated; call ``potential.eval()`` for inference,
which is several times cheaper in memory and time.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from mlff import graph as G
from mlff.allocator import bound_for_chunks, tune_once
from mlff.errors import InputError
from mlff.nn.edge_chunks import default_budget_gb, plan_chunks


class Potential(nn.Module):
    """Wrap an energy model ``model(species, edge_index, vectors [M, E, 3]) -> energies [N, M]``
    with M members (``model.num_members``; 1 for a single model, M > 1 for an ensemble)."""

    def __init__(self, model: nn.Module, std_scale: float = 1.0,
                 supported_charges: Sequence[int] = (0,), supported_spins: Sequence[int] = (1,),
                 memory_gb: Optional[float] = None) -> None:
        super().__init__()
        tune_once()  # large CPU tensors reused, not page-faulted in (mlff.allocator)
        self.model = model
        self.model_dtype: torch.dtype = next(model.parameters()).dtype
        self.r_cut = float(model.r_cut)
        self.num_members = int(model.num_members)
        #: atomic numbers in species-index order
        self.elements = [int(z) for z in model.config.elements]
        # recalibration factor of ensemble standard deviations (fitted on validation data)
        self.register_buffer("std_scale", torch.tensor(float(std_scale), dtype=torch.float64))
        #: total charges (e) and spin multiplicities of the structures the model was trained on;
        #: the models take no charge or spin input, so anything else is outside their domain
        #: (:func:`require_supported`)
        self.supported_charges: List[int] = sorted(int(q) for q in supported_charges)
        self.supported_spins: List[int] = sorted(int(m) for m in supported_spins)
        #: evaluation memory budget (GB; 0: none, edges in one piece)
        self.memory_gb: float = 0.0
        self.set_memory_budget(memory_gb)

    @torch.jit.unused
    def set_memory_budget(self, memory_gb: Optional[float] = None) -> None:
        """Peak-memory budget (GB) of a call; ``None``: ``MLFF_MEMORY_GB``, else half of this
        machine's memory; 0: no budget (every edge at once, the fastest when it fits)."""
        gb = default_budget_gb() if memory_gb is None else float(memory_gb)
        if gb < 0:
            raise ValueError(f"memory budget must be >= 0 GB (0: none), got {gb}")
        self.memory_gb = gb

    @torch.jit.unused
    def _plan_chunks(self, n_edges: int, n_atoms: int) -> None:
        self.model.edge_chunk, self.model.atom_chunk = plan_chunks(n_edges, n_atoms, self.memory_gb,
                                                                   self.model.memory_costs())
        if self.model.edge_chunk > 0 or self.model.atom_chunk > 0:
            # a budget bounds resident memory, not only live tensors (thresholds by float size)
            weight = next(self.model.parameters(), None)
            bound_for_chunks(weight.element_size() if weight is not None else 4)

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
        m = self.num_members
        if not torch.jit.is_scripting():
            self._plan_chunks(edge_index.shape[1], positions.shape[0])

        # every member differentiates with respect to its own copy of positions and strain, so
        # one backward pass gives all members' forces and stresses
        if compute_forces:
            pos_m = positions.detach().unsqueeze(0).repeat(m, 1, 1)  # [M, N, 3]
        else:
            pos_m = positions.unsqueeze(0).expand(m, -1, -1)
        strain = torch.zeros(m, n_graphs, 3, 3, dtype=positions.dtype, device=positions.device)
        if compute_forces:
            pos_m.requires_grad_(True)
        if compute_stress:
            strain.requires_grad_(True)
            sym = 0.5 * (strain + strain.transpose(2, 3))
            positions_s = pos_m + torch.einsum("mni,mnij->mnj", pos_m, sym[:, batch])
            cell_s = cell.unsqueeze(0) + torch.matmul(cell.unsqueeze(0), sym)
        else:
            positions_s = pos_m
            cell_s = cell.unsqueeze(0)
        edge_graph = batch[edge_index[1]]
        shifts = G.compute_shifts(unit_shifts, cell_s, edge_graph)  # [M, E, 3]
        p = positions_s.to(self.model_dtype)
        vectors = (p[:, edge_index[0]] - p[:, edge_index[1]] + shifts.to(self.model_dtype))
        context: Optional[Dict[str, Tensor]] = None
        if self.model.needs_context:
            context = self._long_range_context(graph, positions_s, cell_s)
        energies_m = self.model(graph[G.SPECIES], edge_index, vectors, context)  # [N, M] float64
        member_energy = torch.zeros(
            n_graphs, m, dtype=energies_m.dtype, device=energies_m.device
        ).index_add_(0, batch, energies_m).t()  # [M, B]
        out: Dict[str, Tensor] = {
            "energy": member_energy.mean(0),
            "energies": energies_m.mean(1),
            "member_energy": member_energy,
        }
        if m > 1:
            raw = member_energy.std(0, unbiased=False)
            out["energy_std_raw"] = raw
            out["energy_std"] = raw * self.std_scale
        if context is not None and self.model.has_charges:
            self._charge_outputs(out, context["charges"], positions, batch, n_graphs)
        if compute_forces or compute_stress:
            inputs: List[Tensor] = []
            if compute_forces:
                inputs.append(pos_m)
            if compute_stress:
                inputs.append(strain)
            grads = torch.autograd.grad(
                [member_energy.sum()], inputs, create_graph=self.training, allow_unused=True
            )
            k = 0
            if compute_forces:
                g = grads[k]
                k += 1
                member_forces = -g if g is not None else torch.zeros_like(pos_m)
                out["member_forces"] = member_forces
                out["forces"] = member_forces.mean(0)
                if m > 1:
                    raw = member_forces.std(0, unbiased=False)
                    out["forces_std_raw"] = raw
                    out["forces_std"] = raw * self.std_scale.to(raw.dtype)
            if compute_stress:
                g = grads[k]
                de_dstrain = g if g is not None else torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(cell))
                member_stress = de_dstrain / volume.clamp(min=1e-12).view(1, -1, 1, 1)
                out["member_stress"] = member_stress
                out["virial"] = -de_dstrain.mean(0)
                out["stress"] = member_stress.mean(0)
                if m > 1:
                    raw = member_stress.std(0, unbiased=False)
                    out["stress_std_raw"] = raw
                    out["stress_std"] = raw * self.std_scale.to(raw.dtype)
        if not self.training:
            # inference: hand back plain values, so callers do not keep the graph alive
            out = {k: v.detach() for k, v in out.items()}
        return out


    def _long_range_context(self, graph: Dict[str, Tensor], positions: Tensor, cell: Tensor) -> Dict[str, Tensor]:
        """The long-range block's inputs (:mod:`mlff.nn.longrange`): the members' strained
        ``positions`` ``[M, N, 3]`` and ``cell`` ``[M, B, 3, 3]``, ``pbc``, ``ptr``, ``batch``
        and ``total_charge`` ``[B]`` (0 where the graph has none)."""
        n_graphs = graph[G.CELL].shape[0]
        if G.TOTAL_CHARGE in graph:
            total_charge = graph[G.TOTAL_CHARGE].to(torch.float64)
        else:
            total_charge = torch.zeros(n_graphs, dtype=torch.float64, device=positions.device)
        if G.PTR in graph:
            ptr = graph[G.PTR]
        else:
            counts = torch.bincount(graph[G.BATCH], minlength=n_graphs)
            ptr = torch.cat([torch.zeros(1, dtype=counts.dtype, device=counts.device), counts.cumsum(0)])
        return {
            "positions": positions,
            "cell": cell.expand(positions.shape[0], -1, -1, -1),
            "pbc": graph[G.PBC],
            "ptr": ptr,
            "batch": graph[G.BATCH],
            "total_charge": total_charge,
        }

    def _charge_outputs(self, out: Dict[str, Tensor], charges: Tensor, positions: Tensor, batch: Tensor,
                        n_graphs: int) -> None:
        """``charges`` ``[N]`` (e), ``member_charges`` ``[M, N]``, ``dipole`` ``[B, 3]`` (e A,
        ``sum_i q_i r_i`` of the positions as given) and, for ensembles, ``charges_std``."""
        out["member_charges"] = charges
        out["charges"] = charges.mean(0)
        p = positions.to(torch.float64)
        member_dipole = torch.zeros(charges.shape[0], n_graphs, 3, dtype=torch.float64, device=p.device)
        member_dipole = member_dipole.index_add(1, batch, charges.unsqueeze(2) * p.unsqueeze(0))
        out["member_dipole"] = member_dipole
        out["dipole"] = member_dipole.mean(0)
        if charges.shape[0] > 1:
            out["charges_std"] = charges.std(0, unbiased=False) * self.std_scale

def require_supported(potential: Potential, charge: float = 0, spin: float = 1, where: str = "structure") -> None:
    """Raise :class:`~mlff.errors.InputError` when a total ``charge`` (e) or spin multiplicity
    is not one the model was trained on (its file states them; mlff models take no charge or
    spin input, so such a result would be meaningless)."""
    if round(float(charge)) != float(charge) or int(round(float(charge))) not in potential.supported_charges:
        raise InputError(
            f"{where} has total charge {charge:g}, but this model supports total charges "
            f"{potential.supported_charges} only (it was trained on such structures and takes no "
            "charge input): use a model trained on charged structures, or a neutral structure")
    if round(float(spin)) != float(spin) or int(round(float(spin))) not in potential.supported_spins:
        raise InputError(
            f"{where} has spin multiplicity {spin:g}, but this model supports multiplicities "
            f"{potential.supported_spins} only: use a model trained on such structures")
