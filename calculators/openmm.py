"""OpenMM adapters: a TorchForce (TorchScript) and a PythonForce built from an mlff model, ML/MM
atom selection, alchemical scaling with dU/dlambda, and the openmm-ml entry point.

Units: OpenMM hands positions and box vectors in nm and expects kJ/mol and kJ/mol/nm; the model
works in Angstrom and eV. The conversion happens inside the force with the named constants of
:mod:`mlff.units`.

Two routes, same numbers:

:func:`make_torch_force`
    An ``openmmtorch.TorchForce`` around a TorchScript module (:class:`MLFFTorchModule`)
    that selects the ML atoms, builds its neighbour list inside
    (:func:`mlff.neighbors.torch_neighbor_list`), evaluates the model and returns the energy and
    the forces (``setOutputsForces(True)``: the module differentiates, OpenMM does not repeat
    the backward pass). Runs wherever OpenMM and LibTorch run, CUDA included.
:func:`make_python_force`
    An ``openmm.PythonForce`` calling :class:`MLFFEvaluator` (eager PyTorch, vesin neighbour
    list), for torch builds without TorchScript or for debugging.

Ensembles: both forces use the ensemble mean. The standard deviations (for uncertainty
reporters) come from :class:`MLFFEvaluator`, which holds a reference to the *same*
:class:`~mlff.models.potential.Potential` object, never a copy::

    potential = mlff.io.load_model("ensemble.pt")
    system.addForce(make_torch_force(potential, topology))
    evaluator = MLFFEvaluator(potential, topology)          # shares the weights
    ...
    state = simulation.context.getState(getPositions=True)
    evaluator.evaluate(state)["forces_std"]                 # kJ/mol/nm, [N, 3]

The TorchScript module also exports ``ensemble_std(positions, box)`` for the same numbers from
the scripted module (:func:`make_torch_module`).

Alchemical scaling: with ``lambda_name`` the force reads that global parameter (default 1),
multiplies the ML energy and forces by it, and (TorchForce) declares an energy-parameter
derivative, so ``State.getEnergyParameterDerivatives()[lambda_name]`` is dU/dlambda, the
unscaled ML energy in kJ/mol. ``PythonForce`` has no parameter derivatives in OpenMM; use
:meth:`MLFFEvaluator.evaluate` for dU/dlambda there.

openmm-ml: :class:`calculators.openmmml_entry.MLFFPotentialImplFactory` is registered in the
entry point group ``openmmml.potentials`` as ``mlff``, so ``MLPotential("mlff", modelPath=...)``
works with ``createSystem`` and ``createMixedSystem(..., interpolate=True)``
(:class:`MLFFPotentialImpl`).

Devices: ``device`` must match the platform: ``"cpu"`` for Reference and CPU, ``"cuda"`` for the
CUDA platform (positions, box and forces then stay on the GPU).

Known limitation (openmm-torch 1.5 wheels with OpenMM 8.6.1 and torch 2.9): deserializing any
TorchForce from XML crashes the process, and so does a TorchForce inside a CustomCVForce (which
clones it through XML). Serializing works; a PythonForce round-trips. Mixed systems from
openmm-ml avoid the CustomCVForce (see :meth:`MLFFPotentialImpl.createMixedSystem`).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch  # before openmmtorch: loads the CUDA runtime libraries openmmtorch links against
from torch import Tensor, nn

import openmm
import openmm.app
import openmm.unit as u

from calculators._common import ModelLike, clone_potential, resolve_model, species_of
from mlff import graph as G
from mlff.models.potential import Potential
from mlff.neighbors import torch_neighbor_list
from mlff.units import ANGSTROM_TO_NM, EV_PER_A_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

#: Global parameter created by openmm-ml's interpolating mixed systems.
OPENMMML_LAMBDA = "lambda_interpolate"

ElementsLike = Union[openmm.app.Topology, Sequence[int], "ase.Atoms"]  # noqa: F821


def atomic_numbers_of(elements: ElementsLike) -> List[int]:
    """Atomic numbers of every particle from an OpenMM Topology, an ASE Atoms or a sequence of
    atomic numbers.

    Raises:
        ValueError: a Topology atom without an element (virtual site, extra particle).
    """
    if isinstance(elements, openmm.app.Topology):
        numbers = []
        for atom in elements.atoms():
            if atom.element is None:
                raise ValueError(
                    f"atom {atom.index} ({atom.name} in {atom.residue.name}) has no element; "
                    "exclude it from the ML atoms with `atoms=`"
                )
            numbers.append(int(atom.element.atomic_number))
        return numbers
    if hasattr(elements, "numbers"):  # ase.Atoms
        return [int(z) for z in elements.numbers]
    return [int(z) for z in elements]


def _ml_indices(atoms: Optional[Iterable[int]], n_particles: int) -> Optional[List[int]]:
    """Validated ML atom indices, or ``None`` for all particles."""
    if atoms is None:
        return None
    idx = [int(a) for a in atoms]
    if len(idx) == 0:
        raise ValueError("atoms is empty; give the indices of the ML atoms (or None for all)")
    if len(set(idx)) != len(idx):
        raise ValueError("atoms contains duplicate indices")
    bad = [a for a in idx if a < 0 or a >= n_particles]
    if bad:
        raise ValueError(f"atom indices {bad[:10]} out of range for {n_particles} particles")
    if idx == list(range(n_particles)):
        return None
    return idx


def _reload_torch_plugins() -> None:
    """Load openmm-torch's platform plugins that failed when ``import openmm`` ran before
    ``import torch``: they link against CUDA libraries (libnvrtc) that only importing torch
    makes loadable, and without them no platform can run a TorchForce ("does not support all
    required kernels"). Libraries that still fail (e.g. OpenCL without a driver) are skipped."""
    prefix = "Error loading library "
    for failure in openmm.Platform.getPluginLoadFailures():
        if not failure.startswith(prefix) or "OpenMMTorch" not in failure:
            continue
        path = failure[len(prefix):].split(": ")[0]
        if path in _RELOADED:
            continue
        _RELOADED.add(path)
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception:  # noqa: BLE001 - a platform this machine cannot run
            pass


_RELOADED: set = set()
_reload_torch_plugins()



def _ml_selection(
    elements: ElementsLike, atoms: Optional[Iterable[int]], potential: Potential
) -> Tuple[int, Optional[List[int]], List[int], Tensor]:
    """Number of particles, ML atom indices (None: all), the ML atoms' atomic numbers and
    species indices ``[n_ml]`` (unknown elements: InputError naming them)."""
    numbers = atomic_numbers_of(elements)
    ml = _ml_indices(atoms, len(numbers))
    ml_numbers = numbers if ml is None else [numbers[i] for i in ml]
    return len(numbers), ml, ml_numbers, species_of(ml_numbers, potential)


# --------------------------------------------------------------------------------------------
# TorchScript route
# --------------------------------------------------------------------------------------------


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
    def ensemble_std(self, positions: Tensor, box: Optional[Tensor]) -> Dict[str, Tensor]:
        """Ensemble spread in OpenMM units: ``energy_std`` (0-dim, kJ/mol) and ``forces_std``
        ``[P, 3]`` (kJ/mol/nm, zeros outside the ML atoms); zeros for a single model."""
        out = self._evaluate(positions, box)
        if "energy_std" in out:
            e_std = out["energy_std"].sum() * self.ev_to_kj_per_mol
            f_std = self._scatter(out["forces_std"] * self.force_unit, positions)
        else:
            e_std = torch.zeros((), dtype=torch.float64, device=positions.device)
            f_std = torch.zeros_like(positions)
        return {"energy_std": e_std.detach(), "forces_std": f_std.detach()}


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
    dtype: Union[None, str, torch.dtype] = None,
) -> torch.jit.ScriptModule:
    """The TorchScript module behind :func:`make_torch_force` (arguments as there).

    Its ``forward`` takes positions ``[P, 3]`` (nm), then box vectors ``[3, 3]`` (nm) when
    periodic, then the lambda value (0-dim) when ``lambda_name`` is set, and returns the energy
    (kJ/mol) and forces ``[P, 3]`` (kJ/mol/nm). ``ensemble_std(positions, box)`` is exported.
    """
    from e3nn.util import jit as e3nn_jit

    # a rebuilt copy: e3nn's scripting replaces submodules in place, the caller's stays eager
    potential = clone_potential(resolve_model(model, device, dtype))
    n_particles, ml, _, species = _ml_selection(elements, atoms, potential)
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


