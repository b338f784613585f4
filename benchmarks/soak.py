"""Soak test of resume after kill -9 (issue 20): ``mlff md`` on alanine dipeptide with the shipped
default model, in ASE and in OpenMM, killed with SIGKILL at random intervals (20-120 s) and
resumed with ``--resume`` until it finishes; then every frame of its trajectory and every row of
its log are compared with one uninterrupted run of the same seed (bit-identical expected).

The ``train`` engine does the same for ``mlff train``: a MACE of the default model's member
size on a subset of the shipped GFN2-xTB dataset (data/datasets/organic_gfn2), checkpointing
every 10 steps, killed and resumed until done; then the final weights, optimizer and EMA state,
the best model and every row of metrics.jsonl are compared with an uninterrupted run.

Reports kills survived, frames lost or repeated, mismatching frames (for training: steps and
mismatching tensors or metric rows) and the wall-time overhead (all restarts included) in
results/soak.json. Resumable per engine: a finished engine's record is kept. Usage:
python benchmarks/soak.py [--steps 10000] [--engines ase openmm train] [--train-epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

ROOT = HERE.parent
NAME = "soak"
WORK = ROOT / "runs" / "soak"
STRUCTURE = ROOT / "data" / "examples" / "alanine_dipeptide.pdb"


def md_command(engine: str, out: Path, steps: int, report_every: int, resume: bool) -> list:
    mlff = str(Path(sys.executable).with_name("mlff"))
    cmd = [mlff, "md", str(STRUCTURE), "--engine", engine, "--ensemble", "nvt", "--steps", str(steps),
           "--report-every", str(report_every), "--seed", "1", "--threads", "1", "--extxyz", "--out", str(out),
           "--no-progress"]
    return cmd + (["--resume"] if resume else [])


#: the training run: one member of the default model's recipe (data/models/README.md)
TRAIN_MODEL = {"type": "mace", "channels": 32, "max_L": 1, "max_ell": 3, "correlation": 3, "r_cut": 5.0,
               "num_interactions": 2, "num_bessel": 8, "radial_mlp": [64, 64], "readout_mlp": 16}
DATASET = ROOT / "data" / "datasets" / "organic_gfn2"


def train_config(out: Path, epochs: int, frames: int) -> Path:
    """A training config on the first ``frames`` (train) and ``frames // 4`` (valid) frames of
    the shipped dataset, written next to ``out``."""
    import ase.io
    import yaml

    data = WORK / f"train_data_{frames}"
    if not (data / "valid.extxyz").exists():
        data.mkdir(parents=True, exist_ok=True)
        ase.io.write(data / "train.extxyz", ase.io.read(DATASET / "train.extxyz", f":{frames}"), format="extxyz")
        ase.io.write(data / "valid.extxyz", ase.io.read(DATASET / "val.extxyz", f":{frames // 4}"), format="extxyz")
    cfg = {"model": TRAIN_MODEL, "out": str(out), "seed": 0,
           "data": {"train": str(data / "train.extxyz"), "valid": str(data / "valid.extxyz"),
                    "energy_key": "energy_xtb", "forces_key": "forces_xtb"},
           "loss": {"energy": 1.0, "forces": 10.0},
           "optim": {"lr": 0.005, "batch_size": 8, "max_epochs": epochs, "ema_decay": 0.99,
                     "checkpoint_every_steps": 10}}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_command(out: Path, epochs: int, frames: int, resume: bool) -> list:
    mlff = str(Path(sys.executable).with_name("mlff"))
    cmd = [mlff, "train", str(train_config(out, epochs, frames))]
    return cmd + (["--resume"] if resume else [])


def command(engine: str, out: Path, args, resume: bool) -> list:
    if engine == "train":
        return train_command(out, args.train_epochs, args.train_frames, resume)
    return md_command(engine, out, args.steps, args.report_every, resume)


def environment(engine: str) -> dict:
    """One torch thread for training too (``mlff md`` gets ``--threads 1``)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"} if engine == "train" else dict(os.environ)


