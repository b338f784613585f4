"""TensorNet vs MACE accuracy at matched size and equal wall-clock training budget, on the
project's GFN2-xTB organic dataset (data/datasets/organic_gfn2).

MACE: one member of the default model's recipe (data/examples/default_model.yaml: channels 32,
32x0e+32x1o, max_ell 2, correlation 3, radial MLP [64, 64, 64]); TensorNet: 2 layers, 32
exp-normal functions, channels chosen so that the parameter counts agree within 5 %. Both get
the same loss weights, optimiser, schedule (stage two from ``--stage-two-epoch``), batch size,
seed and ``--budget-s`` seconds of training (``optim.max_seconds``, summed over resumes),
then each is evaluated on the random test split and on the held-out molecules.

Resumable: each run lives in runs/tensornet_accuracy/<model>/ and is continued with the
trainer's own --resume after a stop; a finished run (model.pt) is not retrained. Results:
benchmarks/results/tensornet_accuracy.json and the table printed at the end.
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import benchmark_lock, record, versions, write_results  # noqa: E402

NAME = "tensornet_accuracy"
DATA = ROOT / "data" / "datasets" / "organic_gfn2"
MACE = dict(type="mace", channels=32, max_L=1, max_ell=2, correlation=3, r_cut=5.0, num_interactions=2,
            num_bessel=8, radial_mlp=[64, 64, 64], readout_mlp=16, dtype="float32")
TENSORNET = dict(type="tensornet", num_layers=2, num_rbf=32, r_cut=5.0, dtype="float32")


def n_params(model: dict) -> int:
    from mlff.models.registry import build_model

    cfg = {k: v for k, v in model.items() if k != "type"}
    return sum(p.numel() for p in build_model(model["type"], {"elements": (1, 6, 7, 8), **cfg}).parameters())


def matched_tensornet(target: int) -> dict:
    """TensorNet with the channel count whose parameter count is closest to ``target``."""
    best = min(range(8, 129, 2), key=lambda c: abs(n_params({**TENSORNET, "channels": c}) - target))
    return {**TENSORNET, "channels": best}


def recipe(model: dict, out: Path, budget_s: float, stage_two_epoch: int, max_epochs: int) -> dict:
    return {
        "model": model, "out": str(out), "seed": 0,
        "data": {"train": str(DATA / "train.extxyz"), "valid": str(DATA / "val.extxyz"),
                 "test": [str(DATA / "test.extxyz"), str(DATA / "test_heldout_molecules.extxyz")],
                 "energy_key": "energy_xtb", "forces_key": "forces_xtb", "e0s": "least_squares"},
        "loss": {"energy": 1.0, "forces": 100.0, "stage_two_epoch": stage_two_epoch,
                 "stage_two_energy": 1000.0, "stage_two_forces": 100.0, "stage_two_lr": 0.001},
        "optim": {"optimizer": "adam", "amsgrad": True, "lr": 0.01, "batch_size": 8,
                  "max_epochs": max_epochs, "max_seconds": budget_s, "scheduler": "plateau",
                  "plateau_factor": 0.8, "plateau_patience": 5, "ema_decay": 0.99,
                  "checkpoint_every_steps": 200},
    }


def train_one(name: str, model: dict, args) -> Path:
    from mlff.train.trainer import CHECKPOINT, run_training

    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "recipe.yaml"
    cfg = recipe(model, out, args.budget_s, args.stage_two_epoch, args.max_epochs)
    if config_path.exists() and yaml.safe_load(config_path.read_text()) != cfg:
        raise SystemExit(f"{config_path} holds another recipe: use another --out or delete it")
    config_path.write_text(yaml.safe_dump(cfg))
    if not (out / "model.pt").exists():
        run_training(str(config_path), resume=(out / CHECKPOINT).exists(), progress=not args.no_progress)
    return out


def summarise(name: str, out: Path) -> dict:
    from mlff.io import load_model_with_metadata

    report = json.loads((out / "eval" / "eval.json").read_text())
    potential, meta = load_model_with_metadata(out / "model.pt")
    splits = {}
    for split, values in report.items():
        if not isinstance(values, dict) or "forces_meV_per_A" not in values:
            continue
        splits[split] = {"force_mae_meV_per_A": values["forces_meV_per_A"]["mae"],
                         "energy_mae_meV_per_atom": values["energy_per_atom_meV"]["mae"]}
    return {"model": name, "params": sum(p.numel() for p in potential.parameters()),
            "training": meta.get("training", {}), "splits": splits}


def speed(model: Path) -> dict:
    """``{system: (atoms, median ms per energy + forces)}`` of a trained model through the ASE
    calculator (2 threads; graph building included) on ethanol and alanine dipeptide."""
    import ase.io
    import torch
    from ase.build import molecule

    from _common import median_time
    from mlff.assets_path import asset
    from mlff.calculators.ase import MLFFCalculator

    torch.set_num_threads(2)
    calc = MLFFCalculator(model=model)
    out = {}
    for system, atoms in (("ethanol", molecule("CH3CH2OH")),
                          ("alanine_dipeptide", ase.io.read(asset("examples/alanine_dipeptide_conformers.xyz"), 0))):
        def call():
            calc.reset()
            atoms.calc = calc
            atoms.get_forces()
        out[system] = (len(atoms), 1e3 * median_time(call, 20, warmup=3))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=3600.0, help="training seconds per model")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--stage-two-epoch", type=int, default=28)
    p.add_argument("--out", default=str(ROOT / "runs" / NAME))
    p.add_argument("--models", nargs="*", default=["mace", "tensornet"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=2, help="torch threads of both trainings")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    mace_params = n_params(MACE)
    models = {"mace": MACE, "tensornet": matched_tensornet(mace_params)}
    print(f"parameters: MACE {mace_params:,}, TensorNet {n_params(models['tensornet']):,} "
          f"(channels {models['tensornet']['channels']})", file=sys.stderr)
    results = {}
    for name in args.models:
        results[name] = summarise(name, train_one(name, models[name], args))
    records = []
    for name, res in results.items():
        for split, errs in res["splits"].items():
            for metric, value in errs.items():
                records.append(record(NAME, split, 0, metric, value, None, None, dtype="float32",
                                      threads=args.threads, vers=versions("e3nn"), model=name,
                                      params=res["params"], training=res["training"],
                                      budget_s=args.budget_s, hyperparameters=models[name]))
    for name in args.models:
        for system, (n_atoms, ms) in speed(Path(args.out) / name / "model.pt").items():
            records.append(record(NAME, system, n_atoms, "ms_per_energy_forces_ase", ms, None, None, dtype="float32",
                                  threads=2, vers=versions("e3nn"), model=name, params=results[name]["params"]))
            print(f"{name} {system}: {ms:.1f} ms per energy + forces (ASE calculator, 2 threads)", file=sys.stderr)
    write_results(NAME, records, keep_previous_by=("system", "metric", "model"))
    print("| model | params | epochs | split | force MAE (meV/A) | energy MAE (meV/atom) |")
    print("|---|---:|---:|---|---:|---:|")
    for name, res in results.items():
        for split, errs in res["splits"].items():
            print(f"| {name} | {res['params']:,} | {res['training'].get('epochs_run')} | {split} | "
                  f"{errs['force_mae_meV_per_A']:.1f} | {errs['energy_mae_meV_per_atom']:.2f} |")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
