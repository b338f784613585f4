"""Free-energy estimators over alchemical windows: MBAR, BAR, EXP (both directions) and TI.

Everything here works in reduced units (kT). The input is what the sampler stores per window:

- ``u_kln`` -- a list of K arrays, array k of shape [K, N_k]: the reduced potential
  u_l(x_n) = U_l(x_n) / kT (plus p V / kT under a barostat) of the N_k samples drawn from
  window k, evaluated at every window l.
- ``dudl`` -- a list of K arrays, array k of shape [N_k, P]: dU/d(lambda_p) / kT of the same
  samples for each of the P alchemical parameters named in ``ti_parameters``.
- ``lambdas`` -- [K, P] the parameter values of the windows.

pymbar does the statistics (MBAR, BAR, EXP, equilibration detection, statistical
inefficiency); this module only decides which samples to use and how to combine windows.
TI and the forward/reverse convergence are written here because pymbar has none; the TI
uncertainty is the standard error of each window's mean propagated through the quadrature
weights (the quadrature is linear in the window means).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline


def _quiet_pymbar():
    """Import pymbar without its banner on stdout (it prints when JAX is missing)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pymbar
        from pymbar import other_estimators, timeseries
    return pymbar, other_estimators, timeseries


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
    """Decorrelated samples per window, the indices kept and the statistics behind them."""

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
    """All estimators for one leg (first window -> last window), in kT."""

    estimates: dict[str, Estimate]
    overlap: np.ndarray
    mbar_f_k: np.ndarray
    mbar_df_k: np.ndarray
    n_k: np.ndarray
    statistical_inefficiency: list[float]
    equilibration_index: list[int]
    dudl_mean: np.ndarray | None = None
    dudl_sem: np.ndarray | None = None
    convergence: dict = field(default_factory=dict)

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


def subsample(u_kln: list[np.ndarray], dudl: list[np.ndarray] | None = None,
              detect_equilibration: bool = True) -> Subsampled:
    """Discard each window's equilibration and keep decorrelated samples (pymbar.timeseries).

    The series that decide both are what the estimators average: the work values to the
    neighbouring windows (u_{k+1} - u_k and u_{k-1} - u_k: BAR and EXP) and the summed
    dU/dlambda (TI). MBAR, too, sees a sample only through the differences u_l - u_k: a
    per-sample constant cancels from its weights. The window's own u_k is not used: in solution
    it is dominated by the solvent's energy, which decorrelates several times slower than the
    solute's coupling and enters no estimate, so it would throw away good samples (alchemlyb's
    ``decorrelate_u_nk(method="dE")`` makes the same choice). The equilibration time is the
    largest that pymbar's detect_equilibration finds in those series; the statistical
    inefficiency is the largest of theirs after it.
    """
    _, _, timeseries = _quiet_pymbar()
    k = _validate(u_kln)
    out_u, out_d, idx, t0s, gs = [], [], [], [], []
    for i in range(k):
        u = np.asarray(u_kln[i], dtype=float)
        series = []
        if i + 1 < k:
            series.append(u[i + 1] - u[i])
        if i > 0:
            series.append(u[i - 1] - u[i])
        if dudl is not None:
            series.append(np.asarray(dudl[i], dtype=float).sum(axis=1))
        series = [s for s in series if np.ptp(s) > 0]  # an unused parameter: nothing to decorrelate
        t0 = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if detect_equilibration and series:
                t0 = max(int(timeseries.detect_equilibration(s)[0]) for s in series)
            g = max((_inefficiency(timeseries, s[t0:]) for s in series), default=1.0)
            keep = t0 + np.asarray(timeseries.subsample_correlated_data(u[i, t0:], g=g), dtype=int)
        if len(keep) < 2:
            keep = np.arange(t0, u.shape[1])[-2:]
        idx.append(keep)
        t0s.append(t0)
        gs.append(float(g))
        out_u.append(u[:, keep])
        if dudl is not None:
            out_d.append(np.asarray(dudl[i], dtype=float)[keep])
    return Subsampled(out_u, out_d if dudl is not None else None, idx, t0s, gs)


