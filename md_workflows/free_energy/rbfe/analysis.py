"""Free energies of an ATM run from the perturbation energies stored per sample.

Each state k stores, per sample, the unperturbed and displaced energies ``(u0, u1)`` (kJ/mol)
of the forces inside the ATMForce. The reduced energy of that sample at any other state is
then :func:`~.schedule.reduced_energies` (MBAR, BAR, EXP), and on the linear schedule
(lambda1 = lambda2 = lambda) dU/dlambda is the soft-core perturbation energy itself (TI,
analytic). Each leg runs from its own end state to the shared intermediate at lambda = 1/2:

    ddG(A -> B) = dG(leg 1) - dG(leg 2),  error sqrt(e1^2 + e2^2),

the relative binding free energy of ligand B against ligand A (negative: B binds better).
The estimators (equilibration, decorrelation, MBAR/BAR/EXP/TI, overlap, convergence) are the
hydration engine's, :mod:`..estimators`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Tuple

import numpy as np

from ..estimators import FreeEnergyResult, analyze
from .schedule import ATMState, SoftCore, leg_states, reduced_energies, soft_core

Samples = Mapping[int, Tuple[np.ndarray, np.ndarray]]


@dataclass
class RelativeBindingResult:
    """Both legs' estimates (kT) and ddG(A -> B) = dG_leg1 - dG_leg2 by MBAR (kT)."""

    leg1: FreeEnergyResult
    leg2: FreeEnergyResult
    ddG_kT: float
    ddG_err_kT: float

    def to_dict(self, kT_kcal_mol: float) -> dict:
        out = {"ddG_kcal_mol": self.ddG_kT * kT_kcal_mol, "ddG_err_kcal_mol": self.ddG_err_kT * kT_kcal_mol}
        for name, leg in (("leg1", self.leg1), ("leg2", self.leg2)):
            out[name] = {est: e.to_dict(kT_kcal_mol) for est, e in leg.estimates.items()}
            out[name]["min_neighbour_overlap"] = leg.min_neighbour_overlap
        return out


def _is_linear(states: Sequence[ATMState]) -> bool:
    return all(s.lambda1 == s.lambda2 for s in states)


def leg_arrays(samples: Samples, states: Sequence[ATMState], leg: int, kT_kj: float,
               soft: SoftCore = SoftCore()):
    """``(u_kln, dudl, lambdas)`` of one leg for :func:`..estimators.analyze`: u_kln K arrays
    [K, N_k] (kT), dudl K arrays [N_k, 1] (kT; None off the linear schedule), lambdas [K, 1]."""
    index = leg_states(states, leg)
    if len(index) < 2:
        raise ValueError(f"ATM leg {leg} has {len(index)} states; it needs at least 2")
    missing = [k for k in index if k not in samples or len(samples[k][0]) == 0]
    if missing:
        raise ValueError(f"ATM leg {leg}: no samples for states {missing}; run them first")
    leg_list = [states[k] for k in index]
    u_kln = [reduced_energies(samples[k][0], samples[k][1], leg_list, kT_kj, soft) for k in index]
    dudl = None
    if _is_linear(leg_list):
        dudl = [(soft_core(states[k].direction * (np.asarray(samples[k][1]) - np.asarray(samples[k][0])), soft)
                 / kT_kj)[:, None] for k in index]
    lambdas = np.array([[s.lambda_] for s in leg_list])
    return u_kln, dudl, lambdas


def relative_binding(samples: Samples, states: Sequence[ATMState], kT_kj: float, soft: SoftCore = SoftCore(),
                     detect_equilibration: bool = True) -> RelativeBindingResult:
    """Both legs and ddG(A -> B) from the samples of every state (index into ``states``)."""
    legs = []
    for leg in (1, 2):
        u_kln, dudl, lambdas = leg_arrays(samples, states, leg, kT_kj, soft)
        legs.append(analyze(u_kln, dudl, lambdas if dudl is not None else None, detect_equilibration))
    e1, e2 = legs[0].estimates["MBAR"], legs[1].estimates["MBAR"]
    return RelativeBindingResult(legs[0], legs[1], e1.value - e2.value, float(np.hypot(e1.error, e2.error)))
