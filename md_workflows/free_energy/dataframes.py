"""Samples as alchemlyb dataframes (u_nk and dHdl), so users can reanalyse with alchemlyb.

Format (alchemlyb's convention): rows indexed by (time in ps, one level per lambda parameter:
the window that was sampled); ``u_nk`` has one column per window (labelled by its lambda
tuple, or the bare value with one parameter) holding the reduced potential in kT; ``dHdl`` has
one column per lambda parameter holding dU/dlambda in kT. ``attrs`` carry ``temperature`` (K)
and ``energy_unit`` ("kT"). Written as parquet: read back with
``alchemlyb.parsing.parquet.extract_u_nk(path, T)`` / ``extract_dHdl(path, T)``.
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
