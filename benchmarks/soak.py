"""Soak test of resume after kill -9 (issue 20): ``mlff md`` on alanine dipeptide with the shipped
default model, in ASE and in OpenMM, killed with SIGKILL at random intervals (20-120 s) and
resumed with ``--resume`` until it finishes; then every frame of its trajectory and every row of
its log are compared with one uninterrupted run of the same seed (bit-identical expected).

Reports kills survived, frames lost or repeated, mismatching frames and the wall-time overhead
(all restarts included) in results/soak.json. Resumable per engine: a finished engine's record
is kept. Usage: python benchmarks/soak.py [--steps 10000] [--engines ase openmm]
"""

from __future__ import annotations

import argparse
import json
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


def reference(engine: str, steps: int, report_every: int) -> float:
    out = WORK / f"{engine}_reference"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(md_command(engine, out, steps, report_every, False), check=True, capture_output=True)
    return time.perf_counter() - start


def soak(engine: str, steps: int, report_every: int, low: float, high: float, seed: int) -> dict:
    out = WORK / f"{engine}_soak"
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    kills, starts = 0, 0
    start = time.perf_counter()
    while True:
        resume = (out / "checkpoint.npz").exists()
        proc = subprocess.Popen(md_command(engine, out, steps, report_every, resume),
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
    p.add_argument("--engines", nargs="*", default=["ase", "openmm"])
    p.add_argument("--kill-after", type=float, nargs=2, default=[20.0, 120.0], metavar=("LOW", "HIGH"))
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{NAME}.json"
    records = json.loads(path.read_text()) if path.exists() else []
    for engine in args.engines:
        if any(r["system"] == f"alanine dipeptide md {engine}" and r.get("steps") == args.steps for r in records):
            continue
        ref_s = reference(engine, args.steps, args.report_every)
        result = soak(engine, args.steps, args.report_every, *args.kill_after, seed=0)
        result.update(compare(engine))
        lost = result["frames_reference"] - result["frames_soak"]
        rec = record(NAME, f"alanine dipeptide md {engine}", 22, "frames_identical_percent",
                     100.0 * result["frames_identical"] / max(result["frames_reference"], 1), None, None,
                     dtype="model", threads=1, vers=versions("openmm", "ase"), steps=args.steps,
                     reference_wall_s=ref_s, overhead_percent=100.0 * (result["wall_s"] / ref_s - 1.0),
                     frames_lost=lost, kill_interval_s=list(args.kill_after), **result)
        records = [r for r in records if r["system"] != rec["system"]] + [rec]
        write_results(NAME, records)
        print(f"{engine}: {result['kills']} kills, {result['frames_identical']}/{result['frames_reference']} "
              f"frames identical, {lost} lost, {result['repeated_steps']} repeated, "
              f"{result['log_rows_identical']}/{result['log_rows_reference']} log rows identical, wall "
              f"{result['wall_s']:.0f} s vs {ref_s:.0f} s uninterrupted", flush=True)


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
