"""PNG plots of a leg's analysis, drawn by ``alchemlyb.visualisation``: the MBAR overlap matrix,
the forward/reverse convergence and <dU/dlambda> per window (free energies in kcal/mol)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff.units import KB_KJ_PER_MOL_PER_K, KJ_PER_KCAL

from .estimators import MIN_NEIGHBOUR_OVERLAP, FreeEnergyResult, _lib


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _visualisation():
    """alchemlyb.visualisation (imports pyplot: after the Agg backend is chosen)."""
    _pyplot()
    _lib()  # pymbar's banner off, alchemlyb's log off
    from alchemlyb import visualisation

    return visualisation


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_overlap(result: FreeEnergyResult, path: str | Path, title: str = "") -> Path:
    """MBAR overlap matrix [K, K] with values; adjacent windows below 0.03 are framed red."""
    from matplotlib.patches import Rectangle

    plt, vis = _pyplot(), _visualisation()
    k = len(result.overlap)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2, 0.45 * k + 1.5))
    vis.plot_mbar_overlap_matrix(np.asarray(result.overlap), ax=ax)
    for i in range(k - 1):  # alchemlyb draws row i, column j at x = j, y = k - i - 1
        if result.overlap[i, i + 1] < MIN_NEIGHBOUR_OVERLAP:
            ax.add_patch(Rectangle((i + 1, k - i - 1), 1, 1, fill=False, ec="red", lw=1.5))
    ax.set_title(f"{title} overlap (min neighbour {result.min_neighbour_overlap:.2f})", fontsize=9)
    return _save(fig, path)


def plot_convergence(result: FreeEnergyResult, path: str | Path, kT_kcal_mol: float,
                     title: str = "") -> Path:
    """MBAR estimate (kcal/mol) from growing fractions of the decorrelated samples, forward
    and reverse (alchemlyb's forward_backward_convergence); a note when there is none."""
    plt, vis = _pyplot(), _visualisation()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    table = result.convergence
    if table is not None and len(table):
        energies = ["Forward", "Forward_Error", "Backward", "Backward_Error"]
        table = table.copy()
        table[energies] = table[energies] * kT_kcal_mol
        table.attrs = {"energy_unit": "kcal/mol"}
        vis.plot_convergence(table, ax=ax)  # data already in kcal/mol: no unit conversion
        ax.set_xlabel("fraction of decorrelated samples", fontsize=9)
        ax.set_ylabel("dG (kcal/mol)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "too few decorrelated samples\nfor a convergence curve",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{title} convergence", fontsize=9)
    return _save(fig, path)


def plot_dudl(result: FreeEnergyResult, names: list[str], path: str | Path, kT_kcal_mol: float,
              title: str = "") -> Path:
    """<dU/dlambda_p> per window (kcal/mol) along each changing parameter (alchemlyb's
    plot_ti_dhdl; each parameter's stretch spans one unit on the x axis, lambda ascending).

    Args:
        names: the P parameter names (the columns of ``lambdas`` given to ``analyze``).
    """
    plt, vis = _pyplot(), _visualisation()
    fig, ax = plt.subplots(figsize=(8, 5))
    frames = result.ti_dhdl or {}
    if frames:
        # alchemlyb converts through kT, which needs the temperature these kcal/mol belong to
        temperature_K = kT_kcal_mol * KJ_PER_KCAL / KB_KJ_PER_MOL_PER_K
        fits = []
        for frame in frames.values():
            scaled = frame * kT_kcal_mol
            scaled.attrs = {"energy_unit": "kcal/mol", "temperature": temperature_K}
            fits.append(_lib().TI().fit(scaled))
        vis.plot_ti_dhdl(fits, labels=[names[p] for p in frames], units="kcal/mol", ax=ax)
        ax.set_ylabel("<dU/dlambda> (kcal/mol)", fontsize=9)
    ax.set_title(f"{title} dU/dlambda", fontsize=9)
    return _save(fig, path)
