"""mlff's MACE against mace-torch 0.3.16 with identical hyperparameters, same machine, same run.

Hyperparameters: hidden 64x0e+64x1o, max_ell 3, correlation 3, r_cut 5 A, 2 interactions,
8 Bessel functions, p=5, radial MLP [64,64,64], readout MLP 16. Energy + forces per call on a
prebuilt graph (median of repeats), float32 and float64, 2 threads: ethanol (9 atoms) and
periodic water boxes of 192 and 1,536 atoms at 1 g/cm^3. Each (side, system, dtype) runs in its
own process, so peak memory (max RSS) is per run.

mace-torch pins e3nn 0.4.4, so it lives in its own virtual environment, benchmarks/.peer-venv
(created here on first use; ignored by git).

``import mlff`` raises glibc's malloc thresholds (mlff/allocator.py); mace-torch runs as shipped,
and once more with the same settings through glibc's environment variables
(``peer_malloc_tuned_ms_per_call``), so the share of the speedup that is the allocator is visible.

Usage: python benchmarks/mace_vs_peer.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import benchmark_lock, record, versions, write_results  # noqa: E402
from neighbors import water_box  # noqa: E402

PEER_VENV = HERE / ".peer-venv"
PEER = "mace-torch==0.3.16"


def ensure_peer() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import mace"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "torch==2.9.1", PEER], check=True)
    return python


def systems(tmp: Path):
    from ase import Atoms
    from ase.build import molecule

    out = {}
    eth = molecule("CH3CH2OH")
    out["ethanol"] = eth
    for n in (192, 1536):
        pos, cell = water_box(n, seed=1)
        out[f"water_box_{n}"] = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    paths = {}
    import ase.io

    for name, atoms in out.items():
        paths[name] = tmp / f"{name}.xyz"
        ase.io.write(paths[name], atoms, format="extxyz")
    return out, paths


#: glibc malloc environment equivalent to what ``import mlff`` sets (mlff/allocator.py)
MALLOC_TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def run_side(python: str, side: str, path: Path, dtype: str, threads: int, repeats: int,
             extra_env: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
               PYTHONWARNINGS="ignore", **(extra_env or {}))
    res = subprocess.run([python, str(HERE / "_mace_side.py"), side, str(path), dtype, str(threads),
                          str(repeats)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{side} failed on {path.name} {dtype}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--systems", nargs="*", default=["ethanol", "water_box_192", "water_box_1536"],
                        help="subset of systems to run")
    parser.add_argument("--no-peer-malloc-tuned", action="store_true",
                        help="skip the extra peer run with mlff's glibc malloc settings (import "
                        "mlff raises the mmap/trim thresholds; the extra run shows how much of "
                        "the speedup that is)")
    args = parser.parse_args()
    peer_python = str(ensure_peer())
    peer_version = subprocess.run([peer_python, "-c", "import importlib.metadata as m; "
                                   "print(m.version('mace-torch'), m.version('e3nn'))"],
                                  capture_output=True, text=True).stdout.split()
    vers = versions("e3nn")
    vers["peer"] = f"mace-torch {peer_version[0]} (e3nn {peer_version[1]})"
    records, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        structures, paths = systems(Path(tmp))
        for name, atoms in structures.items():
            if name not in args.systems:
                continue
            for dtype in ("float32", "float64"):
                ours = run_side(sys.executable, "mlff", paths[name], dtype, args.threads, args.repeats)
                peer = run_side(peer_python, "mace-torch", paths[name], dtype, args.threads, args.repeats)
                extra = {}
                if not args.no_peer_malloc_tuned:
                    tuned = run_side(peer_python, "mace-torch", paths[name], dtype, args.threads,
                                     args.repeats, MALLOC_TUNED_ENV)
                    extra = dict(peer_malloc_tuned_ms_per_call=tuned["ms_per_call"],
                                 speedup_vs_peer_malloc_tuned=tuned["ms_per_call"] / ours["ms_per_call"])
                common = dict(dtype=dtype, threads=args.threads, vers=vers, **extra)
                records.append(record("mace_vs_peer", name, len(atoms), "ms_per_call",
                                      ours["ms_per_call"], f"mace-torch {peer_version[0]}",
                                      peer["ms_per_call"], params=ours["params"],
                                      peer_params=peer["params"], max_rss_MB=ours["max_rss_MB"],
                                      peer_max_rss_MB=peer["max_rss_MB"], **common))
                rows.append((name, len(atoms), dtype, ours, peer))
                print(f"{name} {dtype}: mlff {ours['ms_per_call']:.1f} ms, mace-torch "
                      f"{peer['ms_per_call']:.1f} ms", file=sys.stderr)
    # systems not rerun keep their previous records (one per system and dtype)
    path = write_results("mace_vs_peer", records, keep_previous_by=("system", "dtype"))
    print(f"results: {path}\n")
    print("| system | atoms | dtype | mlff (ms) | mace-torch (ms) | speedup | params mlff / peer | max RSS MB mlff / peer |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, n, dtype, o, p in rows:
        print(f"| {name} | {n} | {dtype} | {o['ms_per_call']:.1f} | {p['ms_per_call']:.1f} | "
              f"{p['ms_per_call'] / o['ms_per_call']:.2f}x | {o['params']:,} / {p['params']:,} | "
              f"{o['max_rss_MB']:.0f} / {p['max_rss_MB']:.0f} |")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
