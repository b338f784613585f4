"""Training at an equal wall-clock budget: ``mlff train`` against mace-torch's ``mace_run_train``.

What it compares: the test force MAE each tool reaches when both train the same single MACE
model on the same data for the same wall-clock time on the same cores, and how many training
configurations per second each pushes through. The bar (issue 4): mlff's test force MAE <=
mace-torch's at equal budget.

Protocol
- Data: the organic GFN2-xTB dataset (data/datasets/organic_gfn2): train.extxyz to train (its
  four isolated atoms included on both sides: mace-torch gets ``--keep_isolated_atoms True``),
  val.extxyz to validate (``--valid_file``), test.extxyz and test_heldout_molecules.extxyz to
  test. Energies ``energy_xtb`` (eV), forces ``forces_xtb`` (eV/A).
- Same hyperparameters: one model (no ensemble), channels 32 (hidden 32x0e+32x1o), max_ell 2,
  correlation 3, r_cut 5 A, 2 interactions, 8 Bessel functions, polynomial cutoff p = 5, radial
  MLP [64, 64, 64], readout MLP 16, float32; isolated-atom E0s and average number of neighbours
  (10.57) from stats.json on both sides; scale = force RMS and shift = mean interaction energy per
  atom, each tool computing them from the training data (mace-torch: ``--model ScaleShiftMACE``;
  its default ``MACE`` has no shift), first interaction without residual
  (``--interaction_first RealAgnosticInteractionBlock``, as mlff); loss = 1 x (energy per
  atom)^2 + 100 x force components^2, Adam (amsgrad) lr 0.01 without weight decay
  (mace-torch's default is 5e-7), gradient clipping 10, batch 8 (validation 16), EMA 0.99,
  plateau scheduler (factor 0.8, patience 5), validation every epoch, seed 0.
- Equal budget: ``--budget-s`` seconds (default 1200) of training loop on ``--threads`` threads
  (default 2; OMP_NUM_THREADS and MKL_NUM_THREADS) for each side, run one after the other, never
  together. The clock starts when the training loop starts (data loading, neighbour lists and
  statistics are excluded on both sides: ``peer_setup_s``, ``ours_process_wall_s``; mace-torch's
  validation before its first epoch is inside its budget). mlff stops itself
  (``optim.max_seconds``, checked after every step: an epoch whose last step started inside the
  budget is still validated, otherwise the partial epoch is dropped). ``mace_run_train`` has no
  such option: it runs with a large ``--max_num_epochs``; once its log says "Started training"
  and the budget has passed, the same rule is applied from its per-step results file (if the
  epoch's last step started inside the budget, its validation and checkpoint are awaited), then
  its process group gets SIGTERM (SIGKILL 15 s later).
- The model each side is judged by: the best-validation EMA weights of a completed epoch
  (mlff's ``model.pt``; mace-torch's newest checkpoint, which it writes, with the EMA weights,
  only when an epoch improves the validation loss; ``--keep_checkpoints`` keeps the previous
  ones, since mace-torch deletes the old file before writing the new one and a stop during the
  write would otherwise leave none). The mace-torch model is rebuilt from the checkpoint by
  benchmarks/_train_peer_side.py with mace-torch's own code and evaluated with
  ``mace_eval_configs``; mlff's with its Potential. Both predictions go through the same metric
  code here: force MAE over all components (eV/A) and energy MAE per atom. As a check of the
  rebuild, each side's validation force MAE is recomputed and compared with its own log.
- Throughput: configurations in all optimiser steps (partial last epoch included; mace-torch
  drops the last incomplete batch of each epoch) divided by the training-loop seconds.
- Learning curve: validation force MAE against training wall time for both sides, from
  metrics.jsonl (mlff; time at the end of the epoch's steps) and mace-torch's log (time of its
  validation line), in benchmarks/results/<results-name>.png.

Run it on an otherwise idle machine: with 2 OpenMP threads on 2 cores that other jobs also use,
the threads wait on each other and a training step costs 10-100x more (seen here: 10-17 s per
step with 2 threads, 0.1 s with 1, under a load of 5); on a busy machine compare with --threads 1.

Results: benchmarks/results/<results-name>.json (one record per test file, metric
``test_force_mae_eV_per_A``; ``speedup`` = peer MAE / mlff MAE, above 1 means mlff wins) and a
markdown table on stdout. Work files in runs/train_vs_peer/<results-name>/ (wiped at the start;
not resumable).

Usage: python benchmarks/train_vs_peer.py [--budget-s 1200] [--threads 2]
       [--results-name train_vs_peer]
Smoke test (a few minutes; first N frames of the train/val splits, results under another name):
       python benchmarks/train_vs_peer.py --budget-s 90 --threads 1 --train-subset 200
           --valid-subset 100 --results-name train_vs_peer_smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mlff.atomic import atomic_savefig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

DATA = ROOT / "data" / "datasets" / "organic_gfn2"
PEER_VENV = HERE / ".peer-venv"
PEER = "mace-torch==0.3.16"
ENERGY_KEY, FORCES_KEY = "energy_xtb", "forces_xtb"
TEST_FILES = ("test.extxyz", "test_heldout_molecules.extxyz")
PEER_NAME = "mace_train_vs_peer"
SEED = 0

#: the shared hyperparameters (model: the default model's architecture, one member)
HYPER = dict(channels=32, max_L=1, max_ell=2, correlation=3, r_cut=5.0, num_interactions=2,
             num_bessel=8, cutoff_p=5, radial_mlp=[64, 64, 64], readout_mlp=16, dtype="float32",
             batch_size=8, valid_batch_size=16, lr=0.01, energy_weight=1.0, forces_weight=100.0,
             ema_decay=0.99, plateau_factor=0.8, plateau_patience=5, grad_clip=10.0, seed=SEED)

_LIVE: List[subprocess.Popen] = []  # process groups to stop if this script is interrupted


# --- processes -----------------------------------------------------------------------------

def _start(cmd: Sequence[str], log: Path, env: Dict[str, str], cwd: Path) -> subprocess.Popen:
    fh = open(log, "w")
    proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(cwd),
                            start_new_session=True)  # own process group: stopped as a whole
    fh.close()
    _LIVE.append(proc)
    return proc


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    if proc in _LIVE:
        _LIVE.remove(proc)


def _stop_all(*_: object) -> None:
    for proc in list(_LIVE):
        _stop(proc, grace=5.0)


def _env(threads: int, **extra: str) -> Dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONWARNINGS="ignore", TQDM_MININTERVAL="30", **extra)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


# --- data and metrics ----------------------------------------------------------------------

def read_frames(path: Path):
    import ase.io

    return ase.io.read(str(path), index=":")


def stats() -> Dict[str, object]:
    return json.loads((DATA / "stats.json").read_text())


def e0s_by_z() -> Dict[int, float]:
    from ase.data import atomic_numbers

    return {atomic_numbers[s]: float(e) for s, e in stats()["e0s_eV"].items()}


def errors(frames, energies: np.ndarray, forces: np.ndarray) -> Dict[str, float]:
    """The one metric code for both sides: energy per atom (meV/atom) and force components
    (eV/A and meV/A), MAE and RMSE, of predictions against the file's labels."""
    n = np.array([len(a) for a in frames], dtype=float)
    e_ref = np.array([a.info[ENERGY_KEY] for a in frames], dtype=float)
    f_ref = np.concatenate([a.arrays[FORCES_KEY] for a in frames]).astype(float)
    if forces.shape != f_ref.shape or energies.shape != e_ref.shape:
        raise ValueError(f"prediction shapes {energies.shape}, {forces.shape} do not match the "
                         f"labels {e_ref.shape}, {f_ref.shape}")
    de = (energies - e_ref) / n
    df = forces - f_ref
    return {"force_mae_eV_per_A": float(np.abs(df).mean()),
            "force_rmse_eV_per_A": float(np.sqrt((df**2).mean())),
            "energy_mae_meV_per_atom": 1e3 * float(np.abs(de).mean()),
            "energy_rmse_meV_per_atom": 1e3 * float(np.sqrt((de**2).mean())),
            "n_configs": len(frames), "n_atoms": int(n.sum())}


