"""What a window records per sample: the reduced potential at every state and dU/dlambda.

- :func:`state_energies`: the general route, one energy evaluation per state (the context's
  global parameters set to each state in turn), dU/dlambda_p from the forces' declared
  parameter derivatives (``analytic``) or central finite differences in each TI parameter.
- :class:`ATMEnergies`: an alchemical-transfer leg (:mod:`.rbfe`), where the states differ
  only in the ATMForce's alchemical potential: one evaluation gives the ATMForce's (u0, u1),
  and the reduced potential at every state and dU/ds follow exactly from them (K times fewer
  force evaluations, which matters when the ligands are ML).
- :func:`window_energy_function` picks one for a leg.
"""
from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from .rbfe.atm_system import perturbation_energies
from .rbfe.schedule import ATMState, SoftCore, path_derivative, reduced_energies


def state_energies(context, states, kT, current: dict[str, float], ti_parameters: list[str], fd_step: float,
                   analytic: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Reduced potential at every state [K] and dU/dlambda / kT [P] (the forces' declared
    derivatives with ``analytic``, else central finite differences)."""
    import openmm

    def energy(params: dict[str, float]) -> float:
        for name, value in params.items():
            context.setParameter(name, value)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            openmm.unit.kilojoule_per_mole)

    u = np.array([energy(s) for s in states]) / kT
    dudl = np.zeros(len(ti_parameters))
    if analytic:
        for name, value in current.items():
            context.setParameter(name, value)
        derivatives = context.getState(getParameterDerivatives=True).getEnergyParameterDerivatives()
        return u, np.array([derivatives[p] for p in ti_parameters]) / kT
    for j, p in enumerate(ti_parameters):
        lo = max(0.0, current[p] - fd_step)
        hi = min(1.0, current[p] + fd_step)
        e_hi = energy({**current, p: hi})
        e_lo = energy({**current, p: lo})
        dudl[j] = (e_hi - e_lo) / (hi - lo) / kT
    for name, value in current.items():  # back to the sampled state
        context.setParameter(name, value)
    return u, dudl


class ATMEnergies:
    """Per-sample energies of an ATM leg (``spec``: ``{"states": [ATMState dicts], "soft":
    SoftCore dict}``, in path order) from the ATMForce of ``system``: call with the context
    and the sampled state's index; returns (u [K] / kT, [dU/ds] / kT)."""

    def __init__(self, system, spec: dict, kT: float):
        found = [f for f in system.getForces() if type(f).__name__ == "ATMForce"]
        if len(found) != 1:
            raise ValueError(f"an ATM leg needs exactly one ATMForce in its system, found {len(found)}")
        self.atm = found[0]
        self.states = [ATMState(**s) for s in spec["states"]]
        defaults = {self.atm.getGlobalParameterName(j): self.atm.getGlobalParameterDefaultValue(j)
                    for j in range(self.atm.getNumGlobalParameters())}
        self.soft = SoftCore(defaults["Umax"], defaults["Ubcore"], defaults["Acore"])  # what the force applies
        if SoftCore(**spec["soft"]) != self.soft:
            raise ValueError(f"the ATM leg's soft core {spec['soft']} differs from its ATMForce's {self.soft}")
        self.kT = kT

    def __call__(self, context, k: int) -> Tuple[np.ndarray, np.ndarray]:
        u0, u1 = perturbation_energies(self.atm, context)
        u = reduced_energies(np.array([u0]), np.array([u1]), self.states, self.kT, self.soft)[:, 0]
        return u, np.atleast_1d(path_derivative(u0, u1, self.states[k], self.soft)) / self.kT


def window_energy_function(leg: dict, system, k: int, kT: float, fd_step: float) -> Callable[[object], tuple]:
    """``f(context) -> (u [K], dudl [P])`` for window ``k`` of ``leg`` (a leg.json dict)."""
    current = {name: float(v) for name, v in leg["states"][k].items()}
    if leg.get("atm") is not None:
        atm = ATMEnergies(system, leg["atm"], kT)
        return lambda context: atm(context, k)
    analytic = bool(leg.get("analytic_derivatives", False))
    return lambda context: state_energies(context, leg["states"], kT, current, leg["ti_parameters"], fd_step,
                                          analytic)
