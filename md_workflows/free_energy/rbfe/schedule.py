"""The alchemical states of the alchemical transfer method (ATM) and its alchemical potential.

OpenMM's ``ATMForce`` evaluates the forces it holds twice: at the system's coordinates (energy
``u0``) and with the ligands displaced (``u1``: the bound ligand moved to the solvent and the
solvent ligand into the site), and applies the softplus alchemical potential of Azimi et al.
(J. Chem. Inf. Model. 62, 309 (2022)) to them:

    W = select(Direction > 0, u0, u1) + (Lambda2 - Lambda1) / Alpha * ln(1 + exp(-Alpha (usc - Uh)))
        + Lambda2 usc + W0,
    u = Direction (u1 - u0),  usc = u below Ubcore, else the soft-core map of u onto [Ubcore, Umax).

A relative binding free energy runs in two legs that meet at lambda = 1/2 (the state halfway
between both ligands bound): leg 1 from ligand A in the site (Direction +1, lambda 0 -> 1/2),
leg 2 from ligand B in the site (Direction -1, lambda 0 -> 1/2 in its own direction). Both
start from the same coordinates (A in the site, B in the solvent): the swap is in the
potential, not in the positions. Here the two legs are one path, s = lambda on leg 1 and
s = 1 - lambda on leg 2, through a single intermediate state at s = 1/2 (the two legs'
lambda = 1/2 states are the same Hamiltonian), so that ddG(A -> B) is the free energy from
the first state (s = 0, A bound) to the last (s = 1, B bound), and dU/ds is the soft-core
perturbation energy with the sign of the leg (TI along s).

:func:`alchemical_potential` is the same function in numpy, so that the reduced energy of every
sample at every state comes from the (u0, u1) stored per sample, without re-evaluating forces:
that is what MBAR over the ATM states needs. Energies in kJ/mol (OpenMM's units).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Sequence

import numpy as np

from mlff.units import KJ_PER_KCAL

#: soft-core defaults of AToM-OpenMM's RBFE protocol (kJ/mol): 200, 100 kcal/mol and 1/16
UMAX_KJ = 200.0 * KJ_PER_KCAL
UBCORE_KJ = 100.0 * KJ_PER_KCAL
ACORE = 0.0625


@dataclass(frozen=True)
class SoftCore:
    """ATM's soft-core perturbation energy: ``u`` above ``ubcore`` is mapped smoothly below
    ``umax`` (kJ/mol), with shape ``acore`` (dimensionless); it caps the force of clashes
    between a displaced ligand and its new surroundings."""

    umax: float = UMAX_KJ
    ubcore: float = UBCORE_KJ
    acore: float = ACORE

    def __post_init__(self) -> None:
        if not self.umax > self.ubcore:
            raise ValueError(f"soft core: umax ({self.umax}) must exceed ubcore ({self.ubcore}) kJ/mol")
        if not self.acore > 0:
            raise ValueError(f"soft core: acore must be positive, got {self.acore}")


@dataclass(frozen=True)
class ATMState:
    """One alchemical state: the ATMForce's global parameters (``alpha`` in (kJ/mol)^-1,
    ``uh`` and ``w0`` in kJ/mol, ``direction`` +1 or -1), its ``leg`` (1 or 2; the shared
    intermediate counts as leg 1) and its path coordinate ``s`` in [0, 1]."""

    lambda1: float
    lambda2: float
    alpha: float = 0.0
    uh: float = 0.0
    w0: float = 0.0
    direction: int = 1
    leg: int = 1
    s: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"ATM direction must be 1 or -1, got {self.direction}")
        if not (0.0 <= self.lambda1 <= 1.0 and 0.0 <= self.lambda2 <= 1.0):
            raise ValueError(f"ATM lambda1, lambda2 must lie in [0, 1], got {self.lambda1}, {self.lambda2}")
        if self.lambda1 != self.lambda2 and not self.alpha > 0:
            raise ValueError("ATM states with lambda1 != lambda2 need alpha > 0 (the softplus width)")

    def parameters(self) -> dict:
        """The ATMForce global parameters by OpenMM's names (``Lambda1``, ..., ``Direction``)."""
        return {"Lambda1": self.lambda1, "Lambda2": self.lambda2, "Alpha": self.alpha, "Uh": self.uh,
                "W0": self.w0, "Direction": float(self.direction)}

    def as_dict(self) -> dict:
        return asdict(self)