def _inefficiency(timeseries, series: np.ndarray) -> float:
    """Statistical inefficiency (>= 1); a constant series (an unused parameter) counts as 1."""
    if len(series) < 3 or np.ptp(series) == 0:
        return 1.0
    return float(timeseries.statistical_inefficiency(series))


def _u_kn(u_kln: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate(u_kln, axis=1), np.array([u.shape[1] for u in u_kln])


def mbar(u_kln: list[np.ndarray]):
    """pymbar.MBAR over the windows; returns (mbar, Delta_f [K,K], dDelta_f [K,K])."""
    pymbar, _, _ = _quiet_pymbar()
    u_kn, n_k = _u_kn(u_kln)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = pymbar.MBAR(u_kn, n_k, solver_protocol="robust")
        r = m.compute_free_energy_differences()
    return m, np.asarray(r["Delta_f"]), np.asarray(r["dDelta_f"])


def _bar_sum(other, u_kln: list[np.ndarray], index: list[np.ndarray] | None = None) -> tuple[float, float]:
    """Sum of neighbour BAR estimates and the sum of their analytic variances."""
    total, var = 0.0, 0.0
    for i in range(len(u_kln) - 1):
        a = u_kln[i] if index is None else u_kln[i][:, index[i]]
        b = u_kln[i + 1] if index is None else u_kln[i + 1][:, index[i + 1]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = other.bar(a[i + 1] - a[i], b[i] - b[i + 1], compute_uncertainty=index is None)
        total += float(r["Delta_f"])
        if index is None:
            var += float(r["dDelta_f"]) ** 2
    return total, var


def bar(u_kln: list[np.ndarray], n_bootstrap: int = 200, seed: int = 0) -> Estimate:
    """Sum of BAR between neighbouring windows.

    Neighbouring pairs share a window's samples, so their errors are correlated and adding
    the analytic variances in quadrature under-reports the total (by about 30% on the
    harmonic-oscillator tests). With ``n_bootstrap`` > 0 the error is the standard deviation of
    the sum over bootstrap resamples of each window's (decorrelated) samples instead.
    """
    _, other, _ = _quiet_pymbar()
    total, var = _bar_sum(other, u_kln)
    if n_bootstrap <= 0:
        return Estimate(total, float(np.sqrt(var)))
    rng = np.random.default_rng(seed)
    sums = [
        _bar_sum(other, u_kln, [rng.integers(0, u.shape[1], u.shape[1]) for u in u_kln])[0]
        for _ in range(n_bootstrap)
    ]
    return Estimate(total, float(np.std(sums, ddof=1)))


def exp(u_kln: list[np.ndarray], reverse: bool = False) -> Estimate:
    """Zwanzig exponential averaging between neighbours, forward (k -> k+1) or reverse.

    Reverse runs from the last window back, so its sign is flipped to give first -> last.
    """
    _, other, _ = _quiet_pymbar()
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


def _quadrature_weights(x: np.ndarray, method: str) -> np.ndarray:
    """Weights w with integral of f over x ~= sum_i w_i f(x_i) (x strictly monotonic).

    ``trapezoid`` or ``cubic`` (natural cubic spline through the points; its integral is
    linear in the values, so integrating the spline of each unit vector gives the weights).
    """
    n = len(x)
    if n < 2:
        return np.zeros(n)
    if method == "trapezoid" or n < 3:
        w = np.zeros(n)
        dx = np.diff(x)
        w[:-1] += dx / 2
        w[1:] += dx / 2
        return w
    if method == "cubic":
        order = np.argsort(x)
        xs = x[order]
        w_sorted = np.array([CubicSpline(xs, e, bc_type="natural").integrate(xs[0], xs[-1])
                             for e in np.eye(n)])
        w = np.empty(n)
        w[order] = w_sorted
        return w * (1.0 if x[-1] >= x[0] else -1.0)
    raise ValueError(f"unknown TI quadrature {method!r}: use 'trapezoid' or 'cubic'")


def ti(lambdas: np.ndarray, dudl_mean: np.ndarray, dudl_sem: np.ndarray,
       method: str = "trapezoid") -> Estimate:
    """Thermodynamic integration along the window path.

    Args:
        lambdas: [K, P] parameter values per window.
        dudl_mean: [K, P] mean dU/dlambda_p / kT per window.
        dudl_sem: [K, P] standard errors of those means.
        method: ``trapezoid`` or ``cubic``.

    For each parameter p, the windows over which lambda_p changes (a contiguous, monotonic
    stretch, as in the usual "charges off, then sterics off" schedules) are integrated over
    lambda_p; windows where it is constant contribute nothing.
    """
    lambdas = np.asarray(lambdas, dtype=float).reshape(len(dudl_mean), -1)
    total, var = 0.0, 0.0
    for p in range(lambdas.shape[1]):
        x = lambdas[:, p]
        moving = np.nonzero(np.abs(np.diff(x)) > 0)[0]
        if len(moving) == 0:
            continue
        lo, hi = moving[0], moving[-1] + 1
        seg = slice(lo, hi + 1)
        xs = x[seg]
        d = np.diff(xs)
        if not (np.all(d > 0) or np.all(d < 0)):
            raise ValueError(f"lambda parameter {p} is not monotonic over windows {lo}..{hi}; "
                             "TI needs each parameter to change in one monotonic stretch")
        w = _quadrature_weights(xs, method)
        total += float(w @ dudl_mean[seg, p])
        var += float((w ** 2) @ (dudl_sem[seg, p] ** 2))
    return Estimate(total, float(np.sqrt(var)))


def _mbar_estimate(u_kln: list[np.ndarray]) -> Estimate:
    _, f, df = mbar(u_kln)
    return Estimate(float(f[0, -1]), float(df[0, -1]))


def convergence(sub: Subsampled, fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> dict:
    """MBAR on growing fractions of each window's decorrelated samples, from the start
    (forward) and from the end (reverse). Returns lists of fractions, values and errors (kT)."""
    out = {"fraction": [], "forward": [], "forward_err": [], "reverse": [], "reverse_err": []}
    for frac in fractions:
        fwd, rev = [], []
        for u in sub.u_kln:
            n = max(2, int(round(frac * u.shape[1])))
            fwd.append(u[:, :n])
            rev.append(u[:, -n:])
        try:
            ef, er = _mbar_estimate(fwd), _mbar_estimate(rev)
        except Exception:  # too few samples for MBAR at small fractions: skip that point
            continue
        out["fraction"].append(float(frac))
        out["forward"].append(ef.value)
        out["forward_err"].append(ef.error)
        out["reverse"].append(er.value)
        out["reverse_err"].append(er.error)
    return out


def analyze(u_kln: list[np.ndarray], dudl: list[np.ndarray] | None = None,
            lambdas: np.ndarray | None = None, detect_equilibration: bool = True,
            with_convergence: bool = True) -> FreeEnergyResult:
    """Subsample every window, then MBAR, BAR, EXP forward/reverse and, with dU/dlambda,
    TI (trapezoid and cubic). Free energies are first window -> last window, in kT."""
    sub = subsample(u_kln, dudl, detect_equilibration)
    m, f, df = mbar(sub.u_kln)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overlap = np.asarray(m.compute_overlap()["matrix"])
    estimates = {
        "MBAR": Estimate(float(f[0, -1]), float(df[0, -1])),
        "BAR": bar(sub.u_kln),
        "EXP_forward": exp(sub.u_kln),
        "EXP_reverse": exp(sub.u_kln, reverse=True),
    }
    mean = sem = None
    if sub.dudl is not None:
        if lambdas is None:
            raise ValueError("TI needs the windows' lambda values (lambdas [K, P])")
        mean = np.array([d.mean(axis=0) for d in sub.dudl])
        sem = np.array([d.std(axis=0, ddof=1) / np.sqrt(len(d)) for d in sub.dudl])
        estimates["TI_trapezoid"] = ti(lambdas, mean, sem, "trapezoid")
        estimates["TI_cubic"] = ti(lambdas, mean, sem, "cubic")
    return FreeEnergyResult(
        estimates=estimates, overlap=overlap, mbar_f_k=f[0], mbar_df_k=df[0], n_k=sub.n_k,
        statistical_inefficiency=sub.g, equilibration_index=sub.t0, dudl_mean=mean,
        dudl_sem=sem, convergence=convergence(sub) if with_convergence else {})
