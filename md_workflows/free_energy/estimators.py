"""Free-energy estimators over alchemical windows: MBAR, BAR, EXP (both directions) and TI.

Everything here works in reduced units (kT). The input is what the sampler stores per window:

- ``u_kln`` -- a list of K arrays, array k of shape [K, N_k]: the reduced potential
  u_l(x_n) = U_l(x_n) / kT (plus p V / kT under a barostat) of the N_k samples drawn from
  window k, evaluated at every window l.
- ``dudl`` -- a list of K arrays, array k of shape [N_k, P]: dU/d(lambda_p) / kT of the same
  samples for each of the P alchemical parameters named in ``ti_parameters``.
- ``lambdas`` -- [K, P] the parameter values of the windows.

alchemlyb does the work on its u_nk / dHdl dataframes (built here from those arrays, one
level ``window`` = k in the index): equilibration detection and subsampling
(``alchemlyb.preprocessing.subsampling``), MBAR and BAR (on pymbar), TI with the trapezoid
rule and the forward/reverse convergence. What alchemlyb lacks stays here, each marked "ours":
the rule that combines several decorrelation series, the bootstrap error of BAR, EXP in both
directions and TI on a cubic spline.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline

#: adjacent windows overlapping less than this (MBAR overlap matrix) make estimates unreliable
MIN_NEIGHBOUR_OVERLAP = 0.03


@lru_cache(maxsize=None)
def _lib() -> SimpleNamespace:
    """alchemlyb and pymbar, imported without pymbar's banner on stdout (printed when JAX is
    missing) and with alchemlyb's loguru debug log switched off."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from alchemlyb import concat
        from alchemlyb.convergence import forward_backward_convergence
        from alchemlyb.estimators import BAR, MBAR, TI
        from alchemlyb.preprocessing import subsampling
        from loguru import logger
        from pymbar import other_estimators
        from pymbar.utils import BoundsError, ConvergenceError
    logger.disable("alchemlyb")
    return SimpleNamespace(concat=concat, forward_backward_convergence=forward_backward_convergence,
                           BAR=BAR, MBAR=MBAR, TI=TI, subsampling=subsampling,
                           other_estimators=other_estimators,
                           pymbar_errors=(ConvergenceError, BoundsError))


@dataclass(frozen=True)
class Estimate:
    """A free-energy difference between the first and the last window, in kT."""

    value: float
    error: float

    def to_dict(self, kT_kcal_mol: float | None = None) -> dict:
        out = {"dG_kT": self.value, "dG_err_kT": self.error}
        if kT_kcal_mol is not None:
            out.update(dG_kcal_mol=self.value * kT_kcal_mol, dG_err_kcal_mol=self.error * kT_kcal_mol)
        return out


@dataclass
class Subsampled:
    """Decorrelated samples per window (``u_kln`` K arrays [K, n_k], ``dudl`` K arrays
    [n_k, P] or None), the sample indices kept, the equilibration cut t0 (samples) and the
    statistical inefficiency g (samples after the cut per sample kept)."""

    u_kln: list[np.ndarray]
    dudl: list[np.ndarray] | None
    indices: list[np.ndarray]
    t0: list[int]
    g: list[float]

    @property
    def n_k(self) -> np.ndarray:
        return np.array([len(i) for i in self.indices], dtype=int)


