"""Free energies of an ATM run from the perturbation energies stored per sample.

Each state k stores, per sample, the unperturbed and displaced energies ``(u0, u1)`` (kJ/mol)
of the forces inside the ATMForce. The reduced energy of that sample at every other state is
then :func:`~.schedule.reduced_energies` (MBAR, BAR, EXP), and on the linear schedule dU/ds
is :func:`~.schedule.path_derivative` (TI, analytic). The states form one path from ligand A
bound (s = 0) through the intermediate (s = 1/2) to ligand B bound (s = 1), so

    ddG(A -> B) = G(s = 1) - G(s = 0) = dG(leg 1) - dG(leg 2),

the relative binding free energy of B against A (negative: B binds better), with the legs'
own dG read off the MBAR free energy of the intermediate. The estimators (equilibration,
decorrelation, MBAR/BAR/EXP/TI, overlap, convergence) are the hydration engine's,
:mod:`..estimators`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Tuple

import numpy as np

from ..estimators import FreeEnergyResult, analyze
from .schedule import ATMState, SoftCore, path_derivative, reduced_energies

Samples = Mapping[int, Tuple[np.ndarray, np.ndarray]]


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


def path_arrays(samples: Samples, states: Sequence[ATMState], kT_kj: float, soft: SoftCore = SoftCore()):
    """``(u_kln, dudl, s)`` for :func:`..estimators.analyze`: u_kln K arrays [K, N_k] (kT),
    dudl K arrays [N_k, 1] (dU/ds, kT; None off the linear schedule), s [K, 1]."""
    missing = [k for k in range(len(states)) if k not in samples or len(samples[k][0]) == 0]
    if missing:
        raise ValueError(f"ATM: no samples for states {missing}; run them first")
    s = np.array([[state.s] for state in states])
    if np.any(np.diff(s[:, 0]) <= 0):
        raise ValueError("ATM states must be ordered along the path (s increasing), as linear_schedule gives")
    u_kln = [reduced_energies(samples[k][0], samples[k][1], states, kT_kj, soft) for k in range(len(states))]
    dudl = None
    if all(state.lambda1 == state.lambda2 for state in states):
        dudl = [(path_derivative(samples[k][0], samples[k][1], state, soft) / kT_kj)[:, None]
                for k, state in enumerate(states)]
    return u_kln, dudl, s


def relative_binding(samples: Samples, states: Sequence[ATMState], kT_kj: float, soft: SoftCore = SoftCore(),
                     detect_equilibration: bool = True) -> RelativeBindingResult:
    """ddG(A -> B) and both legs from the (u0, u1) samples of every state (keys index ``states``)."""
    u_kln, dudl, s = path_arrays(samples, states, kT_kj, soft)
    return relative_binding_arrays(u_kln, dudl, s, detect_equilibration)


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
