"""Fine-tuning an imported foundation-style model: the ANI-1x MACE (wB97x/6-31G(d), from
../shared/pretrained, imported with ``mlff import mace``) fine-tuned on a few hundred
organic_gfn2 frames (GFN2-xTB labels), with and without replay of its own predictions.

Reports (results/finetune_ani1x.json, results/finetune_ani1x.png):
(a) the error on the organic_gfn2 test set (all its molecular frames) before fine-tuning
    (the imported model with its E0s refit to GFN2, i.e. the network as imported) and after;
(b) the drift on frames the original model was good at: rattled H C N O molecules of ASE's g2
    set (its domain), measured as the force MAE and per-atom interaction-energy MAE of the
    fine-tuned model against the original model's own predictions, with and without replay
    (replay: 200 other rattled g2 frames, labelled by the original model, mixed into training).

Both runs use the same training frames, seed, optimiser and epochs; each is resumable (its run
folder in runs/finetune_ani1x/ checkpoints; a finished run is not redone). The converted model
lives only in runs/ (third-party weights are never committed). Skipped with a message when
../shared/pretrained is absent.

    .venv/bin/python benchmarks/finetune_ani1x.py [--epochs 20] [--frames 300] [--energy-weight 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, versions  # noqa: E402

NAME = "finetune_ani1x"
SOURCE = ROOT.parent / "shared" / "pretrained" / "mace_ani1x_small" / "ani500k_small_CC.model"
DATA = ROOT / "data" / "datasets" / "organic_gfn2"
KEYS = {"energy_key": "energy_xtb", "forces_key": "forces_xtb"}


def domain_frames(seed: int, copies: int) -> list:
    """Rattled H C N O molecules of ASE's g2 set (the ANI-1x model's own domain)."""
    from ase.build import molecule
    from ase.collections import g2

    rng = np.random.default_rng(seed)
    frames = []
    names = sorted(n for n in g2.names if set(g2[n].get_chemical_symbols()) <= {"H", "C", "N", "O"}
                   and len(g2[n]) > 2)
    for name in names:
        for _ in range(copies):
            a = molecule(name)
            a.rattle(0.05, seed=int(rng.integers(1 << 30)))
            frames.append(a)
    return frames


def training_frames(out: Path, n: int, seed: int) -> Path:
    import ase.io

    path = out / "train.extxyz"
    if not path.exists():
        frames = [a for a in ase.io.read(DATA / "train.extxyz", ":") if len(a) > 1]
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(frames), n, replace=False))
        ase.io.write(path, [frames[i] for i in chosen])
    return path


def predictions(potential, frames) -> Dict[str, np.ndarray]:
    """Per-atom interaction energies (eV/atom, E0s removed) and forces (eV/A)."""
    from mlff.calculators.ase import MLFFCalculator

    e0 = dict(zip(potential.elements, potential.model.config.e0s))
    calc = MLFFCalculator(potential)
    energies, forces = [], []
    for a in frames:
        b = a.copy()
        b.calc = calc
        energies.append((b.get_potential_energy() - sum(e0[int(z)] for z in b.numbers)) / len(b))
        forces.append(b.get_forces())
    return {"energy": np.array(energies), "forces": np.concatenate(forces)}


def test_errors(potential, frames) -> Dict[str, float]:
    pred = predictions(potential, frames)
    e0 = dict(zip(potential.elements, potential.model.config.e0s))
    ref_e = np.array([(a.info["energy_xtb"] - sum(e0[int(z)] for z in a.numbers)) / len(a) for a in frames])
    ref_f = np.concatenate([a.arrays["forces_xtb"] for a in frames])
    return {"energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(pred["energy"] - ref_e))),
            "forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(pred["forces"] - ref_f)))}


def drift(potential, original: Dict[str, np.ndarray], frames) -> Dict[str, float]:
    pred = predictions(potential, frames)
    return {"energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(pred["energy"] - original["energy"]))),
            "forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(pred["forces"] - original["forces"])))}


def run(out: Path, name: str, base: Path, train: Path, replay: Path | None, args) -> Path:
    """Fine-tune (resumable); returns the run's best model."""
    from mlff.train.config import TrainConfig
    from mlff.train.trainer import Trainer

    folder = out / name
    best = folder / "best_model.pt"
    if (folder / "done").exists():
        return best
    finetune = {"e0s": "refit", "seed": 0}
    if replay is not None:
        finetune.update(replay=str(replay), replay_count=200)
    cfg = TrainConfig.from_dict({
        "model": {"type": "mace"}, "init_from": str(base), "finetune": finetune, "out": str(folder),
        "data": {"train": str(train), "valid_fraction": 0.1, **KEYS}, "seed": 0,
        "loss": {"energy": args.energy_weight, "forces": 100.0},
        "optim": {"lr": args.lr, "batch_size": 8, "max_epochs": args.epochs, "ema_decay": 0.99,
                  "scheduler": "cosine", "checkpoint_every_steps": 20}})
    trainer = Trainer(cfg, progress=not args.no_progress)
    if (folder / "checkpoint.pt").exists():
        trainer.resume()
    trainer.train()
    (folder / "done").write_text("finished\n")
    return best


