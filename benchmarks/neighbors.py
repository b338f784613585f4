"""Neighbour-list benchmark: mlff's two backends against ase.neighborlist and vesin-torch.

Water boxes at 1 g/cm^3 (1k, 10k, 100k atoms), cutoff 5 A, full lists with periodic shifts,
float64, 2 threads, CPU. Reports ms per call (median of repeats) and, for the pure-PyTorch
backend, microseconds per atom at each size (it must scale linearly).

Usage: python benchmarks/neighbors.py [--sizes 1000 10000 100000] [--threads 2]
Writes benchmarks/results/neighbors.json and prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_lock, median_time, record, versions, write_results  # noqa: E402

from mlff.neighbors import torch_neighbor_list, vesin_neighbor_list  # noqa: E402

WATER_MOLECULES_PER_A3 = 0.033427  # 1 g/cm^3
CUTOFF = 5.0


def water_box(n_atoms: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """About ``n_atoms`` atoms of water on a jittered cubic lattice at 1 g/cm^3, random
    orientations. Returns positions [N, 3] (A) and the cubic cell [3, 3] (A)."""
    rng = np.random.default_rng(seed)
    n_mol = int(round(n_atoms / 3))
    box = (n_mol / WATER_MOLECULES_PER_A3) ** (1 / 3)
    m = int(np.ceil(n_mol ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_mol]
    centres = (grid + 0.5 + rng.normal(0, 0.05, grid.shape)) * (box / m)
    # O at the centre, two H at 0.9572 A with a 104.52 degree angle, random rotation
    angle = np.deg2rad(104.52)
    local = np.array([[0, 0, 0], [0.9572, 0, 0], [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0]])
    q, _ = np.linalg.qr(rng.normal(size=(n_mol, 3, 3)))
    pos = centres[:, None, :] + np.einsum("kj,nij->nki", local, q)
    return pos.reshape(-1, 3), np.eye(3) * box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-ase-above", type=int, default=200000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ase import Atoms
    from ase.neighborlist import neighbor_list as ase_neighbor_list
    import vesin.torch as vesin_torch

    vers = versions("ase", "vesin", "vesin-torch")
    scripted = torch.jit.script(torch_neighbor_list)
    pbc = torch.tensor([True, True, True])
    records: List[Dict[str, object]] = []
    rows = []
    for n_target in args.sizes:
        pos_np, cell_np = water_box(n_target)
        n = len(pos_np)
        pos = torch.tensor(pos_np)
        cell = torch.tensor(cell_np)
        repeats = 7 if n <= 20000 else 3
        atoms = Atoms("OH2" * (n // 3), positions=pos_np, cell=cell_np, pbc=True)
        vt = vesin_torch.NeighborList(cutoff=CUTOFF, full_list=True)

        n_edges = scripted(pos, CUTOFF, cell, pbc)[0].shape[1]
        t_torch = median_time(lambda: scripted(pos, CUTOFF, cell, pbc), repeats)
        t_vesin = median_time(lambda: vesin_neighbor_list(pos, CUTOFF, cell, pbc), repeats)
        t_vt = median_time(lambda: vt.compute(pos, cell, True, quantities="ijS"), repeats)
        t_ase = None
        if n <= args.skip_ase_above:
            t_ase = median_time(lambda: ase_neighbor_list("ijS", atoms, CUTOFF), max(1, repeats // 2))
        system = f"water_box_{n}"
        common = dict(dtype="float64", threads=args.threads, vers=vers, n_edges=n_edges,
                      cutoff_A=CUTOFF)
        ms = lambda t: None if t is None else 1e3 * t  # noqa: E731
        ase_peer = f"ase.neighborlist {vers['ase']}"
        vt_peer = f"vesin-torch {vers['vesin-torch']}"
        records += [
            record("neighbors", system, n, "ms_per_call", ms(t_torch), ase_peer, ms(t_ase),
                   backend="torch (TorchScript)", **common),
            record("neighbors", system, n, "ms_per_call", ms(t_torch), vt_peer, ms(t_vt),
                   backend="torch (TorchScript)", **common),
            record("neighbors", system, n, "ms_per_call", ms(t_vesin), ase_peer, ms(t_ase),
                   backend="vesin", **common),
            record("neighbors", system, n, "us_per_atom", 1e6 * t_torch / n, None, None,
                   backend="torch (TorchScript)", **common),
        ]
        rows.append((n, n_edges, t_torch, t_vesin, t_vt, t_ase))
        print(f"{n} atoms done", file=sys.stderr)

    path = write_results("neighbors", records)
    print(f"results: {path}\n")
    print("| atoms | edges | mlff torch (ms) | torch us/atom | mlff vesin (ms) | vesin-torch (ms) "
          "| ase (ms) | torch vs ase | torch vs vesin-torch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, e, tt, tv, tvt, ta in rows:
        ase_ms = f"{1e3 * ta:.1f}" if ta else "-"
        ratio = f"{ta / tt:.2f}x" if ta else "-"
        print(f"| {n} | {e} | {1e3 * tt:.1f} | {1e6 * tt / n:.2f} | {1e3 * tv:.1f} | "
              f"{1e3 * tvt:.1f} | {ase_ms} | {ratio} | {tvt / tt:.2f}x |")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
