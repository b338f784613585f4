"""The openmm-ml entry point (group ``openmmml.potentials``, name ``mlff``).

openmm-ml loads every entry point of its group while ``openmmml.mlpotential`` is still being
imported, so the entry point's module must not import openmm-ml itself (importing
:mod:`calculators.openmm` first would otherwise find this module half-initialised). The factory
therefore implements openmm-ml's ``MLPotentialImplFactory`` interface (``createImpl``) without
subclassing it, and loads the implementation, :class:`calculators.openmm.MLFFPotentialImpl`,
on first use.
"""

from __future__ import annotations

from typing import Dict, Sequence


def check_kwargs(given: Dict[str, object], valid: Sequence[str], where: str) -> None:
    """Raise ValueError naming unknown keyword arguments and listing the valid ones."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown keyword argument(s) {unknown}; valid: {sorted(valid)}")


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
        """Return a :class:`calculators.openmm.MLFFPotentialImpl` (unknown kwargs: ValueError)."""
        check_kwargs(args, self.VALID, f"MLPotential({name!r})")
        from calculators.openmm import MLFFPotentialImpl

        return MLFFPotentialImpl(name, **args)
