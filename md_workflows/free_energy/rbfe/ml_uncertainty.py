"""The model error of an ATM edge with ML ligands: every ensemble member's ddG from the same
samples.

The windows sample with the ensemble mean's energy of each ligand. Member m changes every
state's energy by the same delta_m(x) = sum over the two ligands of (U_m - U_mean)(x), so its
end states A-bound and B-bound are u_0 + delta_m and u_last + delta_m, states nobody sampled:
MBAR over all windows' samples gives their free energies (N_k = 0 for them), and ddG_m =
f(B-bound, m) - f(A-bound, m). The model error is the members' spread (standard deviation,
ddof 0: the hydration corrections' convention). Energies kJ/mol; reduced in kT.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Sequence

import numpy as np

from ..estimators import _lib
from ..ml_reweighting import member_energies
from ..sampling_settings import MOLAR_GAS_CONSTANT_KJ


def member_ddG_kT(u_kln: List[np.ndarray], member_delta_kT: List[np.ndarray],
                  indices: List[np.ndarray]) -> np.ndarray:
    """ddG(A -> B) of every member (kT) [M].

    Args:
        u_kln: K arrays [K, n_k] (the ATM path, first state A bound, last B bound).
        member_delta_kT: K arrays [M, n_k]: delta_m / kT of the same samples.
        indices: K arrays of the decorrelated samples to use (``FreeEnergyResult.sample_indices``).
    """
    _lib()
    from pymbar import MBAR

    k = len(u_kln)
    m = member_delta_kT[0].shape[0]
    blocks = []
    for i in range(k):
        keep = np.asarray(indices[i], dtype=int)
        u = np.asarray(u_kln[i], dtype=float)[:, keep]
        delta = np.asarray(member_delta_kT[i], dtype=float)[:, keep]
        ends = np.empty((2 * m, len(keep)))
        ends[0::2], ends[1::2] = u[0][None] + delta, u[-1][None] + delta
        blocks.append(np.vstack([u, ends]))
    n_k = np.array([len(i) for i in indices] + [0] * (2 * m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = MBAR(np.hstack(blocks), n_k, solver_protocol="robust").compute_free_energy_differences(
            compute_uncertainty=False)["Delta_f"][0]
    return np.asarray(f[k + 1::2] - f[k::2], dtype=float)


def member_ddG(leg_dir: Path, ml: dict, ligands: Sequence[Sequence[int]], kT_kcal_mol: float) -> dict:
    """``members_ddG`` (kcal/mol) and ``model_error`` of a finished ATM leg with ML ligands
    (``ml``: the leg's recipe; ``ligands``: each ligand's atom indices in the complex, which
    the leg saved with every sample, in this order). ``model_error`` is None for one model."""
    from ..sampling import load_leg
    from .leg import analyze_atm_leg

    samples = load_leg(leg_dir)
    if samples.positions_nm is None:
        raise ValueError(f"{leg_dir} saved no ligand frames: the members cannot be reweighted")
    by_atom = dict(zip(ml["atoms"], ml["numbers"]))
    kT_kj = samples.temperature_K * MOLAR_GAS_CONSTANT_KJ
    deltas = []
    for frames in samples.positions_nm:
        delta = 0.0
        start = 0
        for group in ligands:
            energies = member_energies([by_atom[a] for a in group], ml["model"], frames[:, start:start + len(group)])
            delta = delta + (energies - energies.mean(axis=0))
            start += len(group)
        deltas.append(np.atleast_2d(delta) / kT_kj)
    if deltas[0].shape[0] < 2:
        return {"members_ddG": None, "model_error": None}
    indices = analyze_atm_leg(leg_dir).path.sample_indices
    members = member_ddG_kT(samples.u_kln, deltas, indices) * kT_kcal_mol
    return {"members_ddG": members.tolist(), "model_error": float(np.std(members))}

