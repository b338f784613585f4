"""PNG plots of a leg's analysis: overlap matrix, forward/reverse convergence, dU/dlambda."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .estimators import FreeEnergyResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_overlap(result: FreeEnergyResult, path: str | Path, title: str = "") -> Path:
    """MBAR overlap matrix with values; adjacent windows below 0.03 are flagged red."""
    plt = _pyplot()
    o = result.overlap
    k = len(o)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2, 0.45 * k + 1.5))
    ax.imshow(o, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if o[i, j] >= 0.005:
                low = abs(i - j) == 1 and o[i, j] < 0.03
                ax.text(j, i, f"{o[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="red" if low else ("white" if o[i, j] > 0.5 else "black"))
    ax.set_xlabel("window")
    ax.set_ylabel("window")
    ax.set_title(f"{title} overlap (min neighbour {result.min_neighbour_overlap:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_convergence(result: FreeEnergyResult, path: str | Path, kT_kcal_mol: float,
                     title: str = "") -> Path:
    """MBAR estimate from growing fractions of the data, forward and reverse (kcal/mol)."""
    plt = _pyplot()
    c = result.convergence
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if c.get("fraction"):
        x = np.array(c["fraction"])
        for key, colour in (("forward", "C0"), ("reverse", "C1")):
            y = np.array(c[key]) * kT_kcal_mol
            e = np.array(c[key + "_err"]) * kT_kcal_mol
            ax.plot(x, y, "o-", color=colour, label=key)
            ax.fill_between(x, y - e, y + e, color=colour, alpha=0.2)
    ax.set_xlabel("fraction of decorrelated samples")
    ax.set_ylabel("dG (kcal/mol)")
    ax.set_title(f"{title} convergence", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_dudl(result: FreeEnergyResult, lambdas: np.ndarray, names: list[str], path: str | Path,
              kT_kcal_mol: float, title: str = "") -> Path:
    """<dU/dlambda> per window against each lambda parameter (kcal/mol), with standard errors."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if result.dudl_mean is not None:
        for p, name in enumerate(names):
            x = lambdas[:, p]
            moving = np.nonzero(np.abs(np.diff(x)) > 0)[0]
            if len(moving) == 0:
                continue
            seg = slice(moving[0], moving[-1] + 2)
            ax.errorbar(x[seg], result.dudl_mean[seg, p] * kT_kcal_mol,
                        yerr=result.dudl_sem[seg, p] * kT_kcal_mol, fmt="o-", capsize=2, label=name)
    ax.set_xlabel("lambda")
    ax.set_ylabel("<dU/dlambda> (kcal/mol)")
    ax.set_title(f"{title} dU/dlambda", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
