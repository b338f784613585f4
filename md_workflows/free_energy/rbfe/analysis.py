"""Free energies of an ATM run from what its windows store per sample.

The sampler (:class:`..window_energies.ATMEnergies`) turns each sample's unperturbed and
displaced energies ``(u0, u1)`` of the forces inside the ATMForce into its reduced energy at
every state (:func:`~.schedule.reduced_energies`: MBAR, BAR, EXP) and, on the linear
schedule, dU/ds (:func:`~.schedule.path_derivative`: TI, analytic). The states form one path from ligand A
bound (s = 0) through the intermediate (s = 1/2) to ligand B bound (s = 1), so

    ddG(A -> B) = G(s = 1) - G(s = 0) = dG(leg 1) - dG(leg 2),

the relative binding free energy of B against A (negative: B binds better), with the legs'
own dG read off the MBAR free energy of the intermediate. The estimators (equilibration,
decorrelation, MBAR/BAR/EXP/TI, overlap, convergence) are the hydration engine's,
:mod:`..estimators`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..estimators import FreeEnergyResult, analyze


@dataclass
class RelativeBindingResult:
    """ddG(A -> B) (kT) by every estimator over the whole path, and each leg's MBAR dG (kT):
    leg 1 = G(intermediate) - G(A bound), leg 2 = G(intermediate) - G(B bound)."""

    path: FreeEnergyResult
    intermediate: int
    leg1_kT: Tuple[float, float]
    leg2_kT: Tuple[float, float]

    @property
    def ddG_kT(self) -> float:
        return self.path.estimates["MBAR"].value

    @property
    def ddG_err_kT(self) -> float:
        return self.path.estimates["MBAR"].error

    def to_dict(self, kT_kcal_mol: float) -> dict:
        return {"ddG_kcal_mol": self.ddG_kT * kT_kcal_mol, "ddG_err_kcal_mol": self.ddG_err_kT * kT_kcal_mol,
                "estimators": {name: e.to_dict(kT_kcal_mol) for name, e in self.path.estimates.items()},
                "leg1_kcal_mol": [x * kT_kcal_mol for x in self.leg1_kT],
                "leg2_kcal_mol": [x * kT_kcal_mol for x in self.leg2_kT],
                "min_neighbour_overlap": self.path.min_neighbour_overlap}


def relative_binding_arrays(u_kln, dudl, s: np.ndarray, detect_equilibration: bool = True) -> RelativeBindingResult:
    """ddG(A -> B) and both legs from the per-window arrays (``u_kln`` K arrays [K, N_k] and
    ``dudl`` K arrays [N_k, 1], kT; ``s`` [K, 1] the path coordinates), as the sampler stores."""
    s = np.asarray(s, dtype=float).reshape(-1, 1)
    path = analyze(u_kln, dudl, s if dudl is not None else None, detect_equilibration)
    middle = int(np.argmin(np.abs(s[:, 0] - 0.5)))
    f, df = path.mbar_f_k, path.mbar_df_k
    leg1 = (float(f[middle]), float(df[middle]))
    # df is relative to state 0; the sum in quadrature bounds the leg's error from above
    leg2 = (float(f[middle] - f[-1]), float(np.hypot(df[middle], df[-1])))
    return RelativeBindingResult(path, middle, leg1, leg2)
