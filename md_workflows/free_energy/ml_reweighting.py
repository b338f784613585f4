"""Reweighting saved solute frames to the ML end state: one-sided FEP screens and the ensemble
members' corrections (model uncertainty), without new dynamics.

In the ML/MM correction the energy difference between the end states depends on the solute's
coordinates only: w(x) = U_ML(x_solute) - c - U_MM(solute intra)(x_solute) (kJ/mol). So the
frames of any MM end-state simulation of the solute (the coupled window of the MM legs, or the
lambda = 0 window of the correction) give

- FEP: dG = -kT ln < exp(-w / kT) >_MM, with its diagnostics (the spread of w in kT, and the
  Kish effective sample size of the exponential weights);
- the members: with each member's w_m(x) the same MBAR over the correction's windows gives
  every member's correction from the samples drawn with the ensemble mean.

Energies kJ/mol; reduced quantities in kT.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mlff.units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

from .estimators import _lib

#: FEP is flagged unreliable above this spread of w (kT) ...
MAX_WORK_SPREAD_KT = 2.0
#: ... or below this Kish effective fraction of its decorrelated samples
MIN_EFFECTIVE_FRACTION = 0.1


@dataclass
class SoluteEnergies:
    """Energies of N solute frames (kJ/mol): the MM intramolecular energy ``mm`` [N], the ML
    energy of the model (member mean) ``ml`` [N] and of each member ``members`` [M, N]."""

    mm: np.ndarray
    ml: np.ndarray
    members: np.ndarray

    def work(self, offset_kj_mol: float) -> np.ndarray:
        """w = U_ML - c - U_MM [N] (kJ/mol)."""
        return self.ml - offset_kj_mol - self.mm

    def member_work(self, offset_kj_mol: float) -> np.ndarray:
        """w_m [M, N] (kJ/mol)."""
        return self.members - offset_kj_mol - self.mm[None, :]


def solute_energies(vacuum_system, numbers: Sequence[int], model, positions_nm: np.ndarray,
                    device: str = "cpu") -> SoluteEnergies:
    """Energies of solute frames ``positions_nm`` [N, A, 3] (nm).

    Args:
        vacuum_system: the solute's MM System alone (no cutoff), atoms in the frames' order;
            its energy is the solute's intramolecular MM energy.
        numbers: [A] atomic numbers. model: model file, ``"default"`` or a Potential.
    """
    import openmm

    frames = np.asarray(positions_nm, dtype=float).reshape(-1, len(numbers), 3)
    context = openmm.Context(vacuum_system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName("Reference"))
    mm = np.empty(len(frames))
    for n, x in enumerate(frames):
        context.setPositions(x)
        mm[n] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            openmm.unit.kilojoule_per_mole)
    members = member_energies(numbers, model, frames, device)
    return SoluteEnergies(mm, members.mean(axis=0), members)


def member_energies(numbers: Sequence[int], model, positions_nm: np.ndarray,
                    device: str = "cpu") -> np.ndarray:
    """Every ensemble member's energy [M, N] (kJ/mol) of N frames ``positions_nm`` [N, A, 3]
    (nm) of one isolated molecule (atomic numbers ``numbers`` [A]; model file, ``"default"``
    or a Potential)."""
    import torch
    from ase import Atoms

    from mlff.graph import atoms_to_graph
    from mlff.io import resolve_model

    frames = np.asarray(positions_nm, dtype=float).reshape(-1, len(numbers), 3)
    potential = resolve_model(model, device)
    members = np.empty((potential.num_members, len(frames)))
    with torch.no_grad():
        for n, x in enumerate(frames):
            graph = atoms_to_graph(Atoms(numbers=list(numbers), positions=x * NM_TO_ANGSTROM),
                                   potential.r_cut, potential.elements)
            graph = {k: v.to(device) if hasattr(v, "to") else v for k, v in graph.items()}
            out = potential(graph, False, False)
            members[:, n] = out["member_energy"][:, 0].double().cpu().numpy() * EV_TO_KJ_PER_MOL
    return members


def _decorrelated(w: np.ndarray) -> np.ndarray:
    """Indices of decorrelated samples of the series ``w`` (pymbar's statistical inefficiency)."""
    _lib()
    from pymbar import timeseries

    if len(w) < 3 or np.ptp(w) == 0:
        return np.arange(len(w))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(timeseries.subsample_correlated_data(w), dtype=int)


def fep_screen(work_kj_mol: np.ndarray, kT_kj_mol: float) -> dict:
    """One-sided exponential averaging from the MM end state to the ML one.

    Args:
        work_kj_mol: [N] w of consecutive MM end-state samples (decorrelated here).

    Returns:
        dict with ``dG_kT``, ``dG_err_kT``, ``n_samples`` (decorrelated), ``work_std_kT``,
        ``effective_fraction`` (Kish ESS / n of the weights exp(-w/kT)) and ``warning`` (None
        when both diagnostics pass).
    """
    w = np.asarray(work_kj_mol, dtype=float) / kT_kj_mol
    w = w[_decorrelated(w)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = _lib().other_estimators.exp(w)
    weights = np.exp(-(w - w.min()))
    ess = float(weights.sum() ** 2 / (weights ** 2).sum())
    out = {"dG_kT": float(r["Delta_f"]), "dG_err_kT": float(r["dDelta_f"]),
           "n_samples": int(len(w)), "work_std_kT": float(np.std(w, ddof=1)) if len(w) > 1 else 0.0,
           "effective_fraction": ess / len(w), "warning": None}
    problems = []
    if out["work_std_kT"] > MAX_WORK_SPREAD_KT:
        problems.append(f"the MM->ML energy difference spreads {out['work_std_kT']:.1f} kT "
                        f"(> {MAX_WORK_SPREAD_KT:g})")
    if out["effective_fraction"] < MIN_EFFECTIVE_FRACTION:
        problems.append(f"{ess:.1f} of {len(w)} samples carry the weight")
    if problems:
        out["warning"] = ("poor overlap, the FEP estimate is unreliable: " + "; ".join(problems)
                          + "; use the MBAR/TI windows")
    return out


def member_corrections(u_kln: list[np.ndarray], member_delta_kT: list[np.ndarray],
                       indices: list[np.ndarray]) -> np.ndarray:
    """Every ensemble member's correction (first window -> last window with member m), kT [M].

    Args:
        u_kln: K arrays [K, n_k] of the correction's windows (the last state is lambda = 1 with
            the ensemble mean).
        member_delta_kT: K arrays [M, n_k]: (U_ML,m - U_ML,mean) / kT of the same samples.
        indices: K arrays of the decorrelated samples to use (``FreeEnergyResult.sample_indices``).

    Member m's end state is sampled by nobody; MBAR (pymbar) gives its free energy from all
    windows' samples with N_k = 0 for it: u_m(x) = u_last(x) + delta_m(x).
    """
    _lib()
    from pymbar import MBAR

    k = len(u_kln)
    m = member_delta_kT[0].shape[0]
    blocks = []
    for i in range(k):
        keep = indices[i]
        u = np.asarray(u_kln[i], dtype=float)[:, keep]
        extra = u[-1][None, :] + np.asarray(member_delta_kT[i], dtype=float)[:, keep]
        blocks.append(np.vstack([u, extra]))
    u_kn = np.hstack(blocks)
    n_k = np.array([len(i) for i in indices] + [0] * m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = MBAR(u_kn, n_k, solver_protocol="robust").compute_free_energy_differences(
            compute_uncertainty=False)["Delta_f"]
    return np.asarray(f[0, k:], dtype=float)
