"""How frames are labelled (:class:`LabelSettings`): a light module, standard library only.

:mod:`mlff.data.label` does the labelling; the command line reads the defaults from here
without importing numpy or ASE.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Methods that tblite runs.
METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


@dataclass(frozen=True)
class LabelSettings:
    """How frames are labelled. Keys name where results are stored in the output extxyz.

    ``electronic_temperature`` is the Fermi smearing temperature in K.
    """

    method: str = "GFN2-xTB"
    accuracy: float = 1.0
    electronic_temperature: float = 300.0
    max_iterations: int = 250
    energy_key: str = "energy_xtb"
    forces_key: str = "forces_xtb"
    stress_key: str = "stress_xtb"
    #: Mulliken charges (e) per atom, and the dipole (e A) of aperiodic frames
    charges_key: str = "charges_xtb"
    dipole_key: str = "dipole_xtb"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown labelling method {self.method!r}; valid methods: {METHODS}")
        if not self.accuracy > 0:
            raise ValueError(f"accuracy must be positive, got {self.accuracy}")
