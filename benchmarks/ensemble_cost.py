"""Cost of a deep ensemble evaluated as one batched model against separate member calls.

The peer is the obvious way to run an ensemble: M single models, one call each (neighbour list
included, as a calculator would). Ours: the same M members held by one model (one neighbour
list, members batched in every layer, one backward pass for all members' forces). Energy +
forces per call, median of repeats, 2 threads, the default model's architecture (channels 32,
max_L 1, max_ell 2, correlation 3, r_cut 5 A, 2 interactions), M = 4.

Systems: alanine dipeptide (22 atoms, vacuum) and periodic water boxes of 192 and 1,536 atoms.
Writes benchmarks/results/ensemble_cost.json; ``speedup`` = (M single calls) / (one ensemble
call); ``ratio_to_one_single`` = ensemble call / one single call (M would mean no gain).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_lock, median_time, record, versions, write_results  # noqa: E402
from neighbors import water_box  # noqa: E402


def systems():
    import ase.io
    from ase import Atoms

    from mlff.assets_path import asset

    out = {"alanine_dipeptide": ase.io.read(asset("examples/alanine_dipeptide_conformers.xyz"), 0)}
    for n in (192, 1536):
        pos, cell = water_box(n, seed=1)
        out[f"water_box_{n}"] = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    return out


def main() -> None:
    from mlff.graph import atoms_to_graph
    from mlff.models.ensemble import extract_member
    from mlff.models.mace import MACE, MACEConfig
    from mlff.models.potential import Potential

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = []
    for dtype in args.dtypes:
        torch_dtype = torch.float32 if dtype == "float32" else torch.float64
        config = MACEConfig(elements=(1, 6, 7, 8), channels=32, max_L=1, max_ell=2, correlation=3,
                            r_cut=5.0, avg_num_neighbors=10.0, dtype=dtype, ensemble_size=args.members)
        torch.manual_seed(0)
        ensemble = Potential(MACE(config)).eval()
        singles = [extract_member(ensemble, k).eval() for k in range(args.members)]
        for name, atoms in systems().items():
            def graph():
                return atoms_to_graph(atoms, config.r_cut, config.elements, dtype=torch_dtype)

            t_ens = median_time(lambda: ensemble(graph()), args.repeats)
            t_one = median_time(lambda: singles[0](graph()), args.repeats)
            t_all = median_time(lambda: [s(graph()) for s in singles], args.repeats)
            print(f"{name:18s} {dtype}: ensemble of {args.members} {t_ens * 1e3:8.1f} ms, one member "
                  f"{t_one * 1e3:8.1f} ms, {args.members} separate calls {t_all * 1e3:8.1f} ms "
                  f"-> {t_all / t_ens:.2f}x faster, {t_ens / t_one:.2f} single calls")
            records.append(record(
                "ensemble_cost", name, len(atoms), "seconds_per_energy_forces_call", t_ens,
                f"{args.members} separate single-model calls", t_all, dtype=dtype,
                threads=args.threads, vers=versions("e3nn"), members=args.members,
                one_single_call_s=t_one, ratio_to_one_single=t_ens / t_one))
    print(f"written {write_results('ensemble_cost', records)}")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
