"""The Python route: an ``openmm.PythonForce`` calling :class:`MLFFEvaluator` (eager PyTorch,
vesin neighbour list), for torch builds without TorchScript (TorchScript is deprecated from
torch 2.11) or for debugging. Same numbers as the TorchForce route.

Units: OpenMM's nm and kJ/mol outside, the model's Angstrom and eV inside (:mod:`mlff.units`).
PythonForce cannot declare parameter derivatives, so with ``lambda_name`` dU/dlambda comes from
:meth:`MLFFEvaluator.evaluate` (the unscaled ML energy).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
import openmm
import openmm.unit as u
import torch
from torch import Tensor

from mlff import graph as G
from mlff.calculators.openmm.selection import ElementsLike, ml_selection
from mlff.dtypes import DTypeLike
from mlff.io import ModelLike, resolve_model
from mlff.models.potential import Potential
from mlff.units import EV_PER_A_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM


def state_positions_box(state: openmm.State, periodic: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Positions ``[P, 3]`` and, when ``periodic``, box vectors ``[3, 3]`` (rows) of a State, nm."""
    pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if periodic else None
    return np.asarray(pos), None if box is None else np.asarray(box)


class MLFFEvaluator:
    """Evaluate an mlff model on OpenMM States (eager PyTorch, vesin neighbour list).

    Used as the computation of :func:`make_python_force` (called with a State holding only the
    ML atoms' positions) and, through :meth:`evaluate`, by reporters that need ensemble standard
    deviations or dU/dlambda (called with a full State). Holds a reference to the given
    :class:`Potential`, never a copy. Picklable (for ``XmlSerializer``): it pickles the model's
    config and weights as plain data, not the module.

    Args:
        model: model file path, ``"default"`` or a :class:`Potential` (shared, not copied).
        elements: the atoms of the whole System (Topology, Atoms or atomic numbers).
        atoms: particle indices of the ML atoms; None: every particle.
        periodic: read the State's periodic box vectors.
        lambda_name: a global parameter scaling the ML energy and forces.
        device: where the model runs. dtype: None keeps the model's dtype.
    """

    def __init__(
        self,
        model: ModelLike,
        elements: ElementsLike,
        atoms: Optional[Iterable[int]] = None,
        periodic: bool = False,
        lambda_name: Optional[str] = None,
        device: Union[str, torch.device] = "cpu",
        dtype: DTypeLike = None,
    ) -> None:
        self.potential = resolve_model(model, device, dtype)
        _, self.atoms, ml_numbers, self.species = ml_selection(elements, atoms, self.potential)
        self.ml_numbers = torch.tensor(ml_numbers, dtype=torch.long)
        self.periodic = bool(periodic)
        self.lambda_name = lambda_name
        self.device = torch.device(device)

    # pickling: plain data (config + weights), rebuilt on load
    def __getstate__(self) -> Dict[str, object]:
        from mlff.models.registry import model_type_of

        state = {k: v for k, v in self.__dict__.items() if k != "potential"}
        state["device"] = str(self.device)
        if not isinstance(self.potential, Potential):  # an exported .pt2 package: its path
            state["_exported"] = str(self.potential.path)
            return state
        model = self.potential.model
        state["_model"] = {
            "model_type": model_type_of(model),
            "config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "std_scale": float(self.potential.std_scale),
        }
        return state

    def __setstate__(self, state: Dict[str, object]) -> None:
        from mlff.models.registry import build_model

        if "_exported" in state:
            from mlff.export import ExportedPotential

            path = state.pop("_exported")
            self.__dict__.update(state)
            self.device = torch.device(str(state["device"]))
            self.potential = ExportedPotential(path)
            return
        data = state.pop("_model")
        model = build_model(data["model_type"], data["config"])
        model.load_state_dict(data["state_dict"], strict=True)
        self.__dict__.update(state)
        self.device = torch.device(str(state["device"]))
        self.potential = Potential(model, std_scale=data["std_scale"]).to(self.device).eval()

    def _evaluate(self, positions_nm: np.ndarray, box_nm: Optional[np.ndarray]) -> Dict[str, Tensor]:
        """Potential outputs (eV, eV/A) for ML-atom positions ``[n_ml, 3]`` (nm)."""
        dtype = torch.float64
        pos = torch.tensor(np.asarray(positions_nm, dtype=np.float64) * NM_TO_ANGSTROM, dtype=dtype)
        cell = pbc = None
        if self.periodic:
            if box_nm is None:
                raise ValueError("periodic force but the State has no periodic box vectors")
            cell = torch.tensor(np.asarray(box_nm, dtype=np.float64) * NM_TO_ANGSTROM, dtype=dtype)
            pbc = torch.ones(3, dtype=torch.bool)
        graph = G.build_graph(pos, self.ml_numbers, self.potential.r_cut, cell, pbc, self.species)
        graph = {k: v.to(self.device) for k, v in graph.items()}
        return self.potential(graph, compute_forces=True, compute_stress=False)

    def __call__(self, state: openmm.State) -> Tuple[float, np.ndarray]:
        """PythonForce computation: State of the ML atoms -> (energy kJ/mol, forces [n_ml, 3]
        kJ/mol/nm), scaled by the lambda parameter when there is one."""
        pos, box = state_positions_box(state, self.periodic)
        out = self._evaluate(pos, box)
        scale = 1.0 if self.lambda_name is None else float(state.getParameters()[self.lambda_name])
        energy = float(out["energy"].sum()) * EV_TO_KJ_PER_MOL * scale
        forces = out["forces"].detach().cpu().numpy() * (EV_PER_A_TO_KJ_PER_MOL_PER_NM * scale)
        return energy, forces

    def evaluate(self, state: openmm.State) -> Dict[str, object]:
        """Unscaled model outputs for a full State (all particles), in OpenMM units.

        Returns:
            ``energy`` (kJ/mol; equals dU/dlambda of a lambda-scaled force), ``forces``
            ``[P, 3]`` (kJ/mol/nm, zeros outside the ML atoms), and for ensembles
            ``energy_std`` (kJ/mol) and ``forces_std`` ``[P, 3]`` (kJ/mol/nm): standard
            deviations over members times the model's recalibration factor ``std_scale``.
        """
        pos, box = state_positions_box(state, self.periodic)
        n = pos.shape[0]
        if self.atoms is not None:
            pos = pos[self.atoms]
        out = self._evaluate(pos, box)

        def scatter(values: Tensor) -> np.ndarray:
            full = np.zeros((n, 3))
            v = values.detach().cpu().numpy() * EV_PER_A_TO_KJ_PER_MOL_PER_NM
            if self.atoms is None:
                return v
            full[self.atoms] = v
            return full

        result: Dict[str, object] = {
            "energy": float(out["energy"].sum()) * EV_TO_KJ_PER_MOL,
            "forces": scatter(out["forces"]),
        }
        if "energy_std" in out:
            result["energy_std"] = float(out["energy_std"].sum()) * EV_TO_KJ_PER_MOL
            result["forces_std"] = scatter(out["forces_std"])
        return result