@dataclass
class FreeEnergyResult:
    """All estimators for one leg (first window -> last window), in kT.

    ``overlap`` [K, K] MBAR overlap matrix; ``mbar_f_k``, ``mbar_df_k`` [K] MBAR free energies
    of every window relative to the first and their errors; ``dudl_mean``, ``dudl_sem`` [K, P]
    per-window mean dU/dlambda_p and its standard error; ``ti_dhdl`` the decorrelated dHdl
    frame (alchemlyb layout, kT) of each parameter p over the windows where it changes;
    ``convergence`` alchemlyb's forward/backward MBAR table (kT), None when not computed;
    ``sample_indices`` the K arrays of samples every estimate used (after equilibration and
    decorrelation), for reweighting the same samples to other states.
    """

    estimates: dict[str, Estimate]
    overlap: np.ndarray
    mbar_f_k: np.ndarray
    mbar_df_k: np.ndarray
    n_k: np.ndarray
    statistical_inefficiency: list[float]
    equilibration_index: list[int]
    dudl_mean: np.ndarray | None = None
    dudl_sem: np.ndarray | None = None
    ti_dhdl: dict[int, pd.DataFrame] | None = None
    convergence: pd.DataFrame | None = None
    sample_indices: list[np.ndarray] | None = None

    @property
    def min_neighbour_overlap(self) -> float:
        """Smallest overlap-matrix element between adjacent windows (0.03+ is workable)."""
        k = len(self.overlap)
        return float(min(self.overlap[i, i + 1] for i in range(k - 1))) if k > 1 else 1.0


def _validate(u_kln: list[np.ndarray]) -> int:
    k = len(u_kln)
    if k < 2:
        raise ValueError(f"need at least two windows, got {k}")
    for i, u in enumerate(u_kln):
        u = np.asarray(u)
        if u.ndim != 2 or u.shape[0] != k:
            raise ValueError(f"u_kln[{i}] must have shape [K={k}, N_k], got {u.shape}")
        if u.shape[1] < 2:
            raise ValueError(f"window {i} has {u.shape[1]} samples; sample longer")
        if not np.all(np.isfinite(u)):
            raise ValueError(f"window {i} has non-finite reduced potentials (an overlap of "
                             "atoms at some lambda?): check the softcore settings")
    return k


def _index(n: int, level: str, value: float) -> pd.MultiIndex:
    """alchemlyb's row index for n samples of one window: (time = sample number, level)."""
    return pd.MultiIndex.from_arrays([np.arange(n, dtype=float), np.full(n, value)],
                                     names=["time", level])


def u_nk_frames(u_kln: list[np.ndarray]) -> list[pd.DataFrame]:
    """One alchemlyb u_nk frame per window: [N_k, K] reduced potentials (kT), index
    (time = sample number, window = k), columns the windows 0..K-1."""
    k = len(u_kln)
    frames = []
    for i, u in enumerate(u_kln):
        u = np.asarray(u, dtype=float)
        frame = pd.DataFrame(u.T, index=_index(u.shape[1], "window", i), columns=list(range(k)))
        frame.attrs = {"energy_unit": "kT"}
        frames.append(frame)
    return frames