def make_torch_force(
    model: ModelLike,
    elements: ElementsLike,
    atoms: Optional[Iterable[int]] = None,
    periodic: bool = False,
    lambda_name: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
    use_cuda_graphs: bool = False,
) -> "openmmtorch.TorchForce":  # noqa: F821
    """An ``openmmtorch.TorchForce`` evaluating an mlff model on the ML atoms of a System.

    Args:
        model: model file path, ``"default"`` or a :class:`Potential` (left as it is: the
            TorchScript module holds a rebuilt copy of its weights).
        elements: the atoms of the whole System: an OpenMM Topology, an ASE Atoms, or atomic
            numbers, one per particle.
        atoms: particle indices of the ML atoms (ML/MM); ``None``: every particle.
        periodic: use the System's periodic box vectors (the force then sets
            ``setUsesPeriodicBoundaryConditions(True)``).
        lambda_name: name of a global parameter (default 1.0) scaling the ML energy; the force
            declares its energy-parameter derivative (dU/dlambda = unscaled ML energy, kJ/mol).
        device: where the model runs (``"cuda"`` keeps positions and forces on the GPU when the
            Context runs on the CUDA platform).
        dtype: ``None`` keeps the model's dtype; ``"float32"``/``"float64"`` converts it.
        use_cuda_graphs: set TorchForce's ``useCUDAGraphs`` property (CUDA platform only). The
            in-model neighbour list has a data-dependent size, so graph capture only works if
            the captured shapes stay valid; leave it off unless you have measured it.

    Returns:
        The force (add it to a System; set its force group as you like).
    """
    import openmmtorch

    module = make_torch_module(model, elements, atoms, periodic, lambda_name, device, dtype)
    force = openmmtorch.TorchForce(module)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if lambda_name is not None:
        force.addGlobalParameter(lambda_name, 1.0)
        force.addEnergyParameterDerivative(lambda_name)
    if use_cuda_graphs:
        force.setProperty("useCUDAGraphs", "true")
    return force


