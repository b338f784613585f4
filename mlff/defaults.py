"""Defaults shared by models, datasets, statistics and the command line (one place each)."""

#: Radial cutoff (Angstrom) of a model when its config does not give one, and of the neighbour
#: statistics of ``mlff stats``.
DEFAULT_R_CUT: float = 5.0