def subsample(u_kln: list[np.ndarray], dudl: list[np.ndarray] | None = None,
              detect_equilibration: bool = True) -> Subsampled:
    """Discard each window's equilibration and keep decorrelated samples (alchemlyb).

    The series that decide both are what the estimators average: the work values to the
    neighbouring windows (u_{k+1} - u_k and u_{k-1} - u_k: BAR and EXP) and the summed
    dU/dlambda (TI). MBAR, too, sees a sample only through the differences u_l - u_k: a
    per-sample constant cancels from its weights. The window's own u_k is not used: in solution
    it is dominated by the solvent's energy, which decorrelates several times slower than the
    solute's coupling and enters no estimate, so it would throw away good samples (alchemlyb's
    ``decorrelate_u_nk(method="dE")`` makes the same choice). The equilibration cut is the
    latest that alchemlyb's ``equilibrium_detection`` finds in those series; the samples kept
    after it are those its ``statistical_inefficiency`` keeps for the most correlated of them.
    """
    sub = _lib().subsampling
    k = _validate(u_kln)
    frames = u_nk_frames(u_kln)
    out_u, out_d, idx, t0s, gs = [], [], [], [], []
    for i, frame in enumerate(frames):
        u = np.asarray(u_kln[i], dtype=float)
        n = u.shape[1]
        series = []
        if i + 1 < k:
            series.append(u[i + 1] - u[i])
        if i > 0:
            series.append(u[i - 1] - u[i])
        if dudl is not None:
            series.append(np.asarray(dudl[i], dtype=float).sum(axis=1))
        series = [pd.Series(s, index=frame.index) for s in series if np.ptp(s) > 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = 0
            if detect_equilibration and series:
                t0 = max(_kept(sub.equilibrium_detection(frame, s))[0] for s in series)
            # ours: alchemlyb subsamples on one series; the estimators here average all of them.
            # Fewest kept = largest g; of equally many, the later ones (the larger g)
            tail = [s.iloc[t0:] for s in series if n - t0 >= 3 and np.ptp(s.iloc[t0:]) > 0]
            keep = min((_kept(sub.statistical_inefficiency(frame.iloc[t0:], s, conservative=False))
                        for s in tail), key=lambda kept: (len(kept), -kept.sum()),
                       default=np.arange(t0, n))
        if len(keep) < 2:
            keep = np.arange(t0, n)[-2:]
        idx.append(keep)
        t0s.append(int(t0))
        gs.append((n - t0) / len(keep))
        out_u.append(u[:, keep])
        if dudl is not None:
            out_d.append(np.asarray(dudl[i], dtype=float)[keep])
    return Subsampled(out_u, out_d if dudl is not None else None, idx, t0s, gs)


def _kept(frame: pd.DataFrame) -> np.ndarray:
    """Sample numbers (the ``time`` level of :func:`u_nk_frames`) left in a subsampled frame."""
    return frame.index.get_level_values("time").to_numpy().astype(int)


def mbar(u_kln: list[np.ndarray]):
    """alchemlyb's MBAR over the windows; returns (estimator, Delta_f [K,K], dDelta_f [K,K])."""
    lib = _lib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = lib.MBAR().fit(lib.concat(u_nk_frames(u_kln)))
    return est, est.delta_f_.to_numpy(), est.d_delta_f_.to_numpy()


def _bar_resampled(other, u_kln: list[np.ndarray], index: list[np.ndarray]) -> float:
    """Sum of neighbour BAR estimates on the samples ``index[k]`` of each window k."""
    total = 0.0
    for i in range(len(u_kln) - 1):
        a, b = u_kln[i][:, index[i]], u_kln[i + 1][:, index[i + 1]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = other.bar(a[i + 1] - a[i], b[i] - b[i + 1], compute_uncertainty=False)
        total += float(r["Delta_f"])
    return total


def bar(u_kln: list[np.ndarray], n_bootstrap: int = 200, seed: int = 0) -> Estimate:
    """Sum of BAR between neighbouring windows (alchemlyb's BAR).

    Neighbouring pairs share a window's samples, so their errors are correlated and adding
    the analytic variances in quadrature under-reports the total (by about 30% on the
    harmonic-oscillator tests; alchemlyb reports no error beyond neighbours for that reason).
    With ``n_bootstrap`` > 0 the error is the standard deviation of the sum over bootstrap
    resamples of each window's (decorrelated) samples instead.
    """
    lib = _lib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = lib.BAR().fit(lib.concat(u_nk_frames(u_kln)))
    total = float(est.delta_f_.iloc[0, -1])
    if n_bootstrap <= 0:
        return Estimate(total, float(np.sqrt(np.sum(np.diag(est.d_delta_f_.to_numpy(), 1) ** 2))))
    # ours: alchemlyb has no BAR bootstrap; refitting its BAR 200 times costs ~20 s a leg, so
    # the resamples call the pymbar bar that it wraps
    rng = np.random.default_rng(seed)
    sums = []
    for _ in range(n_bootstrap):
        index = [rng.integers(0, u.shape[1], u.shape[1]) for u in u_kln]
        try:
            sums.append(_bar_resampled(lib.other_estimators, u_kln, index))
        except lib.pymbar_errors:  # a resample without overlap (few samples): it has no BAR
            continue
    if len(sums) < max(2, n_bootstrap // 2):  # most resamples failed: the error is unknown
        return Estimate(total, float("inf"))
    return Estimate(total, float(np.std(sums, ddof=1)))


def exp(u_kln: list[np.ndarray], reverse: bool = False) -> Estimate:
    """Zwanzig exponential averaging between neighbours, forward (k -> k+1) or reverse.

    Reverse runs from the last window back, so its sign is flipped to give first -> last.
    Ours: alchemlyb has no EXP estimator; pymbar's exp does each pair.
    """
    other = _lib().other_estimators
    total, var = 0.0, 0.0
    for i in range(len(u_kln) - 1):
        if reverse:
            w = u_kln[i + 1][i] - u_kln[i + 1][i + 1]
            sign = -1.0
        else:
            w = u_kln[i][i + 1] - u_kln[i][i]
            sign = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = other.exp(w)
        total += sign * float(r["Delta_f"])
        var += float(r["dDelta_f"]) ** 2
    return Estimate(total, float(np.sqrt(var)))


def _stretches(lambdas: np.ndarray) -> dict[int, slice]:
    """For each parameter p that changes, the windows over which it does: one contiguous,
    strictly monotonic stretch (as in "charges off, then sterics off" schedules); windows
    where lambda_p is constant contribute nothing to its TI integral."""
    out = {}
    for p in range(lambdas.shape[1]):
        x = lambdas[:, p]
        moving = np.nonzero(np.abs(np.diff(x)) > 0)[0]
        if len(moving) == 0:
            continue
        lo, hi = moving[0], moving[-1] + 1
        d = np.diff(x[lo:hi + 1])
        if not (np.all(d > 0) or np.all(d < 0)):
            raise ValueError(f"lambda parameter {p} is not monotonic over windows {lo}..{hi}; "
                             "TI needs each parameter to change in one monotonic stretch")
        out[p] = slice(lo, hi + 1)
    return out


def ti_frames(lambdas: np.ndarray, dudl: list[np.ndarray]) -> dict[int, pd.DataFrame]:
    """Per changing parameter p, the alchemlyb dHdl frame over its stretch: index (time,
    ``lambda`` = lambda_p of the window), one column ``dHdl`` = dU/dlambda_p / kT."""
    lambdas = np.asarray(lambdas, dtype=float).reshape(len(dudl), -1)
    out = {}
    for p, seg in _stretches(lambdas).items():
        parts = []
        for k in range(len(dudl))[seg]:
            d = np.asarray(dudl[k], dtype=float)[:, p]
            parts.append(pd.DataFrame({"dHdl": d}, index=_index(len(d), "lambda", lambdas[k, p])))
        frame = pd.concat(parts)
        frame.attrs = {"energy_unit": "kT"}
        out[p] = frame
    return out


def _ti_trapezoid(lambdas: np.ndarray, frames: dict[int, pd.DataFrame]) -> Estimate:
    """alchemlyb's TI (trapezoid rule) over each parameter's stretch, summed over parameters
    (errors in quadrature); alchemlyb sorts by lambda, so first -> last is read by label."""
    ti_cls = _lib().TI
    total, var = 0.0, 0.0
    for p, frame in frames.items():
        x = lambdas[_stretches(lambdas)[p], p]
        est = ti_cls().fit(frame)
        total += float(est.delta_f_.loc[x[0], x[-1]])
        var += float(est.d_delta_f_.loc[x[0], x[-1]]) ** 2
    return Estimate(total, float(np.sqrt(var)))


def _spline_weights(x: np.ndarray) -> np.ndarray:
    """Weights w with integral over x of the natural cubic spline through (x_i, f_i) =
    sum_i w_i f_i (x strictly monotonic; the integral is linear in the f_i, so integrating the
    spline of each unit vector gives the weights). Two points: the trapezoid."""
    n = len(x)
    if n < 3:
        return np.full(n, (x[-1] - x[0]) / 2)
    order = np.argsort(x)
    xs = x[order]
    w = np.empty(n)
    w[order] = [CubicSpline(xs, e, bc_type="natural").integrate(xs[0], xs[-1]) for e in np.eye(n)]
    return w * (1.0 if x[-1] >= x[0] else -1.0)


def _ti_cubic(lambdas: np.ndarray, mean: np.ndarray, sem: np.ndarray) -> Estimate:
    """Ours (alchemlyb has no spline TI): each parameter's stretch integrated on a natural
    cubic spline through the window means; the error propagates the standard errors of the
    means through the (linear) quadrature weights."""
    total, var = 0.0, 0.0
    for p, seg in _stretches(lambdas).items():
        w = _spline_weights(lambdas[seg, p])
        total += float(w @ mean[seg, p])
        var += float((w ** 2) @ (sem[seg, p] ** 2))
    return Estimate(total, float(np.sqrt(var)))


def _mean_sem(dudl: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[K, P] mean dU/dlambda_p per window and its standard error (samples independent)."""
    mean = np.array([np.asarray(d, dtype=float).mean(axis=0) for d in dudl])
    sem = np.array([np.asarray(d, dtype=float).std(axis=0, ddof=1) / np.sqrt(len(d)) for d in dudl])
    return mean, sem


def ti(lambdas: np.ndarray, dudl: list[np.ndarray], method: str = "trapezoid") -> Estimate:
    """Thermodynamic integration along the window path.

    Args:
        lambdas: [K, P] parameter values per window.
        dudl: K arrays [N_k, P] of dU/dlambda_p / kT (decorrelated samples).
        method: ``trapezoid`` (alchemlyb's TI) or ``cubic`` (natural cubic spline, ours).

    For each parameter p, the windows over which lambda_p changes (see :func:`_stretches`) are
    integrated over lambda_p; the parameters' integrals add up.
    """
    lambdas = np.asarray(lambdas, dtype=float).reshape(len(dudl), -1)
    if method == "trapezoid":
        return _ti_trapezoid(lambdas, ti_frames(lambdas, dudl))
    if method == "cubic":
        return _ti_cubic(lambdas, *_mean_sem(dudl))
    raise ValueError(f"unknown TI quadrature {method!r}: use 'trapezoid' or 'cubic'")


def convergence(sub: Subsampled, num: int = 10) -> pd.DataFrame | None:
    """alchemlyb's forward/backward convergence: MBAR on the first and on the last 1/num,
    2/num, ... of each window's decorrelated samples. Columns ``Forward``, ``Forward_Error``,
    ``Backward``, ``Backward_Error`` (kT) and ``data_fraction``; None when MBAR cannot be
    solved on the smallest fractions (too few samples)."""
    lib = _lib()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return lib.forward_backward_convergence(u_nk_frames(sub.u_kln), "MBAR", num=num)
        except Exception:  # too few samples for MBAR at small fractions: no curve
            return None


def analyze(u_kln: list[np.ndarray], dudl: list[np.ndarray] | None = None,
            lambdas: np.ndarray | None = None, detect_equilibration: bool = True,
            with_convergence: bool = True) -> FreeEnergyResult:
    """Subsample every window, then MBAR, BAR, EXP forward/reverse and, with dU/dlambda,
    TI (trapezoid and cubic). Free energies are first window -> last window, in kT."""
    sub = subsample(u_kln, dudl, detect_equilibration)
    m, f, df = mbar(sub.u_kln)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overlap = np.asarray(m.overlap_matrix)
    estimates = {
        "MBAR": Estimate(float(f[0, -1]), float(df[0, -1])),
        "BAR": bar(sub.u_kln),
        "EXP_forward": exp(sub.u_kln),
        "EXP_reverse": exp(sub.u_kln, reverse=True),
    }
    mean = sem = frames = None
    if sub.dudl is not None:
        if lambdas is None:
            raise ValueError("TI needs the windows' lambda values (lambdas [K, P])")
        lam = np.asarray(lambdas, dtype=float).reshape(len(sub.dudl), -1)
        mean, sem = _mean_sem(sub.dudl)
        frames = ti_frames(lam, sub.dudl)
        estimates["TI_trapezoid"] = _ti_trapezoid(lam, frames)
        estimates["TI_cubic"] = _ti_cubic(lam, mean, sem)
    return FreeEnergyResult(
        estimates=estimates, overlap=overlap, mbar_f_k=f[0], mbar_df_k=df[0], n_k=sub.n_k,
        statistical_inefficiency=sub.g, equilibration_index=sub.t0, dudl_mean=mean,
        dudl_sem=sem, ti_dhdl=frames, convergence=convergence(sub) if with_convergence else None,
        sample_indices=sub.indices)