# --------------------------------------------------------------------------------------------
# Python route and state evaluation
# --------------------------------------------------------------------------------------------


class MLFFEvaluator:
    """Evaluate an mlff model on OpenMM States (eager PyTorch, vesin neighbour list).

    Used as the computation of :func:`make_python_force` (called with a State holding only the
    ML atoms' positions) and, through :meth:`evaluate`, by reporters that need ensemble standard
    deviations or dU/dlambda (called with a full State). Holds a reference to the given
    :class:`Potential`, never a copy. Picklable (for ``XmlSerializer``): it pickles the model's
    config and weights as plain data, not the module.

    Args:
        model, elements, atoms, periodic, lambda_name, device, dtype: as :func:`make_torch_force`.
    """

    def __init__(
        self,
        model: ModelLike,
        elements: ElementsLike,
        atoms: Optional[Iterable[int]] = None,
        periodic: bool = False,
        lambda_name: Optional[str] = None,
        device: Union[str, torch.device] = "cpu",
        dtype: Union[None, str, torch.dtype] = None,
    ) -> None:
        self.potential = resolve_model(model, device, dtype)
        _, self.atoms, ml_numbers, self.species = _ml_selection(elements, atoms, self.potential)
        self.ml_numbers = torch.tensor(ml_numbers, dtype=torch.long)
        self.periodic = bool(periodic)
        self.lambda_name = lambda_name
        self.device = torch.device(device)

    # pickling: plain data (config + weights), rebuilt on load
    def __getstate__(self) -> Dict[str, object]:
        from mlff.models.registry import model_type_of

        state = {k: v for k, v in self.__dict__.items() if k != "potential"}
        model = self.potential.model
        state["_model"] = {
            "model_type": model_type_of(model),
            "config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "std_scale": float(self.potential.std_scale),
        }
        state["device"] = str(self.device)
        return state

    def __setstate__(self, state: Dict[str, object]) -> None:
        from mlff.models.registry import build_model

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

    @staticmethod
    def _positions_box(state: openmm.State, periodic: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if periodic else None
        return np.asarray(pos), None if box is None else np.asarray(box)

    def __call__(self, state: openmm.State) -> Tuple[float, np.ndarray]:
        """PythonForce computation: State of the ML atoms -> (energy kJ/mol, forces [n_ml, 3]
        kJ/mol/nm), scaled by the lambda parameter when there is one."""
        pos, box = self._positions_box(state, self.periodic)
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
        pos, box = self._positions_box(state, self.periodic)
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


def make_python_force(
    model: ModelLike,
    elements: ElementsLike,
    atoms: Optional[Iterable[int]] = None,
    periodic: bool = False,
    lambda_name: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
) -> openmm.PythonForce:
    """An ``openmm.PythonForce`` with the same numbers as :func:`make_torch_force` (same
    arguments). The force applies to the ML atoms only (``setParticles``). With ``lambda_name``
    the energy and forces are scaled by that global parameter; PythonForce cannot declare
    parameter derivatives, so dU/dlambda comes from :meth:`MLFFEvaluator.evaluate`
    (``force_evaluator(force)`` gives the evaluator back)."""
    evaluator = MLFFEvaluator(model, elements, atoms, periodic, lambda_name, device, dtype)
    params = {} if lambda_name is None else {lambda_name: 1.0}
    force = openmm.PythonForce(evaluator, params)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if evaluator.atoms is not None:
        force.setParticles(evaluator.atoms)
    return force


# --------------------------------------------------------------------------------------------
# openmm-ml entry point
# --------------------------------------------------------------------------------------------

from openmmml.mlpotential import MLPotentialImpl  # noqa: E402

from calculators.openmmml_entry import MLFFPotentialImplFactory, check_kwargs  # noqa: E402,F401


class MLFFPotentialImpl(MLPotentialImpl):
    """openmm-ml implementation: adds an mlff force to a System. Created by
    :class:`calculators.openmmml_entry.MLFFPotentialImplFactory` (the entry point), which lists
    the constructor's keyword arguments."""

    #: keyword arguments of createSystem / createMixedSystem that addForces accepts. openmm-ml's
    #: mechanical embedding forwards its own options here; they are read there, not here.
    ADD_FORCES_ARGS = ("mlLongRange", "linkAtomDistances")

    def __init__(
        self,
        name: str,
        modelPath: Optional[str] = None,
        implementation: str = "torch",
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        useCUDAGraphs: bool = False,
    ) -> None:
        if implementation not in ("torch", "python"):
            raise ValueError(f"implementation must be 'torch' or 'python', got {implementation!r}")
        self.name = name
        self.modelPath = "default" if modelPath is None else modelPath
        self.implementation = implementation
        self.device = device
        self.dtype = dtype
        self.useCUDAGraphs = bool(useCUDAGraphs)
        # load now so that a missing or broken model file fails at MLPotential(...)
        dev = self._getTorchDevice({} if device is None else {"device": device})
        self.potential = resolve_model(self.modelPath, dev, dtype)

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Optional[Iterable[int]],
        forceGroup: int,
        **args,
    ) -> None:
        """Add the ML force for ``atoms`` (all when None) of ``topology`` to ``system``."""
        check_kwargs(args, self.ADD_FORCES_ARGS, "mlff addForces (createSystem/createMixedSystem)")
        self._add_force(topology, system, atoms, forceGroup, lambda_name=None)

    def _add_force(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Optional[Iterable[int]],
        forceGroup: int,
        lambda_name: Optional[str],
    ) -> None:
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        atom_list = None if atoms is None else list(atoms)
        numbers = _topology_numbers_allowing_extras(topology, atom_list)
        device = next(self.potential.parameters()).device
        if self.implementation == "torch":
            force = make_torch_force(
                self.potential, numbers, atom_list, periodic, lambda_name, device=device,
                use_cuda_graphs=self.useCUDAGraphs,
            )
        else:
            force = make_python_force(self.potential, numbers, atom_list, periodic, lambda_name, device=device)
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        """mlff's MACE models are local (finite cutoff, no long-range block)."""
        return False

    def getSupportedEmbeddings(self) -> List[str]:
        """mlff runs openmm-ml's mechanical embedding itself (see :meth:`createMixedSystem`)."""
        return ["mechanical"]

    def createMixedSystem(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: List[int],
        forceGroup: int,
        interpolate: bool,
        embedding: str,
        returnInfo: bool = False,
        **args,
    ):
        """openmm-ml's mechanical embedding; with ``interpolate`` the ML force scales itself by
        ``lambda_interpolate`` instead of sitting inside openmm-ml's CustomCVForce.

        openmm-ml interpolates by placing the ML force in a CustomCVForce, which clones it
        through XmlSerializer on every Context creation; that is slower, and the openmm-torch
        1.5 wheels crash when deserializing a TorchForce. Here openmm-ml's helper interpolates
        the MM terms as usual (its ML part left empty), and the ML force (on the ML atoms plus
        openmm-ml's link-atom caps) reads the same global parameter, so
        U(lambda) = lambda U_mixed + (1 - lambda) U_MM as in openmm-ml, and the TorchForce
        gives dU_ML/dlambda.
        """
        from openmmml.embeddings.mechanicalembedding import MechanicalEmbedding

        mechanical = MechanicalEmbedding()
        if not interpolate:
            return mechanical.createMixedSystem(
                self, topology, system, atoms, forceGroup, False, returnInfo=returnInfo, **args
            )
        check_kwargs(args, self.ADD_FORCES_ARGS, "mlff createMixedSystem")
        info = mechanical.createMixedSystem(
            _MMOnly(), topology, system, atoms, forceGroup, True, returnInfo=True, **args
        )
        new_topology = info["topology"]
        old_to_new = list(info["oldToNew"])
        caps = list(range(topology.getNumAtoms(), new_topology.getNumAtoms()))
        ml_atoms = [old_to_new[a] for a in atoms] + caps
        self._add_force(new_topology, info["system"], ml_atoms, forceGroup, OPENMMML_LAMBDA)
        return info if returnInfo else info["system"]


class _MMOnly(MLPotentialImpl):
    """Stand-in ML potential that adds no forces (for the MM half of an interpolation)."""

    def addForces(self, topology, system, atoms, forceGroup, **args) -> None:  # noqa: ANN001
        return None

    def getMLLongRange(self) -> bool:
        return False


def _topology_numbers_allowing_extras(
    topology: openmm.app.Topology, atoms: Optional[List[int]]
) -> List[int]:
    """Atomic numbers per particle; particles outside the ML atoms may lack an element
    (0 is recorded for them and never read)."""
    wanted = None if atoms is None else set(atoms)
    numbers = []
    for atom in topology.atoms():
        if atom.element is None:
            if wanted is None or atom.index in wanted:
                raise ValueError(f"ML atom {atom.index} ({atom.name}) has no element")
            numbers.append(0)
        else:
            numbers.append(int(atom.element.atomic_number))
    return numbers
