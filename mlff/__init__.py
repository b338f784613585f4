"""mlff: equivariant machine-learned interatomic potentials.

The ``mlff`` package is pure PyTorch (plus ASE for IO): it knows nothing of ASE calculators or
OpenMM. Units inside are eV, Angstrom, amu and fs (see :mod:`mlff.units`).

Importing it raises glibc's malloc thresholds so that large CPU tensors are reused instead of
page-faulted in on every call (see :mod:`mlff.allocator`; ``MLFF_MALLOC_TUNING=0`` opts out).
"""

from mlff.allocator import tune_glibc_malloc as _tune_glibc_malloc

__version__ = "0.1.0"

_tune_glibc_malloc()
