"""Alchemical decoupling of a solute (openmmtools' AbsoluteAlchemicalFactory) and the schedule.

The protocol: the solute's charges are annihilated first (``lambda_electrostatics`` 1 -> 0,
which also removes its intramolecular electrostatics, hence the vacuum leg), then its
Lennard-Jones interactions with everything else are decoupled through a softcore potential
(``lambda_sterics`` 1 -> 0; intramolecular Lennard-Jones stays). PME is treated exactly for
the alchemical charges. The dispersion (long-range) correction stays on and openmmtools
scales the solute's part with ``lambda_sterics``, so every state has a consistent correction.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Sequence

ELECTROSTATICS = "lambda_electrostatics"
STERICS = "lambda_sterics"
DEFAULT_ELECTROSTATICS_WINDOWS = (1.0, 0.75, 0.5, 0.25, 0.0)
DEFAULT_STERICS_WINDOWS = (1.0, 0.85, 0.7, 0.55, 0.4, 0.3, 0.2, 0.1, 0.0)


@dataclass(frozen=True)
class LambdaSchedule:
    """Windows of the decoupling path: charges off (sterics on), then sterics off (charges off).

    Both sequences run from 1 (coupled) to 0 (decoupled); the state where charges are off and
    sterics still on is shared, so there are len(electrostatics) + len(sterics) - 1 states.
    """

    electrostatics: tuple[float, ...] = DEFAULT_ELECTROSTATICS_WINDOWS
    sterics: tuple[float, ...] = DEFAULT_STERICS_WINDOWS

    def __post_init__(self):
        for name in ("electrostatics", "sterics"):
            values = tuple(float(v) for v in getattr(self, name))
            object.__setattr__(self, name, values)
            if len(values) < 2 or values[0] != 1.0 or values[-1] != 0.0:
                raise ValueError(f"{name} windows must run from 1.0 to 0.0 with at least two "
                                 f"values, got {list(values)}")
            if any(b >= a for a, b in zip(values, values[1:])):
                raise ValueError(f"{name} windows must decrease strictly, got {list(values)}")

    def states(self, include_sterics: bool = True) -> list[dict[str, float]]:
        """Global parameter values of every window, coupled state first."""
        out = [{ELECTROSTATICS: e, STERICS: 1.0} for e in self.electrostatics]
        if include_sterics:
            out += [{ELECTROSTATICS: 0.0, STERICS: s} for s in self.sterics[1:]]
        return out


def _openmmtools_alchemy():
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from openmmtools import alchemy
    return alchemy


def alchemical_system(system, solute_atoms: Sequence[int]):
    """A copy of ``system`` in which ``solute_atoms`` can be decoupled.

    Returns an openmm.System with the global parameters ``lambda_electrostatics`` and
    ``lambda_sterics`` (both 1 = fully interacting). Vacuum (NoCutoff) and PME systems both work.
    """
    if len(solute_atoms) == 0:
        raise ValueError("no solute atoms to decouple: pass the ligand's atom indices")
    n = system.getNumParticles()
    bad = [i for i in solute_atoms if not 0 <= int(i) < n]
    if bad:
        raise ValueError(f"solute atom indices {bad[:5]} are outside the system's {n} particles")
    alchemy = _openmmtools_alchemy()
    factory = alchemy.AbsoluteAlchemicalFactory(alchemical_pme_treatment="exact",
                                                disable_alchemical_dispersion_correction=False)
    region = alchemy.AlchemicalRegion(alchemical_atoms=[int(i) for i in solute_atoms],
                                      annihilate_electrostatics=True, annihilate_sterics=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory.create_alchemical_system(system, region)