def plot(result: Dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlff.atomic import atomic_savefig

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = ["imported (E0 refit)", "fine-tuned", "fine-tuned + replay"]
    test = [result["test_before"], result["test_after"]["no_replay"], result["test_after"]["replay"]]
    axes[0].bar(labels, [t["forces_mae_meV_per_A"] for t in test], color=["grey", "C0", "C1"])
    axes[0].set_ylabel("force MAE vs GFN2-xTB (meV/A)")
    axes[0].set_title("(a) organic_gfn2 test set")
    d = [result["drift"]["no_replay"], result["drift"]["replay"]]
    axes[1].bar(labels[1:], [x["forces_mae_meV_per_A"] for x in d], color=["C0", "C1"])
    axes[1].set_ylabel("force change vs the original model (meV/A)")
    axes[1].set_title("(b) drift on the original domain (g2 H C N O)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--frames", type=int, default=300, help="organic_gfn2 training frames")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--energy-weight", type=float, default=10.0,
                   help="loss weight of per-atom energies (forces: 100); the new labels' energies "
                        "differ from ANI-1x's by far more than their forces")
    p.add_argument("--out", default=str(ROOT / "runs" / NAME))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    if not SOURCE.exists():
        print(f"skipped: {SOURCE} is absent (third-party models live in ../shared/pretrained)")
        return
    import ase.io
    import torch

    from mlff.atomic import atomic_write_extxyz, atomic_write_text
    from mlff.io import load_model, save_model
    from mlff.io_import.mace_torch import import_mace

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "ani1x_imported.pt"
    if not base.exists():
        potential, meta = import_mace(SOURCE)
        save_model(potential, base, metadata=meta)
    original = load_model(base)
    train = training_frames(out, args.frames, seed=0)
    replay_path = out / "replay_pool.extxyz"
    if not replay_path.exists():
        atomic_write_extxyz(replay_path, domain_frames(seed=1, copies=3))
    held_out = domain_frames(seed=2, copies=2)  # other geometries: never trained on
    test = [a for a in ase.io.read(DATA / "test.extxyz", ":") if len(a) > 1]

    from mlff.train.finetune import refit_e0s

    zero_shot, _ = refit_e0s(original, ase.io.read(train, ":"), KEYS["energy_key"])
    reference = predictions(original, held_out)
    result: Dict[str, object] = {
        "benchmark": NAME, "model": SOURCE.name, "training_frames": args.frames, "epochs": args.epochs,
        "lr": args.lr, "loss": {"energy": args.energy_weight, "forces": 100.0}, "replay_frames": 200, "held_out_domain_frames": len(held_out),
        "test_frames": len(test), "test_before": test_errors(zero_shot, test),
        "test_after": {}, "drift": {}, "versions": versions()}
    for name, replay in (("no_replay", None), ("replay", replay_path)):
        tuned = load_model(run(out, name, base, train, replay, args))
        result["test_after"][name] = test_errors(tuned, test)
        result["drift"][name] = drift(tuned, reference, held_out)
        result["finetune_" + name] = json.loads((out / name / "finetune.json").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{NAME}.json", json.dumps(result, indent=1))
    plot(result, RESULTS / f"{NAME}.png")
    print(json.dumps({k: result[k] for k in ("test_before", "test_after", "drift")}, indent=1))


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