def predict_mlff(model_path: Path, data_path: Path):
    """mlff's predictions (energies [B], forces [N, 3], file order), batches of 16."""
    import torch

    from mlff import graph as G
    from mlff.data.dataset import DataKeys, GraphDataset
    from mlff.io import load_model

    pot = load_model(str(model_path))
    dtype = next(pot.parameters()).dtype
    keys = DataKeys(energy=ENERGY_KEY, forces=FORCES_KEY, stress=None, virial=None)
    ds = GraphDataset(str(data_path), pot.r_cut, keys, list(pot.model.config.elements),
                      ("energy", "forces"), dtype)
    energies, forces = [], []
    for k in range(0, len(ds), 16):
        pred = pot(G.collate(ds.graphs[k : k + 16]), compute_forces=True)
        energies.append(pred["energy"].detach().to(torch.float64).numpy())
        forces.append(pred["forces"].detach().to(torch.float64).numpy())
    return np.concatenate(energies), np.concatenate(forces)


def predict_peer(model_path: Path, data_path: Path, out: Path, threads: int):
    """mace-torch's predictions through ``mace_eval_configs`` (its extxyz output, read back)."""
    cmd = [str(PEER_VENV / "bin" / "mace_eval_configs"), "--configs", str(data_path), "--model",
           str(model_path), "--output", str(out), "--default_dtype", HYPER["dtype"],
           "--batch_size", "16", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env=_env(threads, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))
    if res.returncode != 0:
        raise RuntimeError(f"mace_eval_configs failed on {data_path.name}:\n{res.stderr[-3000:]}")
    frames = read_frames(out)
    return (np.array([a.info["MACE_energy"] for a in frames], dtype=float),
            np.concatenate([a.arrays["MACE_forces"] for a in frames]).astype(float))


