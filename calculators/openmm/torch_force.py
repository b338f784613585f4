"""The TorchScript route: an ``openmmtorch.TorchForce`` around :class:`MLFFTorchModule`.

The module selects the ML atoms, builds its neighbour list inside
(:func:`mlff.neighbors.torch_neighbor_list`), evaluates the model and returns the energy and the
forces (``setOutputsForces(True)``: the module differentiates, OpenMM does not repeat the
backward pass). Runs wherever OpenMM and LibTorch run, CUDA included.

Units: positions and box vectors in nm in, kJ/mol and kJ/mol/nm out; the model works in
Angstrom and eV, converted inside with the constants of :mod:`mlff.units`.

Alchemical scaling: with ``lambda_name`` the force reads that global parameter (default 1),
multiplies the ML energy and forces by it and declares an energy-parameter derivative, so
``State.getEnergyParameterDerivatives()[lambda_name]`` is dU/dlambda, the unscaled ML energy.
"""

from __future__ import annotations

import inspect
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch  # before openmmtorch: loads the CUDA runtime libraries openmmtorch links against
from torch import Tensor, nn

from mlff import graph as G
from mlff.calculators.openmm.plugins import load_torch_plugins
from mlff.calculators.openmm.selection import ElementsLike, ml_selection
from mlff.dtypes import DTypeLike
from mlff.errors import InputError
from mlff.io import ModelLike, clone_potential, resolve_model
from mlff.models.potential import Potential
from mlff.neighbors import torch_neighbor_list
from mlff.units import EV_PER_A_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM


class MLFFTorchModule(nn.Module):
    """Model evaluation in OpenMM units, shared by the TorchForce modules below.

    Args:
        potential: the model (eval mode, on the target device).
        species: ``[n_ml]`` species indices of the ML atoms.
        atoms: ``[n_ml]`` particle indices of the ML atoms, or ``None`` for all particles.
        n_particles: number of particles in the System.
        periodic: whether box vectors are passed and used.
    """

    def __init__(
        self,
        potential: Potential,
        species: Tensor,
        atoms: Optional[Sequence[int]],
        n_particles: int,
        periodic: bool,
    ) -> None:
        super().__init__()
        device = next(potential.parameters()).device
        self.potential = potential
        self.r_cut = float(potential.r_cut)
        self.n_particles = int(n_particles)
        self.periodic = bool(periodic)
        self.all_atoms = atoms is None
        index = torch.arange(n_particles) if atoms is None else torch.tensor(list(atoms))
        self.register_buffer("atoms", index.to(device=device, dtype=torch.long))
        self.register_buffer("species", species.to(device=device, dtype=torch.long))
        self.register_buffer("batch", torch.zeros(len(species), dtype=torch.long, device=device))
        self.nm_to_angstrom = float(NM_TO_ANGSTROM)
        self.ev_to_kj_per_mol = float(EV_TO_KJ_PER_MOL)
        self.force_unit = float(EV_PER_A_TO_KJ_PER_MOL_PER_NM)

    def _evaluate(self, positions: Tensor, box: Optional[Tensor]) -> Dict[str, Tensor]:
        """Potential outputs (eV, eV/A) for positions ``[P, 3]`` (nm) and box ``[3, 3]`` (nm)."""
        pos = positions.to(torch.float64)
        if not self.all_atoms:
            pos = pos.index_select(0, self.atoms)
        pos = pos * self.nm_to_angstrom
        if box is not None and self.periodic:
            cell = box.to(dtype=torch.float64, device=pos.device) * self.nm_to_angstrom
            pbc = torch.ones(3, dtype=torch.bool, device=pos.device)
        else:
            cell = torch.zeros(3, 3, dtype=torch.float64, device=pos.device)
            pbc = torch.zeros(3, dtype=torch.bool, device=pos.device)
        edge_index, unit_shifts = torch_neighbor_list(pos, self.r_cut, cell, pbc)
        graph: Dict[str, Tensor] = {
            G.POSITIONS: pos,
            G.SPECIES: self.species,
            G.CELL: cell.unsqueeze(0),
            G.PBC: pbc.unsqueeze(0),
            G.EDGE_INDEX: edge_index,
            G.UNIT_SHIFTS: unit_shifts,
            G.BATCH: self.batch,
        }
        return self.potential(graph, True, False)

    def _scatter(self, values: Tensor, like: Tensor) -> Tensor:
        """ML-atom values ``[n_ml, 3]`` -> all particles ``[P, 3]`` (zeros elsewhere)."""
        if self.all_atoms:
            return values.to(like.dtype)
        out = torch.zeros(like.shape[0], 3, dtype=like.dtype, device=like.device)
        return out.index_copy(0, self.atoms, values.to(like.dtype))

    def energy_forces(self, positions: Tensor, box: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Energy (0-dim, kJ/mol, float64) and forces ``[P, 3]`` (kJ/mol/nm, positions' dtype)
        for positions ``[P, 3]`` (nm) and box vectors ``[3, 3]`` (nm, rows) or None."""
        out = self._evaluate(positions, box)
        # no_grad rather than detach(): torch.jit.freeze (which OpenMM applies) drops detach(),
        # and OpenMM's backward for dU/dlambda would then run into the freed force graph
        with torch.no_grad():
            energy = out["energy"].sum() * self.ev_to_kj_per_mol
            forces = self._scatter(out["forces"] * self.force_unit, positions)
        return energy, forces

    @torch.jit.export
    def outputs(self, positions: Tensor, box: Optional[Tensor]) -> Dict[str, Tensor]:
        """Unscaled model outputs in OpenMM units, for reporters and dU/dlambda: ``energy``
        (0-dim, kJ/mol), ``forces`` ``[P, 3]`` (kJ/mol/nm, zeros outside the ML atoms) and, for
        ensembles, ``energy_std`` and ``forces_std`` (same units, times ``std_scale``)."""
        out = self._evaluate(positions, box)
        result: Dict[str, Tensor] = {
            "energy": out["energy"].sum().detach() * self.ev_to_kj_per_mol,
            "forces": self._scatter(out["forces"] * self.force_unit, positions).detach(),
        }
        if "energy_std" in out:
            result["energy_std"] = out["energy_std"].sum().detach() * self.ev_to_kj_per_mol
            result["forces_std"] = self._scatter(out["forces_std"] * self.force_unit, positions).detach()
        return result

    @torch.jit.export
    def ensemble_std(self, positions: Tensor, box: Optional[Tensor]) -> Dict[str, Tensor]:
        """Ensemble spread in OpenMM units: ``energy_std`` (0-dim, kJ/mol) and ``forces_std``
        ``[P, 3]`` (kJ/mol/nm, zeros outside the ML atoms); zeros for a single model."""
        out = self.outputs(positions, box)
        if "energy_std" in out:
            return {"energy_std": out["energy_std"], "forces_std": out["forces_std"]}
        return {"energy_std": torch.zeros((), dtype=torch.float64, device=positions.device),
                "forces_std": torch.zeros_like(positions)}


class _Molecule(MLFFTorchModule):
    def forward(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        return self.energy_forces(positions, None)


class _Periodic(MLFFTorchModule):
    def forward(self, positions: Tensor, box: Tensor) -> Tuple[Tensor, Tensor]:
        return self.energy_forces(positions, box)


class _MoleculeLambda(MLFFTorchModule):
    def forward(self, positions: Tensor, lam: Tensor) -> Tuple[Tensor, Tensor]:
        energy, forces = self.energy_forces(positions, None)
        # energy is detached from positions, so OpenMM's backward for dU/dlambda is one multiply
        return lam * energy, forces * lam.to(forces.dtype)


class _PeriodicLambda(MLFFTorchModule):
    def forward(self, positions: Tensor, box: Tensor, lam: Tensor) -> Tuple[Tensor, Tensor]:
        energy, forces = self.energy_forces(positions, box)
        return lam * energy, forces * lam.to(forces.dtype)


def make_torch_module(
    model: ModelLike,
    elements: ElementsLike,
    atoms: Optional[Iterable[int]] = None,
    periodic: bool = False,
    lambda_name: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: DTypeLike = None,
) -> torch.jit.ScriptModule:
    """The TorchScript module behind :func:`make_torch_force`.

    Args:
        model: model file path, ``"default"`` or a :class:`Potential` (left as it is: the
            module holds a rebuilt copy of its weights).
        elements: the atoms of the whole System: an OpenMM Topology, an ASE Atoms, or atomic
            numbers, one per particle.
        atoms: particle indices of the ML atoms (ML/MM); ``None``: every particle.
        periodic: use the System's periodic box vectors.
        lambda_name: name of a global parameter (default 1.0) scaling the ML energy; the force
            declares its energy-parameter derivative (dU/dlambda = unscaled ML energy, kJ/mol).
        device: where the model runs (``"cuda"`` keeps positions and forces on the GPU when the
            Context runs on the CUDA platform).
        dtype: ``None`` keeps the model's dtype; ``"float32"``/``"float64"`` converts it.

    Its ``forward`` takes positions ``[P, 3]`` (nm), then box vectors ``[3, 3]`` (nm) when
    periodic, then the lambda value (0-dim) when ``lambda_name`` is set, and returns the energy
    (kJ/mol) and forces ``[P, 3]`` (kJ/mol/nm). ``outputs(positions, box)`` and
    ``ensemble_std(positions, box)`` are exported.

    The model is built once: a model file is loaded straight into the module; a
    :class:`Potential` passed in is rebuilt once, because e3nn's scripting replaces submodules
    in place and the caller's object must stay eager.
    """
    from e3nn.util import jit as e3nn_jit

    potential = resolve_model(model, device, dtype)
    if not isinstance(potential, Potential):  # an ExportedPotential (.pt2): no TorchScript inside
        raise InputError(f"{getattr(potential, 'path', model)} is an ahead-of-time compiled package, which "
                         "the TorchScript route cannot embed: use route='python' for it, or the model file")
    if potential is model:
        potential = clone_potential(potential)
    n_particles, ml, _, species = ml_selection(elements, atoms, potential)
    cls = {
        (False, False): _Molecule,
        (True, False): _Periodic,
        (False, True): _MoleculeLambda,
        (True, True): _PeriodicLambda,
    }[(bool(periodic), lambda_name is not None)]
    module = cls(potential, species, ml, n_particles, bool(periodic)).eval()
    # e3nn modules generate code with torch.fx, which plain torch.jit.script cannot compile;
    # e3nn's script compiles them first
    return e3nn_jit.script(module, in_place=True)


def torch_force_of(
    module: torch.jit.ScriptModule,
    periodic: bool,
    lambda_name: Optional[str] = None,
    use_cuda_graphs: bool = False,
) -> "openmmtorch.TorchForce":  # noqa: F821
    """Wrap a :func:`make_torch_module` module in an ``openmmtorch.TorchForce`` (plugins loaded
    first; forces from the module; the lambda parameter and its derivative declared)."""
    load_torch_plugins()
    import openmmtorch

    force = openmmtorch.TorchForce(module)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if lambda_name is not None:
        force.addGlobalParameter(lambda_name, 1.0)
        force.addEnergyParameterDerivative(lambda_name)
    if use_cuda_graphs:
        force.setProperty("useCUDAGraphs", "true")
    return force


def make_torch_force(
    model: ModelLike, elements: ElementsLike, *args, use_cuda_graphs: bool = False, **kwargs
) -> "openmmtorch.TorchForce":  # noqa: F821
    """An ``openmmtorch.TorchForce`` evaluating an mlff model on the ML atoms of a System;
    arguments as :func:`make_torch_module`, plus ``use_cuda_graphs`` (TorchForce's
    ``useCUDAGraphs``, CUDA platform only: the in-model neighbour list has a data-dependent
    size, so graph capture only works if the captured shapes stay valid; leave it off unless
    you have measured it).

    Prefer :func:`mlff.calculators.openmm.build_ml_system`, which also builds or extends the
    System and hands back the module for reporters.
    """
    bound = inspect.signature(make_torch_module).bind(model, elements, *args, **kwargs)
    bound.apply_defaults()
    module = make_torch_module(*bound.args, **bound.kwargs)
    return torch_force_of(module, bound.arguments["periodic"], bound.arguments["lambda_name"],
                          use_cuda_graphs)