def checkpoint_name(engine: str) -> str:
    return "checkpoint.pt" if engine == "train" else "checkpoint.npz"


def reference(engine: str, args) -> float:
    out = WORK / f"{engine}_reference"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command(engine, out, args, False), check=True, capture_output=True, env=environment(engine))
    return time.perf_counter() - start


def soak(engine: str, args, low: float, high: float, seed: int) -> dict:
    out = WORK / f"{engine}_soak"
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    kills, starts = 0, 0
    start = time.perf_counter()
    while True:
        resume = (out / checkpoint_name(engine)).exists()
        proc = subprocess.Popen(command(engine, out, args, resume), env=environment(engine),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        starts += 1
        try:
            _, err = proc.communicate(timeout=rng.uniform(low, high))
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL
            proc.wait()
            kills += 1
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"{engine} run failed after {kills} kills:\n{err.decode()[-2000:]}")
        break
    return {"kills": kills, "starts": starts, "wall_s": time.perf_counter() - start}


def _tensors(tree, prefix=""):
    """Flatten a checkpoint's nested dicts/lists into {path: tensor or value}."""
    import torch

    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_tensors(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, (list, tuple)) and any(isinstance(v, (dict, list, tuple, torch.Tensor)) for v in tree):
        out = {}
        for i, v in enumerate(tree):
            out.update(_tensors(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): tree}


#: entries that differ between two runs by nature: timings, and the output folder
VOLATILE = {"elapsed", "seconds", "wall_s", "time", "out"}


def _comparable(tree):
    """``tree`` without :data:`VOLATILE` keys, JSON strings (the saved config, the history)
    parsed first."""
    if isinstance(tree, str) and tree[:1] in "[{":
        try:
            tree = json.loads(tree)
        except ValueError:
            return tree
    if isinstance(tree, dict):
        return {k: _comparable(v) for k, v in tree.items() if str(k) not in VOLATILE}
    if isinstance(tree, list):
        return [_comparable(v) for v in tree]
    return tree


def compare_training() -> dict:
    """Final checkpoint (weights, optimizer, EMA, step), best model and metric rows of the
    soaked run against the uninterrupted one, bit for bit."""
    import torch

    ref_dir, got_dir = WORK / "train_reference", WORK / "train_soak"
    a, b = (_tensors(_comparable(torch.load(d / "checkpoint.pt", weights_only=True))) for d in (ref_dir, got_dir))
    keys = list(a)

    def same(x, y):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
        return x == y

    mismatched = [k for k in keys if k not in b or not same(a[k], b[k])]
    best_a = _tensors(torch.load(ref_dir / "best_model.pt", weights_only=True))
    best_b = _tensors(torch.load(got_dir / "best_model.pt", weights_only=True))
    best_mismatched = [k for k in best_a if isinstance(best_a[k], torch.Tensor)
                       and not (k in best_b and same(best_a[k], best_b[k]))]
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (ref_dir, got_dir)]
    strip = [[_comparable(r) for r in rr] for rr in rows]
    epochs = [r.get("epoch") for r in rows[1]]
    return {"checkpoint_entries": len(keys), "checkpoint_entries_mismatched": len(mismatched),
            "mismatched_examples": mismatched[:5], "best_model_tensors": sum(isinstance(v, torch.Tensor) for v in best_a.values()),
            "best_model_tensors_mismatched": len(best_mismatched),
            "metric_rows_reference": len(rows[0]), "metric_rows_soak": len(rows[1]),
            "metric_rows_identical": sum(int(x == y) for x, y in zip(*strip)),
            "repeated_epochs": len(epochs) - len(set(epochs)), "step": int(b.get("step", -1))}


