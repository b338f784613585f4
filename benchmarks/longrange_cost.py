"""Cost of the long-range block (issue 18): energy + forces of MACE (the hyperparameters of
benchmarks/_mace_side.py, float32) on water boxes with ``long_range`` none, charges, ewald_mp
and both, in one process, so each ratio compares like with like. The "peer" of each record is
the same model without the block; ``speedup`` < 1 is the block's overhead (bar: at most 30 %
at 1,536 atoms, speedup >= 0.77); ``block_s`` times the block alone (its forward and
backward on random features), which the noise of whole calls on this machine hides. Periodic boxes above ``mesh_atoms`` (100) use particle-mesh
Ewald. Resumable: finished (size, kind) records are kept.

Usage: python benchmarks/longrange_cost.py [--sizes 192 1536 12288] [--pause PID ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, median_time, paused, record, versions, write_results  # noqa: E402
from _mace_side import AVG_NEIGHBORS, ELEMENTS, HYPER  # noqa: E402
from neighbors import water_box  # noqa: E402

NAME = "longrange_cost"
KINDS = ("none", "charges", "ewald_mp", "both")


def time_kind(atoms, kind: str, repeats: int) -> float:
    from mlff.graph import atoms_to_graph
    from mlff.models.mace import MACE, MACEConfig
    from mlff.models.potential import Potential

    torch.manual_seed(0)
    cfg = MACEConfig(elements=tuple(ELEMENTS), avg_num_neighbors=AVG_NEIGHBORS, dtype="float32",
                     long_range=kind, **{k: tuple(v) if isinstance(v, list) else v for k, v in HYPER.items()})
    pot = Potential(MACE(cfg)).eval()
    graph = atoms_to_graph(atoms, cfg.r_cut, ELEMENTS, dtype=torch.float64)
    return median_time(lambda: pot(graph, compute_forces=True)["forces"], repeats, warmup=1)


def time_block(atoms, kind: str, repeats: int) -> float:
    """The block alone (random 64-channel features): energy and its gradient with respect to
    positions and features, as in a force call, in float32 features / float64 sums."""
    from mlff import graph as G
    from mlff.graph import atoms_to_graph
    from mlff.nn.longrange import LongRange

    torch.manual_seed(0)
    graph = atoms_to_graph(atoms, HYPER["r_cut"], ELEMENTS, dtype=torch.float64)
    block = LongRange(kind, {}, HYPER["channels"], HYPER["r_cut"], 1, num_species=len(ELEMENTS))
    features = torch.randn(1, len(atoms), HYPER["channels"], requires_grad=True)
    positions = graph[G.POSITIONS].unsqueeze(0).clone().requires_grad_(True)
    edge_index = graph[G.EDGE_INDEX]

    def call():
        vectors = positions[:, edge_index[0]] - positions[:, edge_index[1]] + graph[G.SHIFTS].unsqueeze(0)
        context = {"positions": positions, "cell": graph[G.CELL].unsqueeze(0), "pbc": graph[G.PBC],
                   "ptr": graph[G.PTR], "batch": graph[G.BATCH], "total_charge": graph[G.TOTAL_CHARGE]}
        energy = block(features, graph[G.SPECIES], edge_index, vectors.float(), context).sum()
        return torch.autograd.grad(energy, [positions, features])

    return median_time(call, repeats, warmup=1)


def main() -> None:
    import json

    from ase import Atoms

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[192, 1536, 12288])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=int, nargs="*", default=[], help="PIDs to stop while timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = RESULTS / f"{NAME}.json"
    records = json.loads(path.read_text()) if path.exists() else []
    done = {(r["n_atoms"], r["long_range"]) for r in records}
    vers = versions("e3nn")
    for n in args.sizes:
        pos, cell = water_box(n, seed=1)
        atoms = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
        if all((len(atoms), k) in done for k in KINDS):
            continue
        repeats = 5 if len(atoms) <= 2000 else 1
        with paused(args.pause):
            times = {kind: time_kind(atoms, kind, repeats) for kind in KINDS}
            block = {kind: time_block(atoms, kind, 5 if len(atoms) <= 2000 else 2) for kind in KINDS[1:]}
        for kind in KINDS[1:]:
            records = [r for r in records if (r["n_atoms"], r["long_range"]) != (len(atoms), kind)]
            records.append(record(NAME, f"water box {len(atoms)} atoms", len(atoms), "s_per_call", times[kind],
                                  "mlff MACE without long range", times["none"], dtype="float32",
                                  threads=args.threads, vers=vers, long_range=kind,
                                  overhead_percent=100.0 * (times[kind] / times["none"] - 1.0),
                                  block_s=block[kind], block_percent=100.0 * block[kind] / times["none"]))
            print(f"{len(atoms):6d} atoms {kind:9s} {times[kind]:.3f} s vs {times['none']:.3f} s: "
                  f"overhead {records[-1]['overhead_percent']:+.1f} %; block alone {block[kind]:.3f} s "
                  f"({records[-1]['block_percent']:.1f} %)", flush=True)
        write_results(NAME, records)


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
