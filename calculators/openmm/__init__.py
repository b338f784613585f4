"""The OpenMM boundary: one owner, one entry.

:func:`build_ml_system` builds an OpenMM System for an mlff model, or adds the model's force to
an existing (MM) System, for a selection of atoms (ML/MM), periodic or not, optionally scaled by
a lambda parameter with dU/dlambda, through either route:

``route="torch"`` (default)
    an ``openmmtorch.TorchForce`` around a TorchScript module
    (:mod:`~mlff.calculators.openmm.torch_force`); CUDA included.
``route="python"``
    an ``openmm.PythonForce`` calling eager PyTorch
    (:mod:`~mlff.calculators.openmm.python_force`): for torch builds without TorchScript
    (deprecated upstream from torch 2.11) or for debugging. Same numbers.

The returned :class:`MLSystem` evaluates the *same* model instance on a State (ensemble spread
for uncertainty reporters, the unscaled ML energy = dU/dlambda)::

    ml = build_ml_system("ensemble.pt", pdb.topology)          # new System, elements' masses
    simulation = app.Simulation(pdb.topology, ml.system, integrator)
    ml.evaluate(simulation.context.getState(getPositions=True))["forces_std"]   # kJ/mol/nm

openmm-ml: ``MLPotential("mlff", modelPath=...)`` (entry point
:mod:`mlff.calculators.openmmml_entry`, implementation :mod:`~mlff.calculators.openmm.openmmml`)
works with ``createSystem`` and ``createMixedSystem(..., interpolate=True)``.

Units: nm, kJ/mol, ps and amu at this boundary; the model's Angstrom and eV inside.
Plugins: openmm-torch's platform plugins are loaded explicitly by the TorchForce builder
(:func:`~mlff.calculators.openmm.plugins.load_torch_plugins`), never as an import side effect.

Known limitation (openmm-torch 1.5 wheels with OpenMM 8.6.1 and torch 2.9): deserializing any
TorchForce from XML crashes the process, and so does a TorchForce inside a CustomCVForce (which
clones it through XML). Serializing works; a PythonForce round-trips. Mixed systems from
openmm-ml avoid the CustomCVForce (see :meth:`MLFFPotentialImpl.createMixedSystem`).
"""

from mlff.calculators.openmm.plugins import load_torch_plugins
from mlff.calculators.openmm.python_force import MLFFEvaluator, make_python_force
from mlff.calculators.openmm.selection import atomic_numbers_of
from mlff.calculators.openmm.system import ROUTES, MLSystem, build_ml_force, build_ml_system
from mlff.calculators.openmm.torch_force import MLFFTorchModule, make_torch_force, make_torch_module

__all__ = [
    "ROUTES", "MLSystem", "build_ml_system", "build_ml_force", "load_torch_plugins", "atomic_numbers_of",
    "MLFFTorchModule", "make_torch_module", "make_torch_force", "MLFFEvaluator",
    "make_python_force",
]
