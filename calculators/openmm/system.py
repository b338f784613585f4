"""The one entry to the OpenMM boundary: :func:`build_ml_system` builds (or adds to) an OpenMM
System with an mlff model on a selection of its atoms.

Every OpenMM user in mlff goes through it: MD and relaxation (new Systems), the openmm-ml entry
point and the free-energy engine (ML forces added to MM Systems, optionally scaled by a lambda
parameter). It returns an :class:`MLSystem`: the System, the force, and the means to evaluate
the same model instance on a State (ensemble spread, dU/dlambda) without a second copy.

Units: OpenMM's (nm, kJ/mol, ps, amu) at this boundary; positions, box vectors and masses passed
in are in those units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
import openmm
import openmm.app
import openmm.unit as u
import torch

from mlff.calculators.openmm.python_force import MLFFEvaluator, python_force_of, state_positions_box
from mlff.calculators.openmm.selection import ElementsLike, atomic_numbers_of, masses_of
from mlff.calculators.openmm.torch_force import make_torch_module, torch_force_of
from mlff.dtypes import DTypeLike
from mlff.io import ModelLike

#: The two ways a model runs inside OpenMM.
ROUTES = ("torch", "python")


@dataclass
class MLSystem:
    """What :func:`build_ml_system` built.

    Attributes:
        system: the OpenMM System holding the ML force (None from :func:`build_ml_force`).
        force: the ``openmmtorch.TorchForce`` (route ``torch``) or ``openmm.PythonForce``.
        route: ``"torch"`` or ``"python"``.
        periodic: whether the force reads the box vectors.
        lambda_name: the global parameter scaling the ML energy, or None.
        module: route ``torch``: the TorchScript module inside the force (same weights).
        evaluator: route ``python``: the evaluator the force calls (same weights).
    """

    system: Optional[openmm.System]
    force: openmm.Force
    route: str
    periodic: bool
    lambda_name: Optional[str] = None
    module: Optional[torch.jit.ScriptModule] = None
    evaluator: Optional[MLFFEvaluator] = None

    @property
    def num_members(self) -> int:
        """Ensemble members of the model (1 for a single model)."""
        potential = self.module.potential if self.module is not None else self.evaluator.potential
        return int(potential.num_members)

    def evaluate(self, state: openmm.State) -> Dict[str, object]:
        """Unscaled model outputs for a State of all particles (positions; box when periodic),
        from the same model instance the force uses, in OpenMM units.

        Returns:
            ``energy`` (float, kJ/mol; equals dU/dlambda of a lambda-scaled force), ``forces``
            ``[P, 3]`` (kJ/mol/nm, zeros outside the ML atoms) and, for ensembles, ``energy_std``
            (kJ/mol) and ``forces_std`` ``[P, 3]`` (kJ/mol/nm, times the model's ``std_scale``).
        """
        if self.evaluator is not None:
            return self.evaluator.evaluate(state)
        pos, box = state_positions_box(state, self.periodic)
        out = self.module.outputs(torch.from_numpy(pos), None if box is None else torch.from_numpy(box))  # needs autograd inside (forces): no no_grad here
        result: Dict[str, object] = {}
        for key, value in out.items():
            result[key] = float(value) if value.dim() == 0 else value.cpu().numpy().astype(np.float64)
        return result


def build_ml_system(
    model: ModelLike,
    topology: ElementsLike,
    system: Optional[openmm.System] = None,
    *,
    atoms: Optional[Iterable[int]] = None,
    periodic: Optional[bool] = None,
    lambda_name: Optional[str] = None,
    route: str = "torch",
    device: Union[str, torch.device] = "cpu",
    dtype: DTypeLike = None,
    masses: Optional[Sequence[float]] = None,
    box_vectors: Optional[np.ndarray] = None,
    force_group: int = 0,
    use_cuda_graphs: bool = False,
) -> MLSystem:
    """Build an OpenMM System for a model, or add the model's force to ``system``.

    Args:
        model: model file path, ``"default"`` or a :class:`~mlff.models.potential.Potential`
            (a file is loaded once, into the force; a Potential is shared by route ``python``
            and rebuilt once by route ``torch``, whose scripting changes modules in place).
        topology: the atoms of the whole System: an OpenMM Topology, an ASE Atoms, or one
            atomic number per particle. Particles outside ``atoms`` may lack an element.
        system: a System to add the force to (its particles must match ``topology``); None
            builds a new System with ``masses`` and ``box_vectors``.
        atoms: particle indices of the ML atoms (ML/MM); None: every particle.
        periodic: whether the force uses periodic box vectors; None: periodic when the
            topology (Topology box vectors, or an Atoms with pbc), ``box_vectors`` or the given
            System is.
        lambda_name: a global parameter (default 1) scaling the ML energy and forces; route
            ``torch`` declares its derivative (``getEnergyParameterDerivatives``), route
            ``python`` gives dU/dlambda through :meth:`MLSystem.evaluate`.
        route: ``"torch"`` (openmm-torch TorchForce) or ``"python"`` (openmm.PythonForce).
        device: where the model runs (``"cuda"`` with the CUDA platform).
        dtype: None keeps the model's dtype; ``"float32"``/``"float64"`` converts it.
        masses: ``[P]`` amu for a new System (default: the elements' masses, 0 for particles
            without one); hydrogen mass repartitioning passes its masses here.
        box_vectors: ``[3, 3]`` nm (rows) for a new System (default: the topology's box).
        force_group: the ML force's force group.
        use_cuda_graphs: TorchForce's ``useCUDAGraphs`` (route ``torch``, CUDA only).

    Raises:
        ValueError: unknown route, particle count mismatch, bad atom indices, a periodic force
            without box vectors. InputError: an element the model does not know.
    """
    numbers = atomic_numbers_of(topology, atoms)
    box = None if box_vectors is None else np.asarray(box_vectors, dtype=np.float64).reshape(3, 3)
    if box is None:
        box = _box_of(topology)
    if periodic is None:
        periodic = box is not None or (system is not None and system.usesPeriodicBoundaryConditions())
    if system is None:
        system = _new_system(topology, masses, box if periodic else None)
    elif system.getNumParticles() != len(numbers):
        raise ValueError(f"the System has {system.getNumParticles()} particles but the topology "
                         f"{len(numbers)}; pass the topology the System was built from")
    if periodic and system.getDefaultPeriodicBoxVectors() is None:
        raise ValueError("periodic force but the System has no box vectors; pass box_vectors")
    ml = build_ml_force(model, numbers, atoms=atoms, periodic=bool(periodic),
                        lambda_name=lambda_name, route=route, device=device, dtype=dtype,
                        force_group=force_group, use_cuda_graphs=use_cuda_graphs)
    ml.system = system
    system.addForce(ml.force)
    return ml


def build_ml_force(
    model: ModelLike,
    topology: ElementsLike,
    *,
    atoms: Optional[Iterable[int]] = None,
    periodic: bool = False,
    lambda_name: Optional[str] = None,
    route: str = "torch",
    device: Union[str, torch.device] = "cpu",
    dtype: DTypeLike = None,
    force_group: int = 0,
    use_cuda_graphs: bool = False,
) -> MLSystem:
    """The ML force of :func:`build_ml_system` on its own, in no System (``MLSystem.system``
    is None): for a force that another force takes ownership of, such as a collective
    variable of an ``openmm.CustomCVForce``. Arguments as :func:`build_ml_system`; here
    ``periodic`` is not inferred.

    Only route ``python`` can go into a CustomCVForce: it clones its variables through XML,
    and deserializing a TorchForce crashes with the openmm-torch 1.5 wheels (see the package
    docstring); route ``torch`` forces belong directly in a System.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "torch":
        module = make_torch_module(model, topology, atoms, periodic, lambda_name, device, dtype)
        force = torch_force_of(module, periodic, lambda_name, use_cuda_graphs)
        ml = MLSystem(None, force, route, periodic, lambda_name, module=module)
    else:
        evaluator = MLFFEvaluator(model, topology, atoms, periodic, lambda_name, device, dtype)
        force = python_force_of(evaluator)
        ml = MLSystem(None, force, route, periodic, lambda_name, evaluator=evaluator)
    force.setForceGroup(int(force_group))
    return ml


def _box_of(topology: ElementsLike) -> Optional[np.ndarray]:
    """Box vectors ``[3, 3]`` nm of a Topology or a periodic ASE Atoms, else None."""
    if isinstance(topology, openmm.app.Topology):
        vectors = topology.getPeriodicBoxVectors()
        return None if vectors is None else np.asarray(vectors.value_in_unit(u.nanometer))
    if hasattr(topology, "pbc") and bool(np.all(topology.pbc)) and topology.cell.volume > 0:
        from mlff.units import ANGSTROM_TO_NM

        return topology.cell.array * ANGSTROM_TO_NM
    return None


def _new_system(topology: ElementsLike, masses: Optional[Sequence[float]],
                box: Optional[np.ndarray]) -> openmm.System:
    """A System with one particle per atom (``masses`` amu, else the elements') and ``box``."""
    m = masses_of(topology) if masses is None else np.asarray(masses, dtype=np.float64)
    system = openmm.System()
    for mass in m:
        system.addParticle(float(mass))
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    return system