# --- mlff side -----------------------------------------------------------------------------

def mlff_config(train: Path, valid: Path, out: Path, budget_s: float) -> Dict[str, object]:
    h = HYPER
    e0 = e0s_by_z()
    return {
        "model": {"type": "mace", "ensemble_size": 1, "channels": h["channels"], "max_L": h["max_L"],
                  "max_ell": h["max_ell"], "correlation": h["correlation"], "r_cut": h["r_cut"],
                  "num_interactions": h["num_interactions"], "num_bessel": h["num_bessel"],
                  "cutoff_p": h["cutoff_p"], "radial_mlp": h["radial_mlp"],
                  "readout_mlp": h["readout_mlp"], "dtype": h["dtype"],
                  # elements are species-ordered by atomic number (H C N O)
                  "e0s": [e0[z] for z in sorted(e0)],
                  "avg_num_neighbors": float(stats()["avg_num_neighbors"])},
        "data": {"train": str(train), "valid": str(valid), "test": [],
                 "energy_key": ENERGY_KEY, "forces_key": FORCES_KEY},
        "loss": {"energy": h["energy_weight"], "forces": h["forces_weight"]},
        "optim": {"optimizer": "adam", "amsgrad": True, "lr": h["lr"], "weight_decay": 0.0,
                  "batch_size": h["batch_size"], "valid_batch_size": h["valid_batch_size"],
                  "max_epochs": 100000, "max_seconds": float(budget_s), "scheduler": "plateau",
                  "plateau_factor": h["plateau_factor"], "plateau_patience": h["plateau_patience"],
                  "ema_decay": h["ema_decay"], "grad_clip": h["grad_clip"]},
        "seed": h["seed"],
        "out": str(out),
    }


