"""``mlff train`` and ``mlff eval``: the model side. Torch is imported only when they run."""

from __future__ import annotations

import argparse
import json

from mlff.data.label_settings import LabelSettings
from mlff.md_workflows.cli._common import COMMANDS, Subparsers, positive_int


def add_train(sub: Subparsers) -> None:
    """``mlff train CONFIG``."""
    p = sub.add_parser("train", help=COMMANDS["train"], description=(
        "Train a model as the YAML config says (see mlff/train/config.py). Checkpoints are "
        "written atomically to OUT/checkpoint.pt; after a kill, rerun with --resume."))
    p.add_argument("config", help="YAML training config")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--finalize", action="store_true", help=(
        "do not train: recalibrate (ensembles), evaluate and export the run's current "
        "best_model.pt, e.g. to use a run that is still going"))
    p.add_argument("--nproc", type=positive_int, default=1, help=(
        "data-parallel processes on this machine (torch.distributed: gloo on CPU, nccl on GPU); "
        "each takes a share of every batch, the loss curve is that of one process with the same "
        "batch_size. Across machines: torchrun/srun -m mlff.md_workflows.cli train CONFIG"))
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume, or finalize) the run of ``args.config``; print its summary.

    The output folder is checked for write access before anything is built and locked for the
    run (:mod:`mlff.run_lock`; under torchrun/srun by rank 0), and a run that fails before
    writing anything leaves no empty folder behind."""
    import os

    from mlff.atomic import check_writable, removed_if_left_empty
    from mlff.run_lock import run_lock
    from mlff.train.config import TrainConfig

    if args.nproc > 1 and args.finalize:
        raise ValueError("--finalize runs in one process; drop --nproc")
    out = TrainConfig.from_yaml(args.config).out  # validates the config before torch is imported
    check_writable(out, "training output folder")
    from mlff.train.distributed import rank_world, run_training_parallel
    from mlff.train.trainer import run_training

    launched_rank = int(os.environ.get("RANK", "0"))  # torchrun/srun set it before the group exists
    guard = run_lock(out, "mlff train") if launched_rank == 0 else removed_if_left_empty(out)
    with guard:
        if args.nproc > 1:
            run_training_parallel(args.config, args.nproc, resume=args.resume)
            return 0
        summary = run_training(args.config, resume=args.resume, finalize_only=args.finalize)
    if rank_world()[0] == 0:  # under torchrun every rank gets here; rank 0 reports
        print(json.dumps(summary, default=str))
    return 0


def add_eval(sub: Subparsers) -> None:
    """``mlff eval MODEL DATA...``."""
    d = LabelSettings()
    p = sub.add_parser("eval", help=COMMANDS["eval"], description=COMMANDS["eval"])
    p.add_argument("model", help="model file (.pt written by mlff train) or 'default' "
                   "(the shipped ensemble)")
    p.add_argument("data", nargs="+", help="labelled files")
    p.add_argument("--out", default="eval", help="folder for eval.json and parity plots")
    p.add_argument("--energy-key", default=d.energy_key)
    p.add_argument("--forces-key", default=d.forces_key)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate ``args.model`` on ``args.data``; print the errors per file."""
    from mlff.data.dataset import DataKeys
    from mlff.io import model_path
    from mlff.train.evaluate import evaluate

    keys = DataKeys(energy=args.energy_key, forces=args.forces_key, stress=None, virial=None)
    results = evaluate(str(model_path(args.model)), args.data, args.out, keys, args.batch_size)
    for name, m in results.items():
        if name == "model":
            continue
        e, f = m["energy_per_atom_meV"], m["forces_meV_per_A"]
        print(f"{name}: energy MAE {e['mae']:.2f} RMSE {e['rmse']:.2f} meV/atom; forces MAE "
              f"{f['mae']:.1f} RMSE {f['rmse']:.1f} meV/A ({e['n']} structures)")
        for el, fe in m["forces_meV_per_A_by_element"].items():
            print(f"    {el}: force MAE {fe['mae']:.1f} meV/A")
        if "uncertainty" in m:
            u = m["uncertainty"]
            raw, cal = u["components_raw"], u["components_recalibrated"]
            print(f"    ensemble: Spearman(force std, error) per atom {u['spearman_per_atom']:.2f}, "
                  f"per structure {u['spearman_per_structure']:.2f}; miscalibration area "
                  f"{raw['miscalibration_area']:.3f} raw, {cal['miscalibration_area']:.3f} "
                  f"recalibrated (x{u['std_scale']:.2f}); NLL {raw['nll']:.2f} raw, {cal['nll']:.2f}")
    print(f"written to {args.out}/eval.json, parity plots (and calibration plots for ensembles)")
    return 0
