"""One measurement of benchmarks/scale.py, run in its own process (for the peer, in its own
virtual environment): a water box of about N atoms, energy + forces on a prebuilt graph, with the
MACE hyperparameters of benchmarks/_mace_side.py (identical on both sides).

Usage: python _scale_side.py {mlff,mace-torch} N_ATOMS|STRUCTURE.xyz float32|float64 THREADS REPEATS
(a file for the peer, whose venv has no mlff to build the box with).
Prints one JSON line: n_atoms, s_per_call (median of REPEATS after one warm-up call; none above 12,288 atoms),
graph_s (neighbour list and graph), max_rss_MB (this process's peak resident memory, graph
included), edge_chunk (mlff: edges per chunk, 0 = one piece; the budget comes from
MLFF_MEMORY_GB in the environment).
"""

import json
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import median_time  # noqa: E402
from _mace_side import build_mlff, build_peer  # noqa: E402


def main() -> None:
    side, structure, dtype_name, threads, repeats = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    dtype = torch.float32 if dtype_name == "float32" else torch.float64
    if structure.isdigit():
        from ase import Atoms
        from neighbors import water_box

        pos, cell = water_box(int(structure), seed=1)
        atoms = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    else:
        import ase.io

        atoms = ase.io.read(structure)
    n_atoms = len(atoms)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, call = (build_mlff if side == "mlff" else build_peer)(atoms, dtype)
    graph_s = time.perf_counter() - t0
    # a warm-up call (allocator, first-call set-up) except for the largest boxes
    s_per_call = median_time(call, int(repeats), warmup=1 if n_atoms <= 12288 else 0)
    out = {"n_atoms": n_atoms, "s_per_call": s_per_call, "graph_s": graph_s,
           "max_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if side == "mlff":
        out["edge_chunk"] = int(model.model.edge_chunk)
        out["memory_gb"] = float(model.memory_gb)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
