"""Trajectory analysis through mdtraj: ``mlff analyze`` and :func:`analyze`.

Writes to ``out``: ``analysis.csv`` (per frame: time, RMSD to the first frame over heavy atoms
(A), radius of gyration (A), and phi/psi (degrees) of every residue that has them),
``rmsd_rg.png``, ``ramachandran.png`` (peptides), and ``rdf_<a>_<b>.csv/.png`` for each
requested element pair (g(r) against r in A).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlff.atomic import atomic_write_text
from mlff.units import NM_TO_ANGSTROM


def load_trajectory(trajectory: str, topology: Optional[str] = None):
    """mdtraj Trajectory of a run folder (``trajectory.dcd`` + ``topology.pdb``) or of a file
    with its topology file."""
    import mdtraj

    p = Path(trajectory)
    if p.is_dir():
        topology = str(p / "topology.pdb")
        p = p / "trajectory.dcd"
    if not p.exists():
        raise FileNotFoundError(f"trajectory {p} does not exist")
    if p.suffix.lower() == ".pdb" and topology is None:
        return mdtraj.load(str(p))
    if topology is None:
        raise ValueError(f"{p} needs a topology: pass --topology (e.g. the run's topology.pdb)")
    return mdtraj.load(str(p), top=topology)


def ramachandran(traj) -> Tuple[np.ndarray, np.ndarray]:
    """phi and psi in degrees, ``[n_frames, n_residues_with_both]`` (mdtraj's definitions)."""
    import mdtraj

    phi_idx, phi = mdtraj.compute_phi(traj)
    psi_idx, psi = mdtraj.compute_psi(traj)
    # pair phi and psi of the same residue: phi's C(i-1) N CA C and psi's N CA C N(i+1) share N CA C
    psi_by_key = {tuple(q[:3]): k for k, q in enumerate(psi_idx)}
    pairs = [(k, psi_by_key[tuple(q[1:])]) for k, q in enumerate(phi_idx) if tuple(q[1:]) in psi_by_key]
    if not pairs:
        return np.zeros((traj.n_frames, 0)), np.zeros((traj.n_frames, 0))
    a, b = zip(*pairs)
    return np.degrees(phi[:, list(a)]), np.degrees(psi[:, list(b)])


def plot_ramachandran(phi: np.ndarray, psi: np.ndarray, path: Path) -> Path:
    """Scatter of (phi, psi) in degrees coloured by frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    frames = np.repeat(np.arange(phi.shape[0])[:, None], phi.shape[1], axis=1)
    sc = ax.scatter(phi.ravel(), psi.ravel(), c=frames.ravel(), s=6, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="frame")
    ax.set(xlim=(-180, 180), ylim=(-180, 180), xlabel="phi (deg)", ylabel="psi (deg)",
           title="Ramachandran")
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-180, 181, 60))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_csv(path: Path, header: Sequence[str], rows: np.ndarray) -> None:
    """A csv of ``header`` and ``rows`` (``[n_rows, len(header)]``), written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows.tolist())
    atomic_write_text(path, buf.getvalue())


def analyze(
    trajectory: str,
    out: str,
    topology: Optional[str] = None,
    timestep_ps: Optional[float] = None,
    rdf_pairs: Sequence[Tuple[str, str]] = (),
    rdf_r_max: float = 6.0,
) -> Dict[str, Path]:
    """Analyse a trajectory; returns the written files by name.

    Args:
        trajectory: run folder of ``mlff md`` or a trajectory file (then ``topology``).
        out: output folder. timestep_ps: time between frames (default: from the file, else 1).
        rdf_pairs: element-symbol pairs such as ``("O", "H")`` for radial distribution functions.
        rdf_r_max: RDF range (A).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mdtraj

    traj = load_trajectory(trajectory, topology)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    dt = timestep_ps if timestep_ps is not None else float(traj.timestep or 1.0)
    time_ps = np.arange(traj.n_frames) * dt
    heavy = traj.topology.select("not element H")
    if len(heavy) < 3:
        heavy = np.arange(traj.n_atoms)
    rmsd = mdtraj.rmsd(traj, traj, 0, atom_indices=heavy) * NM_TO_ANGSTROM
    rg = mdtraj.compute_rg(traj) * NM_TO_ANGSTROM
    phi, psi = ramachandran(traj)
    header = ["time_ps", "rmsd_A", "rg_A"]
    header += [f"phi{k}_deg" for k in range(phi.shape[1])] + [f"psi{k}_deg" for k in range(psi.shape[1])]
    table = np.column_stack([time_ps, rmsd, rg, phi, psi])
    files["analysis_csv"] = outp / "analysis.csv"
    _write_csv(files["analysis_csv"], header, table)

    fig, axes = plt.subplots(2, 1, figsize=(7, 4.4), sharex=True)
    axes[0].plot(time_ps, rmsd)
    axes[0].set_ylabel("RMSD heavy (A)")
    axes[1].plot(time_ps, rg, color="tab:green")
    axes[1].set_ylabel("Rg (A)")
    axes[1].set_xlabel("time (ps)")
    fig.tight_layout()
    files["rmsd_rg"] = outp / "rmsd_rg.png"
    fig.savefig(files["rmsd_rg"], dpi=110)
    plt.close(fig)
    if phi.shape[1]:
        files["ramachandran"] = plot_ramachandran(phi, psi, outp / "ramachandran.png")

    for a, b in rdf_pairs:
        ia = traj.topology.select(f"element {a}")
        ib = traj.topology.select(f"element {b}")
        if len(ia) == 0 or len(ib) == 0:
            raise ValueError(f"rdf {a}-{b}: no atoms of element {a if len(ia) == 0 else b}")
        pairs = traj.topology.select_pairs(ia, ib)
        if traj.unitcell_vectors is None:
            raise ValueError("rdf needs a periodic trajectory (a box); this one has none")
        r, g = mdtraj.compute_rdf(traj, pairs, r_range=(0.0, rdf_r_max / NM_TO_ANGSTROM))
        name = f"rdf_{a}_{b}"
        _write_csv(outp / f"{name}.csv", ["r_A", "g"], np.column_stack([r * NM_TO_ANGSTROM, g]))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(r * NM_TO_ANGSTROM, g)
        ax.set(xlabel="r (A)", ylabel="g(r)", title=f"{a}-{b}")
        fig.tight_layout()
        fig.savefig(outp / f"{name}.png", dpi=110)
        plt.close(fig)
        files[name] = outp / f"{name}.png"
    return files