def run_mlff(work: Path, train: Path, valid: Path, n_train: int, budget_s: float,
             threads: int) -> Dict[str, object]:
    import yaml

    work.mkdir(parents=True)
    out = work / "out"
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(mlff_config(train, valid, out, budget_s), sort_keys=False))
    exe = Path(sys.executable).parent / "mlff"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                          "import sys; from mlff.md_workflows.cli import main; sys.exit(main())"]
    log = work / "train.log"
    t0 = time.monotonic()
    proc = _start(cmd + ["train", str(cfg)], log, _env(threads), ROOT)
    try:
        rc = proc.wait(budget_s + 3600)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise RuntimeError(f"mlff train ran past budget + 1 h; log tail:\n{_tail(log)}")
    _stop(proc)
    wall = time.monotonic() - t0
    if not (out / "checkpoint.pt").exists():
        raise RuntimeError(f"mlff train failed (rc {rc}); log tail:\n{_tail(log)}")
    from mlff.train.checkpoint import load_checkpoint

    state = load_checkpoint(out / "checkpoint.pt", restore_rng=False)
    history = []
    if (out / "metrics.jsonl").exists():
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    epochs, partial = int(state["epoch"]), int(state["batch_in_epoch"])
    configs = epochs * n_train + min(partial * HYPER["batch_size"], n_train)
    train_s = float(state["elapsed"])
    model = out / "model.pt" if (out / "model.pt").exists() else out / "best_model.pt"
    best = min(history, key=lambda r: r["valid_loss"]) if history else None
    params = None
    if model.exists():
        from mlff.io import load_model

        params = sum(p.numel() for p in load_model(str(model)).parameters())
    return {
        "model": model if model.exists() else None, "rc": rc, "wall_s": wall, "params": params,
        "training_s": train_s, "epochs": epochs, "steps": int(state["step"]),
        "configs": configs, "configs_per_s": configs / train_s if train_s else None,
        "best_epoch": best["epoch"] - 1 if best else None,  # 0-based, as mace-torch counts
        "best_valid_force_mae_logged_eV_per_A": best["forces_meV_per_A"]["mae"] / 1e3 if best else None,
        "curve": [(float(r["seconds"]), r["forces_meV_per_A"]["mae"] / 1e3) for r in history],
    }


# --- mace-torch side -----------------------------------------------------------------------

def ensure_peer() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    if subprocess.run([str(python), "-c", "import mace"], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "torch==2.9.1", PEER], check=True)
    return python


def peer_argv(train: Path, valid: Path, work: Path) -> List[str]:
    h = HYPER
    e0 = e0s_by_z()
    return [
        "--name", PEER_NAME, "--seed", str(h["seed"]), "--device", "cpu",
        "--default_dtype", h["dtype"], "--work_dir", str(work),
        "--log_dir", str(work / "logs"), "--checkpoints_dir", str(work / "checkpoints"),
        "--results_dir", str(work / "results"), "--model_dir", str(work),
        "--downloads_dir", str(work / "downloads"),
        "--train_file", str(train), "--valid_file", str(valid),
        "--test_file", str(DATA / TEST_FILES[0]),
        "--energy_key", ENERGY_KEY, "--forces_key", FORCES_KEY,
        "--E0s", repr({z: e0[z] for z in sorted(e0)}), "--keep_isolated_atoms", "True",
        "--model", "ScaleShiftMACE", "--interaction_first", "RealAgnosticInteractionBlock",
        "--interaction", "RealAgnosticResidualInteractionBlock",
        "--num_channels", str(h["channels"]), "--max_L", str(h["max_L"]),
        "--max_ell", str(h["max_ell"]), "--correlation", str(h["correlation"]),
        "--r_max", str(h["r_cut"]), "--num_interactions", str(h["num_interactions"]),
        "--num_radial_basis", str(h["num_bessel"]), "--num_cutoff_basis", str(h["cutoff_p"]),
        "--radial_MLP", str(h["radial_mlp"]), "--MLP_irreps", f"{h['readout_mlp']}x0e",
        "--avg_num_neighbors", repr(float(stats()["avg_num_neighbors"])),
        "--compute_avg_num_neighbors", "False", "--scaling", "rms_forces_scaling",
        "--loss", "weighted", "--energy_weight", str(h["energy_weight"]),
        "--forces_weight", str(h["forces_weight"]),
        "--optimizer", "adam", "--amsgrad", "--lr", str(h["lr"]), "--weight_decay", "0.0",
        "--clip_grad", str(h["grad_clip"]), "--batch_size", str(h["batch_size"]),
        "--valid_batch_size", str(h["valid_batch_size"]),
        "--scheduler", "ReduceLROnPlateau", "--lr_factor", str(h["plateau_factor"]),
        "--scheduler_patience", str(h["plateau_patience"]),
        "--ema", "--ema_decay", str(h["ema_decay"]),
        "--max_num_epochs", "100000", "--patience", "100000", "--eval_interval", "1",
        "--keep_checkpoints", "--save_cpu", "--error_table", "PerAtomMAE", "--plot", "False",
    ]


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) \w+: (.*)$")
_EVAL_LINE = re.compile(r"^(Initial|Epoch (\d+)): head: \S+, loss=\s*([-\d.eE+naif]+), "
                        r"MAE_E_per_atom=\s*([-\d.eE+naif]+) meV, MAE_F=\s*([-\d.eE+naif]+) meV / A")


