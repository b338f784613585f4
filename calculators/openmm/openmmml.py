"""openmm-ml's implementation for ``MLPotential("mlff", ...)``: :class:`MLFFPotentialImpl`.

Created by :class:`mlff.calculators.openmmml_entry.MLFFPotentialImplFactory` (the entry point of
group ``openmmml.potentials``), which lists the constructor's keyword arguments. Forces are added
through :func:`mlff.calculators.openmm.build_ml_system`.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import openmm
import openmm.app
from openmmml.mlpotential import MLPotentialImpl

from mlff.calculators.openmm.system import build_ml_system
from mlff.calculators.options import check_kwargs
from mlff.io import resolve_model

#: Global parameter created by openmm-ml's interpolating mixed systems.
OPENMMML_LAMBDA = "lambda_interpolate"


class MLFFPotentialImpl(MLPotentialImpl):
    """openmm-ml implementation: adds an mlff force to a System. Created by
    :class:`mlff.calculators.openmmml_entry.MLFFPotentialImplFactory` (the entry point), which lists
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
        build_ml_system(
            self.potential, topology, system, atoms=None if atoms is None else list(atoms),
            lambda_name=lambda_name, route=self.implementation,
            device=next(self.potential.parameters()).device, force_group=forceGroup,
            use_cuda_graphs=self.useCUDAGraphs,
        )

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
