"""``mlff eval MODEL DATA...``: errors of a model file on labelled data, with parity plots.

Writes ``OUT/eval.json`` (MAE/RMSE of energy per atom, forces overall and per element, per data
file) and ``OUT/parity_<file>.png`` (energy per atom and force components, prediction against
reference). For ensembles also the calibration of the force uncertainties (Spearman per atom
and per structure, miscalibration area, NLL, raw and with the model's recalibration factor;
see :mod:`mlff.train.calibration`) and ``OUT/calibration_<file>.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from mlff import graph as G
from mlff.atomic import atomic_savefig, atomic_write_text, check_writable
from mlff.data.dataset import DataKeys, GraphDataset
from mlff.io import load_model
from mlff.train import calibration
from mlff.train.metrics import ErrorAccumulator


def evaluate(
    model_path: str,
    data_paths: Sequence[str],
    out: str,
    keys: DataKeys = DataKeys.xtb(),
    batch_size: int = 16,
    plots: bool = True,
) -> Dict[str, object]:
    """Evaluate ``model_path`` on each file of ``data_paths``; returns the metrics dict.

    ``out`` is checked for write access first and created only once the model and every data
    file have been read."""
    out_dir = Path(out)
    check_writable(out_dir, "eval output folder")
    potential = load_model(model_path)
    dtype = next(potential.parameters()).dtype
    elements = list(potential.model.config.elements)
    datasets = [GraphDataset(path, potential.r_cut, keys, elements, ("energy", "forces"), dtype)
                for path in data_paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    results: Dict[str, object] = {"model": str(model_path)}
    for path, ds in zip(data_paths, datasets):
        acc = ErrorAccumulator()
        ref_e: List[float] = []
        pred_e: List[float] = []
        ref_f: List[np.ndarray] = []
        pred_f: List[np.ndarray] = []
        std_f: List[np.ndarray] = []
        err_f: List[np.ndarray] = []
        structure: List[np.ndarray] = []
        for k in range(0, len(ds), batch_size):
            batch = G.collate(ds.graphs[k : k + batch_size])
            pred = potential(batch, compute_forces=True)
            acc.add(pred, batch)
            n = G.atoms_per_graph(batch)
            ref_e += (batch[G.ENERGY] / n).tolist()
            pred_e += (pred["energy"].detach() / n).tolist()
            ref_f.append(batch[G.FORCES].numpy().ravel())
            pred_f.append(pred["forces"].detach().double().numpy().ravel())
            if "forces_std_raw" in pred:
                std_f.append(pred["forces_std_raw"].detach().double().numpy())
                err_f.append((pred["forces"].detach().double() - batch[G.FORCES]).numpy())
                structure.append(batch[G.BATCH].numpy() + k)
        name = Path(path).stem
        results[name] = acc.summary()
        if std_f:
            std, err = np.concatenate(std_f), np.concatenate(err_f)
            scale = float(potential.std_scale)
            results[name]["uncertainty"] = calibration.force_uncertainty_report(
                std, err, np.concatenate(structure), scale)
            if plots:
                calibration.plot_calibration(std, err, out_dir / f"calibration_{name}.png", scale, name)
        if plots:
            _parity(np.array(ref_e), np.array(pred_e), np.concatenate(ref_f), np.concatenate(pred_f),
                    results[name], out_dir / f"parity_{name}.png", name)
    atomic_write_text(out_dir / "eval.json", json.dumps(results, indent=1))
    return results


def _parity(ref_e, pred_e, ref_f, pred_f, metrics, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, ref, pred, label, key, unit in (
        (axes[0], ref_e, pred_e, "energy per atom (eV)", "energy_per_atom_meV", "meV/atom"),
        (axes[1], ref_f, pred_f, "force component (eV/A)", "forces_meV_per_A", "meV/A"),
    ):
        ax.scatter(ref, pred, s=2, alpha=0.4)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        m = metrics[key]
        ax.set_title(f"MAE {m['mae']:.1f}, RMSE {m['rmse']:.1f} {unit}")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path)
