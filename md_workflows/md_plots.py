"""Plots of an MD run's ``log.csv``: ``traces.png`` and ``uncertainty.png``."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from mlff.md_workflows.md_config import LOG_COLUMNS
from mlff.md_workflows.run_folder import read_log

#: Resolution of the written figures (dots per inch).
DPI = 110


def plot_log(log_path: Path, out: Path) -> List[Path]:
    """``traces.png`` (energies eV, temperature K, density g/cm^3 for periodic runs, against
    time ps) and, when the log has ensemble spreads, ``uncertainty.png`` (max force std eV/A,
    energy std eV) from a ``log.csv``, written to ``out``. Returns the written files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return []
    out = Path(out)
    col = {k: np.array([float(r[k]) if r[k] not in ("", "nan") else np.nan for r in rows])
           for k in LOG_COLUMNS}
    t = col["time_ps"]
    periodic = not np.all(np.isnan(col["volume_A3"]))
    n = 3 + periodic
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.2 * n), sharex=True)
    axes[0].plot(t, col["potential_eV"], label="potential")
    axes[0].set_ylabel("E_pot (eV)")
    axes[1].plot(t, col["total_eV"], color="k")
    axes[1].set_ylabel("E_total (eV)")
    axes[2].plot(t, col["temperature_K"], color="tab:red")
    axes[2].set_ylabel("T (K)")
    if periodic:
        axes[3].plot(t, col["density_g_cm3"], color="tab:green")
        axes[3].set_ylabel("density (g/cm3)")
    axes[-1].set_xlabel("time (ps)")
    fig.tight_layout()
    files = [out / "traces.png"]
    fig.savefig(files[0], dpi=DPI)
    plt.close(fig)
    if not np.all(np.isnan(col["max_force_std_eV_A"])):
        fig, axes = plt.subplots(2, 1, figsize=(7, 4.4), sharex=True)
        axes[0].plot(t, col["max_force_std_eV_A"], color="tab:purple")
        axes[0].set_ylabel("max force std (eV/A)")
        axes[1].plot(t, col["energy_std_eV"], color="tab:orange")
        axes[1].set_ylabel("energy std (eV)")
        axes[1].set_xlabel("time (ps)")
        fig.tight_layout()
        files.append(out / "uncertainty.png")
        fig.savefig(files[-1], dpi=DPI)
        plt.close(fig)
    return files
