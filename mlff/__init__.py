"""mlff: equivariant machine-learned interatomic potentials.

The ``mlff`` package is pure PyTorch (plus ASE for IO): it knows nothing of ASE calculators or
OpenMM. Units inside are eV, Angstrom, amu and fs (see :mod:`mlff.units`).

Importing it does nothing else (no torch import, no process settings): glibc's malloc is tuned
when the first model is built or loaded (see :mod:`mlff.allocator`; ``MLFF_MALLOC_TUNING=0``
opts out).
"""

__version__ = "0.1.0"
