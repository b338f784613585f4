"""``mlff fe rbfe CONFIG.yaml --out DIR``: every edge of an RBFE network by ATM, then the
network: cycle closures, per-ligand values, the table against experiment.

Output::

    DIR/config.json      the RBFEConfig (a resume with other protocol settings is refused)
    DIR/edges/A~B/       one edge (:mod:`.edge`): its windows, result.json, PNGs
    DIR/result.json      edges (ddG, error, experiment, model error), cycles (closure error and
                         its sigma), ligands (network dG), statistics against experiment
    DIR/edges.csv        the table: ligand A, ligand B, ddG, error, experiment
    DIR/network.png      calculated against experimental ddG per edge (when experiments are given)

Edges run one after another, each with ``workers`` windows at once (or on a Dask cluster);
finished windows and edges are reused when the same command is run again.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, Sequence

from mlff.atomic import atomic_write_text

from .config import RBFEConfig
from .network import Edge, cycle_closures, edge_table, error_statistics, ligand_values

#: settings a resumed network may change: parallelism, the edge list (new edges are added,
#: finished ones kept) and the ligands (added ones; experiments). A changed molecule or
#: protocol under a sampled edge is refused by the sampler (its System differs).
MAY_CHANGE = ("workers", "threads", "scheduler", "edges", "ligands")


def _check_resume(config: RBFEConfig, out: Path) -> None:
    from mlff.resume_check import check_resume_settings

    saved = out / "config.json"
    if saved.exists() and any(out.glob("edges/*/leg/window_*/samples.npz")):
        old = json.loads(saved.read_text())
        new = {k: v for k, v in config.to_dict().items() if k not in MAY_CHANGE}
        # keys added to RBFEConfig since the run started count as unchanged
        check_resume_settings({k: old.get(k, v) for k, v in new.items()}, new, MAY_CHANGE, str(out))


def run_rbfe(config: RBFEConfig, out_dir: str | Path, progress: bool = True,
             only: Sequence[str] | None = None) -> dict:
    """Run (or resume) every edge (or those named ``A~B`` in ``only``) and analyse the network;
    returns ``result.json``'s content. ``out_dir`` is locked while it runs."""
    from mlff.atomic import check_writable
    from mlff.run_lock import run_lock

    check_writable(out_dir, "RBFE output folder")
    with run_lock(out_dir, "mlff fe rbfe"):
        return _run(config, Path(out_dir), progress, only)


def _run(config: RBFEConfig, out: Path, progress: bool, only: Sequence[str] | None) -> dict:
    from .edge import parametrize, run_edge

    names = [f"{a}~{b}" for a, b in config.edges]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"--edges {unknown} are not edges of the config ({', '.join(names)})")
    _check_resume(config, out)
    params = parametrize(config, Path(config.cache_dir) if config.cache_dir else out / "parameters")
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=1))
    records = {}
    for i, name in enumerate(names):
        if only and name not in only:
            previous = out / "edges" / name / "result.json"
            if previous.exists():
                records[name] = json.loads(previous.read_text())
            continue
        records[name] = run_edge(config, params, i, out / "edges" / name, progress)
    result = network_result(config, [records[n] for n in names if n in records])
    atomic_write_text(out / "result.json", json.dumps(result, indent=1))
    atomic_write_text(out / "edges.csv", edges_csv(result["edges"]))
    if any(r["experiment"] is not None for r in result["edges"]):
        plot_network(result["edges"], out / "network.png", config.name)
    return result


def network_result(config: RBFEConfig, records: Sequence[dict]) -> dict:
    """The network's analysis of the finished edge records (kcal/mol)."""
    import math

    edges = [Edge(r["ligand_a"], r["ligand_b"], r["ddG_kcal_mol"], r["ddG_err_kcal_mol"]) for r in records]
    expt = config.experiment
    rows = edge_table(edges, expt)
    for row, r in zip(rows, records):
        row.update({"model": r.get("model"), "model_error": r.get("model_error"),
                    "min_neighbour_overlap": r.get("min_neighbour_overlap"),
                    "leg1": r.get("leg1_kcal_mol"), "leg2": r.get("leg2_kcal_mol"),
                    "estimators": r.get("estimators")})
    # an edge whose estimate failed (no overlap: infinite or undefined error) stays in the table
    # and is left out of the network, with a warning
    good = [e for e in edges if math.isfinite(e.ddG) and math.isfinite(e.error)]
    warnings = [f"edge {e.name}: the estimate failed (ddG {e.ddG:.3g}, error {e.error:.3g}); more states or "
                "longer sampling are needed; left out of the cycles and ligand values"
                for e in edges if e not in good]
    ligands = {}
    try:
        values = ligand_values(good, expt) if good else {}
        ligands = {k: {"dG": v, "dG_err": e, "experiment": expt.get(k)} for k, (v, e) in values.items()}
    except ValueError as exc:  # a network in pieces: no common offset
        ligands = {"error": str(exc)}
    cycles = cycle_closures(good)
    warnings += [f"cycle {c['system']} closes to {c['cycle_closure']:.2f} kcal/mol, {c['closure_sigma']:.1f} sigma"
                 for c in cycles if not c["within_2_sigma"]]
    return {"name": config.name, "model": config.model, "temperature_K": config.temperature_K,
            "edges": rows, "cycles": cycles, "ligands": ligands,
            "edge_statistics": error_statistics([(r["ddG"], r["experiment"]) for r in rows
                                                 if r["experiment"] is not None and math.isfinite(r["ddG_err"])]),
            "warnings": warnings}


def edges_csv(rows: Sequence[Dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ligand_a", "ligand_b", "ddG_kcal_mol", "error_kcal_mol", "model_error_kcal_mol",
                     "experiment_kcal_mol"])
    for r in rows:
        writer.writerow([r["ligand_a"], r["ligand_b"], f"{r['ddG']:.3f}", f"{r['ddG_err']:.3f}",
                         "" if r.get("model_error") is None else f"{r['model_error']:.3f}",
                         "" if r["experiment"] is None else f"{r['experiment']:.3f}"])
    return buffer.getvalue()


def plot_network(rows: Sequence[Dict], path: Path, title: str) -> Path:
    """Calculated against experimental ddG per edge, with error bars (kcal/mol)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in rows if r["experiment"] is not None]
    x = np.array([r["experiment"] for r in rows])
    y = np.array([r["ddG"] for r in rows])
    err = np.hypot([r["ddG_err"] for r in rows], [r.get("model_error") or 0.0 for r in rows])
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=2)
    for r in rows:
        ax.annotate(r["system"], (r["experiment"], r["ddG"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lo, hi = min(x.min(), y.min()) - 1, max(x.max(), y.max()) + 1
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("experiment ddG (kcal/mol)")
    ax.set_ylabel("ATM ddG (kcal/mol)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
