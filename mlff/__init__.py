"""mlff: equivariant machine-learned interatomic potentials.

The ``mlff`` package is pure PyTorch (plus ASE for IO): it knows nothing of ASE calculators or
OpenMM. Units inside are eV, Angstrom, amu and fs (see :mod:`mlff.units`).
"""

__version__ = "0.1.0"
