"""The openmm-ml entry point (group ``openmmml.potentials``, name ``mlff``).

openmm-ml loads every entry point of its group while ``openmmml.mlpotential`` is still being
imported, so this module must not import openmm-ml (nor anything that does). The factory
therefore implements openmm-ml's ``MLPotentialImplFactory`` interface (``createImpl``) without
subclassing it, and imports the implementation,
:class:`mlff.calculators.openmm.openmmml.MLFFPotentialImpl`, on first use.
"""

from __future__ import annotations

from mlff.calculators.options import check_kwargs


class MLFFPotentialImplFactory:
    """Creates the implementation behind ``MLPotential("mlff", ...)``.

    Keyword arguments of ``MLPotential("mlff", ...)``:

    - ``modelPath``: an mlff model file; omitted: the shipped default model.
    - ``implementation``: ``"torch"`` (TorchForce, default) or ``"python"`` (PythonForce).
    - ``device``: ``"cpu"`` or ``"cuda"`` (default: CUDA when available).
    - ``dtype``: ``"float32"``/``"float64"``; default: the model's.
    - ``useCUDAGraphs``: TorchForce's CUDA-graph property (default False).
    """

    VALID = ("modelPath", "implementation", "device", "dtype", "useCUDAGraphs")

    def createImpl(self, name: str, **args):
        """Return a :class:`mlff.calculators.openmm.openmmml.MLFFPotentialImpl` (unknown
        kwargs: ValueError)."""
        check_kwargs(args, self.VALID, f"MLPotential({name!r})")
        from mlff.calculators.openmm.openmmml import MLFFPotentialImpl

        return MLFFPotentialImpl(name, **args)