def linear_schedule(states_per_leg: int = 11) -> List[ATMState]:
    """AToM-OpenMM's RBFE schedule, lambda1 = lambda2 = lambda evenly from 0 to 1/2 in each leg,
    as one path: leg 1 (Direction +1) up to the intermediate, then leg 2 (Direction -1) from
    lambda 1/2 back to 0; ``2 states_per_leg - 1`` states (21 by default: s = 0, 0.05, ..., 1)."""
    if states_per_leg < 2:
        raise ValueError(f"an ATM leg needs at least 2 states, got {states_per_leg}")
    lambdas = np.linspace(0.0, 0.5, states_per_leg)
    leg1 = [ATMState(float(x), float(x), direction=1, leg=1, s=float(x)) for x in lambdas]
    leg2 = [ATMState(float(x), float(x), direction=-1, leg=2, s=float(1.0 - x)) for x in lambdas[-2::-1]]
    return leg1 + leg2


def soft_core(u: np.ndarray, soft: SoftCore) -> np.ndarray:
    """OpenMM's soft-core map of the perturbation energy (kJ/mol): identity below ``ubcore``."""
    u = np.asarray(u, dtype=np.float64)
    y = np.maximum(u - soft.ubcore, 0.0) / (soft.umax - soft.ubcore)
    z = 1.0 + 2.0 * (y / soft.acore) + 2.0 * (y / soft.acore) ** 2
    fsc = (z ** soft.acore - 1.0) / (z ** soft.acore + 1.0)
    return np.where(u >= soft.ubcore, (soft.umax - soft.ubcore) * fsc + soft.ubcore, u)


def alchemical_potential(u0: np.ndarray, u1: np.ndarray, state: ATMState, soft: SoftCore = SoftCore()) -> np.ndarray:
    """The ATMForce energy (kJ/mol) of samples with unperturbed / displaced energies ``u0``,
    ``u1`` (kJ/mol, any shape) in ``state``: the same expression as OpenMM's default."""
    u0 = np.asarray(u0, dtype=np.float64)
    u1 = np.asarray(u1, dtype=np.float64)
    usc = soft_core(state.direction * (u1 - u0), soft)
    base = u0 if state.direction > 0 else u1
    softplus = 0.0
    if state.lambda2 != state.lambda1:
        softplus = (state.lambda2 - state.lambda1) / state.alpha * np.logaddexp(0.0, -state.alpha * (usc - state.uh))
    return base + softplus + state.lambda2 * usc + state.w0


def reduced_energies(u0: np.ndarray, u1: np.ndarray, states: Sequence[ATMState], kT_kj: float,
                     soft: SoftCore = SoftCore()) -> np.ndarray:
    """``[K, N]`` reduced potentials u_k(x_n) = W_k(u0_n, u1_n) / kT of N samples at K states.

    Only the ATMForce's energy differs between ATM states (everything else in the system is the
    same Hamiltonian), so this is exact for MBAR, where only differences between states count.
    """
    return np.stack([alchemical_potential(u0, u1, s, soft) for s in states]) / kT_kj


def path_derivative(u0: np.ndarray, u1: np.ndarray, state: ATMState, soft: SoftCore = SoftCore()) -> np.ndarray:
    """dW/ds (kJ/mol) on the linear schedule: +usc on leg 1 (s = lambda), -usc on leg 2
    (s = 1 - lambda), usc the soft-core perturbation energy in the state's direction."""
    if state.lambda1 != state.lambda2:
        raise ValueError("dW/ds is defined here for the linear schedule (lambda1 = lambda2)")
    usc = soft_core(state.direction * (np.asarray(u1, dtype=np.float64) - np.asarray(u0, dtype=np.float64)), soft)
    return usc if state.direction > 0 else -usc