def parse_peer_log(path: Path):
    """(training start datetime, [(seconds since start, epoch or None, valid loss, force MAE eV/A)])."""
    start, evals = None, []
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") + dt.timedelta(milliseconds=int(m.group(2)))
        msg = m.group(3)
        if msg.startswith("Started training"):
            start = when
        e = _EVAL_LINE.match(msg)
        if e and start is not None:
            epoch = None if e.group(1) == "Initial" else int(e.group(2))
            evals.append(((when - start).total_seconds(), epoch, float(e.group(3)), float(e.group(5)) / 1e3))
    return start, evals


class _OptSteps:
    """Counts mace-torch's optimiser steps per epoch from its results file (one JSON line per
    step, ``mode: opt``), reading only what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.per_epoch = path, 0, {}  # type: ignore[var-annotated]

    def update(self) -> Dict[int, int]:
        if self.path.exists():
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # leave a half-written line for later
            self.offset += len(complete)
            for line in complete.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("mode") == "opt":
                    self.per_epoch[rec["epoch"]] = self.per_epoch.get(rec["epoch"], 0) + 1
        return self.per_epoch


def run_peer(work: Path, train: Path, valid: Path, n_train: int, budget_s: float, threads: int,
             setup_timeout_s: float = 3600, finish_timeout_s: float = 900):
    """Run ``mace_run_train`` and stop it when the budget is spent, with mlff's rule: an epoch
    whose last step started inside the budget is still validated (and checkpointed)."""
    work.mkdir(parents=True)
    argv = peer_argv(train, valid, work)
    (work / "argv.json").write_text(json.dumps(argv, indent=1))
    log = work / "logs" / f"{PEER_NAME}_run-{SEED}.log"
    stdout = work / "stdout.log"
    steps = _OptSteps(work / "results" / f"{PEER_NAME}_run-{SEED}_train.txt")
    steps_per_epoch = n_train // HYPER["batch_size"]  # mace-torch drops the incomplete batch
    t0 = time.monotonic()
    proc = _start([str(PEER_VENV / "bin" / "mace_run_train")] + argv, stdout,
                  _env(threads, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"), work)
    started = finishing = None
    stopped_by_budget = False
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if started is None:
                if log.exists() and "Started training" in log.read_text(errors="replace"):
                    started = now
                elif now - t0 > setup_timeout_s:
                    raise RuntimeError(f"mace_run_train did not start training within "
                                       f"{setup_timeout_s:.0f} s; log tail:\n{_tail(stdout)}")
            elif finishing is not None:
                # wait for the epoch's validation line, then for the next epoch's first step
                # (by then its checkpoint, if any, is written)
                if steps.update().get(finishing + 1, 0) > 0:
                    stopped_by_budget = True
                    break
                if now - started - budget_s > finish_timeout_s:
                    raise RuntimeError("mace_run_train did not finish its last validation in "
                                       f"{finish_timeout_s:.0f} s")
            elif now - started >= budget_s:
                per_epoch = steps.update()
                epoch = max(per_epoch, default=None)
                validated = epoch is not None and any(
                    ep == epoch for _, ep, _, _ in parse_peer_log(log)[1])
                if epoch is not None and per_epoch[epoch] >= steps_per_epoch - 1 and not validated:
                    finishing = epoch  # its last step started inside the budget
                else:
                    stopped_by_budget = True
                    break
            time.sleep(0.25)
        end = time.monotonic()
    finally:
        _stop(proc)
    if started is None:
        raise RuntimeError(f"mace_run_train exited (rc {proc.returncode}) before training; "
                           f"log tail:\n{_tail(stdout)}")
    if not stopped_by_budget:
        raise RuntimeError(f"mace_run_train exited (rc {proc.returncode}) inside the budget; "
                           f"log tail:\n{_tail(stdout)}")
    train_s = end - started
    _, evals = parse_peer_log(log)
    epochs = 1 + max((e[1] for e in evals if e[1] is not None), default=-1)
    n_steps = sum(steps.update().values())
    configs = n_steps * HYPER["batch_size"]  # drop_last: every training batch is full
    return {"argv": argv, "training_s": train_s, "setup_s": started - t0, "epochs": epochs,
            "steps": n_steps, "configs": configs, "configs_per_s": configs / train_s,
            "evals": evals, "curve": [(t, f) for t, ep, _, f in evals]}


def export_peer(work: Path, threads: int) -> Dict[str, object]:
    model = work / f"{PEER_NAME}.model"
    res = subprocess.run([str(PEER_VENV / "bin" / "python"), str(HERE / "_train_peer_side.py"),
                          str(work / "argv.json"), str(work / "checkpoints"), str(model)],
                         capture_output=True, text=True,
                         env=_env(threads, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))
    if res.returncode != 0:
        return {"model": None, "error": (res.stderr or res.stdout)[-2000:]}
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["model"] = model
    return info


# --- report --------------------------------------------------------------------------------

def plot_curves(path: Path, ours: List, peer: List, budget_s: float, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for curve, label, style in ((ours, "mlff", "o-"), (peer, "mace-torch 0.3.16", "s-")):
        if curve:
            t, f = zip(*curve)
            ax.plot(np.array(t) / 60, 1e3 * np.array(f), style, ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("validation force MAE (meV/A)")
    ax.set_title(f"organic GFN2: equal budget {budget_s / 60:.3g} min, {threads} "
                 f"thread{'s' if threads > 1 else ''}", fontsize=10)
    ax.axvline(budget_s / 60, color="grey", lw=0.8, ls=":")
    ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=1200.0,
                        help="training wall-clock seconds for each side (default 1200)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-name", default="train_vs_peer",
                        help="benchmarks/results/<name>.json/.png and runs/train_vs_peer/<name>/ "
                        "(use another name for trial runs)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N frames of train.extxyz only (smoke tests; the "
                        "benchmark uses all)")
    parser.add_argument("--valid-subset", type=int, default=None,
                        help="validate on the first N frames of val.extxyz only (smoke tests)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no strays

    import torch

    torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    work = ROOT / "runs" / "train_vs_peer" / args.results_name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    peer_python = str(ensure_peer())
    peer_vers = subprocess.run([peer_python, "-c", "import importlib.metadata as m; print(m.version("
                                "'mace-torch'), m.version('e3nn'), m.version('torch'))"],
                               capture_output=True, text=True).stdout.split()
    peer_label = f"mace-torch {peer_vers[0]} mace_run_train"
    vers = versions("e3nn", "ase")
    vers["peer"] = f"mace-torch {peer_vers[0]} (e3nn {peer_vers[1]}, torch {peer_vers[2]})"

    train, valid = DATA / "train.extxyz", DATA / "val.extxyz"
    n_train = len(read_frames(train))
    if args.train_subset or args.valid_subset:  # smoke tests: the first N frames only
        import ase.io

        for name, n in (("train", args.train_subset), ("valid", args.valid_subset)):
            if n:
                src = train if name == "train" else valid
                dst = work / f"{name}_first{n}.extxyz"
                frames = read_frames(src)[:n]
                ase.io.write(str(dst), frames, format="extxyz")
                if name == "train":
                    train, n_train = dst, len(frames)
                else:
                    valid = dst

    try:
        print(f"mlff: training for {args.budget_s:.0f} s on {args.threads} threads ...", file=sys.stderr)
        ours = run_mlff(work / "mlff", train, valid, n_train, args.budget_s, args.threads)
        print(f"mlff: {ours['epochs']} epochs, {ours['steps']} steps, {ours['configs_per_s']:.1f} "
              f"configs/s", file=sys.stderr)
        print(f"mace-torch: training for {args.budget_s:.0f} s ...", file=sys.stderr)
        peer = run_peer(work / "mace", train, valid, n_train, args.budget_s, args.threads)
        print(f"mace-torch: {peer['epochs']} epochs, {peer['steps']} steps, "
              f"{peer['configs_per_s']:.1f} configs/s", file=sys.stderr)
    finally:
        _stop_all()
    peer.update(export_peer(work / "mace", args.threads))

    # evaluation: same files, same metric code
    evals: Dict[str, Dict[str, Optional[Dict[str, float]]]] = {}
    eval_dir = work / "eval"
    eval_dir.mkdir()
    files = {name: DATA / name for name in TEST_FILES}
    files["valid"] = valid
    for name, path in files.items():
        frames = read_frames(path)
        row: Dict[str, Optional[Dict[str, float]]] = {"mlff": None, "peer": None}
        if ours["model"] is not None:
            row["mlff"] = errors(frames, *predict_mlff(ours["model"], path))
        if peer["model"] is not None:
            row["peer"] = errors(frames, *predict_peer(peer["model"], path,
                                                       eval_dir / f"mace_{path.name}", args.threads))
        evals[name] = row
    # check the rebuilt models against each tool's own validation log
    peer_logged = next((f for _, ep, _, f in peer["evals"] if ep == peer.get("epoch")), None)
    checks = {"mlff": {"epoch": ours["best_epoch"], "logged": ours["best_valid_force_mae_logged_eV_per_A"],
                       "recomputed": (evals["valid"]["mlff"] or {}).get("force_mae_eV_per_A")},
              "peer": {"epoch": peer.get("epoch"), "logged": peer_logged,
                       "recomputed": (evals["valid"]["peer"] or {}).get("force_mae_eV_per_A")}}
    for side, c in checks.items():
        if c["logged"] and c["recomputed"] and abs(c["recomputed"] / c["logged"] - 1) > 0.01:
            print(f"WARNING: {side} validation force MAE recomputed {c['recomputed']:.5f} differs "
                  f"from its log {c['logged']:.5f} by more than 1 %", file=sys.stderr)

    common = dict(
        dtype=HYPER["dtype"], threads=args.threads, vers=vers, budget_s=args.budget_s,
        train_file=str(train.relative_to(ROOT)),
        train_size=n_train, train_subset=args.train_subset, valid_subset=args.valid_subset,
        valid_file=str(valid.relative_to(ROOT)), hyperparameters=HYPER,
        ours_epochs_completed=ours["epochs"], peer_epochs_completed=peer["epochs"],
        ours_steps=ours["steps"], peer_steps=peer["steps"],
        ours_training_s=ours["training_s"], peer_training_s=peer["training_s"],
        peer_setup_s=peer["setup_s"], ours_process_wall_s=ours["wall_s"],
        ours_configs_per_s=ours["configs_per_s"], peer_configs_per_s=peer["configs_per_s"],
        throughput_ratio=(ours["configs_per_s"] / peer["configs_per_s"]
                          if peer["configs_per_s"] else None),
        ours_model_epoch=ours["best_epoch"], peer_model_epoch=peer.get("epoch"),
        ours_params=ours["params"], peer_params=peer.get("params"), peer_export_error=peer.get("error"),
        valid_force_mae_check_eV_per_A=checks,
    )
    records = []
    for name in TEST_FILES:
        o, p = evals[name]["mlff"], evals[name]["peer"]
        ref = o or p
        records.append(record(
            "train_vs_peer", f"organic_gfn2 {Path(name).stem}", ref["n_atoms"] if ref else 0,
            "test_force_mae_eV_per_A", o["force_mae_eV_per_A"] if o else None, peer_label,
            p["force_mae_eV_per_A"] if p else None, lower_is_better=True,
            n_configs=ref["n_configs"] if ref else None,
            force_mae_ratio=(o["force_mae_eV_per_A"] / p["force_mae_eV_per_A"]) if o and p else None,
            bar_met=(o["force_mae_eV_per_A"] <= p["force_mae_eV_per_A"]) if o and p else None,
            ours_energy_mae_meV_per_atom=o["energy_mae_meV_per_atom"] if o else None,
            peer_energy_mae_meV_per_atom=p["energy_mae_meV_per_atom"] if p else None,
            ours_force_rmse_eV_per_A=o["force_rmse_eV_per_A"] if o else None,
            peer_force_rmse_eV_per_A=p["force_rmse_eV_per_A"] if p else None,
            **common))
    path = write_results(args.results_name, records)
    png = RESULTS / f"{args.results_name}.png"
    plot_curves(png, ours["curve"], peer["curve"], args.budget_s, args.threads)

    def f(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    print(f"results: {path}\nlearning curve: {png}\ntotal time: {time.monotonic() - t_start:.0f} s\n")
    print(f"Equal budget {args.budget_s:.0f} s, {args.threads} threads, {HYPER['dtype']}, "
          f"{n_train} training configurations\n")
    print("| test set | configs | mlff force MAE (meV/A) | mace-torch force MAE (meV/A) | "
          "mlff / mace-torch | mlff E MAE (meV/atom) | mace-torch E MAE (meV/atom) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in TEST_FILES:
        o, p = evals[name]["mlff"], evals[name]["peer"]
        ratio = o["force_mae_eV_per_A"] / p["force_mae_eV_per_A"] if o and p else None
        print(f"| {Path(name).stem} | {(o or p or {}).get('n_configs', 'n/a')} | "
              f"{f(o and 1e3 * o['force_mae_eV_per_A'], '.1f')} | "
              f"{f(p and 1e3 * p['force_mae_eV_per_A'], '.1f')} | {f(ratio, '.2f')} | "
              f"{f(o and o['energy_mae_meV_per_atom'], '.2f')} | "
              f"{f(p and p['energy_mae_meV_per_atom'], '.2f')} |")
    print("\n| side | epochs | steps | training s | configs/s | model epoch | outside the loop s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| mlff | {ours['epochs']} | {ours['steps']} | {ours['training_s']:.0f} | "
          f"{ours['configs_per_s']:.1f} | {f(ours['best_epoch'], 'd')} | "
          f"{ours['wall_s'] - ours['training_s']:.0f} (setup + final save) |")
    print(f"| mace-torch | {peer['epochs']} | {peer['steps']} | {peer['training_s']:.0f} | "
          f"{peer['configs_per_s']:.1f} | {f(peer.get('epoch'), 'd')} | {peer['setup_s']:.0f} (setup) |")
    if peer.get("error"):
        print(f"\nmace-torch model not evaluated: {peer['error']}")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
