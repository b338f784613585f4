"""Calibration of ensemble uncertainties: is the predicted spread a usable error estimate?

Inputs are predicted standard deviations ``sigma`` and actual errors ``error`` (prediction minus
reference) of the same quantities, e.g. force components ``[K]`` (eV/A). Following the
uncertainty-quantification literature (Tran et al. 2020, "Methods for comparing uncertainty
quantifications for material property predictions"), the predictive distribution of each value
is taken to be ``N(prediction, sigma^2)``:

- Spearman rank correlation between sigma and |error| (ranking quality; per atom and per
  structure in :func:`force_uncertainty_report`);
- miscalibration area: the mean absolute difference between the expected fraction p of errors
  inside the central p-interval ``|error| <= z_p sigma`` and the observed fraction, over p in
  (0, 1) (0 = perfectly calibrated, 0.5 = worst);
- negative log-likelihood ``mean(0.5 log(2 pi sigma^2) + error^2 / (2 sigma^2))``;
- the recalibration factor s that minimises that NLL for ``s * sigma``: ``s^2 = mean(error^2 /
  sigma^2)`` (closed form), fitted on validation data and stored in the model file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from mlff.atomic import atomic_savefig
from scipy import special, stats

#: floor on sigma (eV/A) so that identical members do not give infinite likelihoods
SIGMA_FLOOR = 1e-8


def _as_arrays(sigma, error):
    s = np.asarray(sigma, dtype=np.float64).ravel()
    e = np.asarray(error, dtype=np.float64).ravel()
    if s.shape != e.shape or s.size == 0:
        raise ValueError(f"sigma and error need the same non-zero size, got {s.shape} and {e.shape}")
    if np.any(s < 0) or not np.all(np.isfinite(s)) or not np.all(np.isfinite(e)):
        raise ValueError("sigma must be finite and >= 0 and errors finite")
    return np.maximum(s, SIGMA_FLOOR), e


def spearman(sigma, error) -> float:
    """Spearman rank correlation between sigma and |error|."""
    s, e = _as_arrays(sigma, error)
    return float(stats.spearmanr(s, np.abs(e)).statistic)


def calibration_curve(sigma, error, num_levels: int = 99):
    """Expected and observed fractions of errors within the central p-intervals.

    Returns ``(expected [L], observed [L])`` for ``expected = p`` on an even grid in (0, 1).
    """
    s, e = _as_arrays(sigma, error)
    p = np.linspace(0.0, 1.0, num_levels + 2)[1:-1]
    z = math.sqrt(2.0) * special.erfinv(p)  # half-width of the central p-interval, in sigmas
    ratio = np.abs(e) / s
    observed = (ratio[None, :] <= z[:, None]).mean(axis=1)
    return p, observed


def miscalibration_area(sigma, error, num_levels: int = 99) -> float:
    """Mean |observed - expected| over the calibration curve (0 best, 0.5 worst)."""
    expected, observed = calibration_curve(sigma, error, num_levels)
    return float(np.mean(np.abs(observed - expected)))


def gaussian_nll(sigma, error) -> float:
    """Mean negative log-likelihood of the errors under ``N(0, sigma^2)``."""
    s, e = _as_arrays(sigma, error)
    return float(np.mean(0.5 * np.log(2 * np.pi * s**2) + e**2 / (2 * s**2)))


def recalibration_factor(sigma, error) -> float:
    """The scalar s minimising the NLL of ``N(0, (s sigma)^2)``: ``sqrt(mean(error^2/sigma^2))``."""
    s, e = _as_arrays(sigma, error)
    return float(np.sqrt(np.mean((e / s) ** 2)))


def metrics(sigma, error) -> Dict[str, float]:
    """Spearman, miscalibration area, NLL and RMS(sigma)/RMS(error) of one set of values."""
    s, e = _as_arrays(sigma, error)
    return {
        "spearman": spearman(s, e),
        "miscalibration_area": miscalibration_area(s, e),
        "nll": gaussian_nll(s, e),
        "rms_sigma_over_rms_error": float(np.sqrt(np.mean(s**2)) / max(np.sqrt(np.mean(e**2)), 1e-300)),
    }


def force_uncertainty_report(
    forces_std: np.ndarray,
    force_error: np.ndarray,
    structure_index: np.ndarray,
    std_scale: float = 1.0,
) -> Dict[str, object]:
    """Calibration of ensemble force uncertainties.

    Args:
        forces_std: raw (unscaled) per-component standard deviations ``[N, 3]`` (eV/A).
        force_error: prediction minus reference ``[N, 3]`` (eV/A).
        structure_index: structure of each atom ``[N]``.
        std_scale: recalibration factor stored in the model.

    Returns per component (raw and recalibrated), per atom (norms of the std and error vectors)
    and per structure (mean per-atom std against mean per-atom error) metrics.
    """
    std = np.asarray(forces_std, dtype=np.float64)
    err = np.asarray(force_error, dtype=np.float64)
    idx = np.asarray(structure_index)
    atom_std = np.linalg.norm(std, axis=1)
    atom_err = np.linalg.norm(err, axis=1)
    counts = np.bincount(idx).astype(np.float64)
    used = counts > 0
    struct_std = np.bincount(idx, weights=atom_std)[used] / counts[used]
    struct_err = np.bincount(idx, weights=atom_err)[used] / counts[used]
    return {
        "std_scale": float(std_scale),
        "components_raw": metrics(std, err),
        "components_recalibrated": metrics(std * std_scale, err),
        "spearman_per_atom": spearman(atom_std, atom_err),
        "spearman_per_structure": spearman(struct_std, struct_err) if struct_std.size > 2 else float("nan"),
        "n_atoms": int(std.shape[0]),
        "n_structures": int(used.sum()),
    }


def plot_calibration(
    forces_std: np.ndarray,
    force_error: np.ndarray,
    path: Path,
    std_scale: float = 1.0,
    title: Optional[str] = None,
) -> None:
    """Two panels saved as PNG: the calibration curve (raw and recalibrated) and per-atom
    |error| against predicted std (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    std = np.asarray(forces_std, dtype=np.float64)
    err = np.asarray(force_error, dtype=np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    ax = axes[0]
    for scale, label in ((1.0, "raw"), (std_scale, f"recalibrated (x{std_scale:.2f})")):
        p, obs = calibration_curve(std * scale, err)
        area = float(np.mean(np.abs(obs - p)))
        ax.plot(p, obs, label=f"{label}: area {area:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("expected fraction within interval")
    ax.set_ylabel("observed fraction")
    ax.legend(fontsize=8)
    ax = axes[1]
    atom_std = np.maximum(np.linalg.norm(std, axis=1) * std_scale, SIGMA_FLOOR)
    atom_err = np.maximum(np.linalg.norm(err, axis=1), SIGMA_FLOOR)
    ax.loglog(atom_std, atom_err, ".", ms=2, alpha=0.3)
    lo, hi = float(min(atom_std.min(), atom_err.min())), float(max(atom_std.max(), atom_err.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("predicted force std per atom (eV/A)")
    ax.set_ylabel("force error per atom (eV/A)")
    ax.set_title(f"Spearman {spearman(atom_std, atom_err):.2f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path)