def compare(engine: str) -> dict:
    from ase.io import read

    ref = read(WORK / f"{engine}_reference" / "trajectory.extxyz", ":")
    got = read(WORK / f"{engine}_soak" / "trajectory.extxyz", ":")
    same = sum(int(np.array_equal(a.positions, b.positions)) for a, b in zip(ref, got))
    ref_log = (WORK / f"{engine}_reference" / "log.csv").read_text().splitlines()
    got_log = (WORK / f"{engine}_soak" / "log.csv").read_text().splitlines()
    steps = [line.split(",")[0] for line in got_log[1:]]
    return {"frames_reference": len(ref), "frames_soak": len(got), "frames_identical": same,
            "log_rows_identical": sum(int(a == b) for a, b in zip(ref_log, got_log)),
            "log_rows_reference": len(ref_log), "log_rows_soak": len(got_log),
            "repeated_steps": len(steps) - len(set(steps))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--report-every", type=int, default=50)
    p.add_argument("--engines", nargs="*", default=["ase", "openmm", "train"],
                   choices=["ase", "openmm", "train"])
    p.add_argument("--kill-after", type=float, nargs=2, default=[20.0, 120.0], metavar=("LOW", "HIGH"))
    p.add_argument("--train-epochs", type=int, default=8, help="train engine: epochs (default %(default)s)")
    p.add_argument("--train-frames", type=int, default=1200,
                   help="train engine: training frames from the shipped dataset (default %(default)s)")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{NAME}.json"
    records = json.loads(path.read_text()) if path.exists() else []
    for engine in args.engines:
        system = "organic_gfn2 mlff train" if engine == "train" else f"alanine dipeptide md {engine}"
        size = {"epochs": args.train_epochs, "frames": args.train_frames} if engine == "train" else {"steps": args.steps}
        if any(r["system"] == system and all(r.get(k) == v for k, v in size.items()) for r in records):
            continue
        ref_s = reference(engine, args)
        result = soak(engine, args, *args.kill_after, seed=0)
        if engine == "train":
            result.update(compare_training())
            ok = (result["checkpoint_entries_mismatched"] == 0 and result["best_model_tensors_mismatched"] == 0
                  and result["metric_rows_identical"] == result["metric_rows_reference"] == result["metric_rows_soak"])
            rec = record(NAME, system, None, "bit_identical", 1.0 if ok else 0.0, None, None, dtype="float64",
                         threads=1, vers=versions("torch", "e3nn"), reference_wall_s=ref_s,
                         overhead_percent=100.0 * (result["wall_s"] / ref_s - 1.0),
                         kill_interval_s=list(args.kill_after), **size, **result)
            summary = (f"{result['kills']} kills, {result['checkpoint_entries'] - result['checkpoint_entries_mismatched']}"
                       f"/{result['checkpoint_entries']} checkpoint entries and "
                       f"{result['best_model_tensors'] - result['best_model_tensors_mismatched']}/"
                       f"{result['best_model_tensors']} best-model tensors identical, "
                       f"{result['metric_rows_identical']}/{result['metric_rows_reference']} metric rows identical, "
                       f"{result['repeated_epochs']} repeated epochs")
        else:
            result.update(compare(engine))
            lost = result["frames_reference"] - result["frames_soak"]
            rec = record(NAME, system, 22, "frames_identical_percent",
                         100.0 * result["frames_identical"] / max(result["frames_reference"], 1), None, None,
                         dtype="model", threads=1, vers=versions("openmm", "ase"), steps=args.steps,
                         reference_wall_s=ref_s, overhead_percent=100.0 * (result["wall_s"] / ref_s - 1.0),
                         frames_lost=lost, kill_interval_s=list(args.kill_after), **result)
            summary = (f"{result['kills']} kills, {result['frames_identical']}/{result['frames_reference']} "
                       f"frames identical, {lost} lost, {result['repeated_steps']} repeated, "
                       f"{result['log_rows_identical']}/{result['log_rows_reference']} log rows identical")
        records = [r for r in records if r["system"] != rec["system"]] + [rec]
        write_results(NAME, records)
        print(f"{engine}: {summary}, wall {result['wall_s']:.0f} s vs {ref_s:.0f} s uninterrupted", flush=True)


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