def python_force_of(evaluator: MLFFEvaluator) -> openmm.PythonForce:
    """An ``openmm.PythonForce`` calling ``evaluator`` on the ML atoms only (``setParticles``),
    with the evaluator's lambda parameter (default 1) when it has one."""
    params = {} if evaluator.lambda_name is None else {evaluator.lambda_name: 1.0}
    force = openmm.PythonForce(evaluator, params)
    force.setUsesPeriodicBoundaryConditions(evaluator.periodic)
    if evaluator.atoms is not None:
        force.setParticles(evaluator.atoms)
    return force


def make_python_force(model: ModelLike, elements: ElementsLike, *args, **kwargs) -> openmm.PythonForce:
    """An ``openmm.PythonForce`` with the same numbers as
    :func:`~mlff.calculators.openmm.torch_force.make_torch_force`; arguments as
    :class:`MLFFEvaluator` (atoms, periodic, lambda_name, device, dtype). With ``lambda_name``
    the energy and forces are scaled by that global parameter; dU/dlambda comes from
    :meth:`MLFFEvaluator.evaluate` (or :meth:`MLSystem.evaluate` of
    :func:`~mlff.calculators.openmm.build_ml_system`, which keeps the evaluator)."""
    return python_force_of(MLFFEvaluator(model, elements, *args, **kwargs))
