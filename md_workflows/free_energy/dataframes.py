"""Samples as alchemlyb dataframes (u_nk and dHdl), so users can reanalyse with alchemlyb.

Format (alchemlyb's convention): rows indexed by (time in ps, one level per lambda parameter:
the window that was sampled); ``u_nk`` has one column per window (labelled by its lambda
tuple, or the bare value with one parameter) holding the reduced potential in kT; ``dHdl`` has
one column per lambda parameter holding dU/dlambda in kT. ``attrs`` carry ``temperature`` (K)
and ``energy_unit`` ("kT"). Written as parquet: read back with
``alchemlyb.parsing.parquet.extract_u_nk(path, T)`` / ``extract_dHdl(path, T)``, or as a
:class:`LegSamples` again with :func:`read_alchemlyb` (to reanalyse archived samples).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .sampling import LegSamples


def _labels(leg: LegSamples) -> tuple[list[str], list]:
    names = list(leg.states[0])
    labels = [tuple(float(s[n]) for n in names) for s in leg.states]
    if len(names) == 1:
        labels = [lab[0] for lab in labels]
    return names, labels


def to_alchemlyb(leg: LegSamples) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(u_nk, dHdl) of a leg; all samples (no equilibration removed, no subsampling)."""
    names, labels = _labels(leg)
    u_frames, d_frames = [], []
    for k, state in enumerate(leg.states):
        t = leg.time_ps[k]
        index = pd.MultiIndex.from_arrays(
            [t] + [np.full(len(t), float(state[n])) for n in names], names=["time"] + names)
        u_frames.append(pd.DataFrame(leg.u_kln[k].T, index=index, columns=labels))
        dcols = {p: leg.dudl[k][:, j] for j, p in enumerate(leg.ti_parameters)}
        d_frames.append(pd.DataFrame(dcols, index=index))
    u_nk = pd.concat(u_frames)
    dhdl = pd.concat(d_frames)
    for df in (u_nk, dhdl):
        df.attrs["temperature"] = float(leg.temperature_K)
        df.attrs["energy_unit"] = "kT"
    return u_nk, dhdl


def write_alchemlyb(leg: LegSamples, out_dir: str | Path) -> tuple[Path, Path | None]:
    """Write ``u_nk.parquet`` and ``dHdl.parquet`` into ``out_dir``; returns their paths
    (dHdl is None when the leg has no dU/dlambda, as with replica exchange)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    u_nk, dhdl = to_alchemlyb(leg)
    paths = out / "u_nk.parquet", out / "dHdl.parquet"
    if isinstance(u_nk.columns[0], tuple):  # parquet stores tuple labels as their str(),
        u_nk.columns = [str(c) for c in u_nk.columns]  # which extract_u_nk turns back
    for df, path in zip((u_nk, dhdl), paths):
        if df.shape[1] == 0:
            continue
        tmp = path.with_name(path.name + ".tmp")
        df.to_parquet(tmp, index=True)
        tmp.replace(path)
    return paths[0], (paths[1] if dhdl.shape[1] else None)


def from_alchemlyb(u_nk: pd.DataFrame, dhdl: pd.DataFrame | None = None) -> LegSamples:
    """The inverse of :func:`to_alchemlyb`: a leg's samples per window, in the sampler's layout.

    Args:
        u_nk: [sum N_k, K] reduced potentials (kT), index (time in ps, one level per lambda
            parameter); the columns (the K windows, in sampling order) give the window order.
        dhdl: [sum N_k, P] dU/dlambda_p (kT) on the same index, or None (no TI, as after
            replica exchange).

    Returns:
        LegSamples with ``u_kln`` K arrays [K, N_k], ``dudl`` K arrays [N_k, P] (P = 0 without
        ``dhdl``), ``time_ps`` K arrays [N_k], the states from the column labels and the
        temperature (K) from ``u_nk.attrs``.
    """
    names = list(u_nk.index.names[1:])
    keys = [c if isinstance(c, tuple) else (c,) for c in u_nk.columns]
    levels = u_nk.index.to_frame(index=False)
    sampled = levels[names].to_numpy(dtype=float)
    params = list(dhdl.columns) if dhdl is not None else []
    u_kln, dudl, times = [], [], []
    for key in keys:
        rows = np.nonzero(np.all(np.isclose(sampled, np.asarray(key, dtype=float)), axis=1))[0]
        rows = rows[np.argsort(levels["time"].to_numpy()[rows], kind="stable")]
        u_kln.append(u_nk.iloc[rows].to_numpy(dtype=float).T)
        times.append(levels["time"].to_numpy(dtype=float)[rows])
        dudl.append(dhdl.iloc[rows].to_numpy(dtype=float) if dhdl is not None
                    else np.zeros((len(rows), 0)))
    states = [{n: float(v) for n, v in zip(names, key)} for key in keys]
    return LegSamples(states, params, u_kln, dudl, times, float(u_nk.attrs["temperature"]))


def read_alchemlyb(leg_dir: str | Path, temperature_K: float) -> LegSamples:
    """Read ``u_nk.parquet`` (and ``dHdl.parquet`` where present) written by
    :func:`write_alchemlyb` back into a :class:`LegSamples` (temperature in K, checked
    against the files' own by alchemlyb)."""
    from alchemlyb.parsing.parquet import extract_dHdl, extract_u_nk

    leg = Path(leg_dir)
    u_nk = extract_u_nk(str(leg / "u_nk.parquet"), T=temperature_K)
    d_path = leg / "dHdl.parquet"
    dhdl = extract_dHdl(str(d_path), T=temperature_K) if d_path.exists() else None
    if dhdl is not None and not dhdl.index.equals(u_nk.index):
        raise ValueError(f"{d_path} and u_nk.parquet in {leg} hold different samples")
    return from_alchemlyb(u_nk, dhdl)
