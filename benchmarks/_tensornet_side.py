"""Our side of benchmarks/tensornet.py, run in its own process: mlff's TensorNet (or, for the
model-vs-model row, mlff's default-size MACE) with random seeded weights on one structure,
energy + forces per call with the neighbour list built inside each call (as torchmd-net's
model does its own search). Prints one JSON line: ms_per_call (median), ms_all, n_params,
energy, max_rss_MB, n_edges.

``tensornet_aot``: the same TensorNet compiled ahead of time (``mlff export --aot``), the
package cached in runs/tensornet_aot/ per elements, dtype and hyperparameters (a compile takes
minutes and is not timed).

Usage: python _tensornet_side.py {tensornet,tensornet_aot,mace} STRUCTURE.xyz float32|float64 THREADS REPEATS HPARAMS_JSON
"""

import hashlib
import json
import resource
import statistics
import sys
import time

import ase.io
import torch

from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / "runs" / "tensornet_aot"


def build(kind: str, hp: dict, elements, dtype: str):
    from mlff.models.potential import Potential
    from mlff.models.registry import build_model

    torch.manual_seed(int(hp.get("seed", 0)))
    if kind == "tensornet":
        config = dict(elements=elements, channels=hp["hidden_channels"], num_layers=hp["num_layers"],
                      num_rbf=hp["num_rbf"], radial_basis=hp.get("rbf_type", "expnorm"),
                      r_cut=hp["cutoff_upper"], activation=hp.get("activation", "silu"), dtype=dtype)
    else:  # the project's MACE at its default sizes (MACEConfig defaults), same cutoff
        config = dict(elements=elements, r_cut=hp["cutoff_upper"], avg_num_neighbors=30.0, dtype=dtype)
    return Potential(build_model(kind, config)).eval()


def main() -> None:
    kind, path, dtype, threads, repeats, hp = sys.argv[1:7]
    threads, repeats, hp = int(threads), int(repeats), json.loads(hp)
    torch.set_num_threads(threads)
    from mlff.graph import atoms_to_graph

    atoms = ase.io.read(path)
    elements = sorted(set(int(z) for z in atoms.numbers))
    pot = build("tensornet" if kind == "tensornet_aot" else kind, hp, elements, dtype)
    n_params = sum(p.numel() for p in pot.parameters())
    torch_dtype = getattr(torch, dtype)
    if kind == "tensornet_aot":
        from mlff.export import ExportedPotential, export_aot

        key = hashlib.sha256(json.dumps([elements, dtype, hp], sort_keys=True).encode()).hexdigest()[:16]
        package = CACHE / f"tensornet_{dtype}_{key}.pt2"
        if not package.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            export_aot(pot, package)
        pot = ExportedPotential(package)

    def call():
        graph = atoms_to_graph(atoms, pot.r_cut, pot.elements, dtype=torch_dtype)
        out = pot(graph, compute_forces=True)
        return graph, out

    # one warm-up on the large box (a call there takes about a minute), three elsewhere
    for _ in range(1 if len(atoms) > 5000 else 3):
        graph, out = call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({
        "ms_per_call": statistics.median(times), "ms_all": times, "n_params": n_params,
        "energy": float(out["energy"].sum()), "force_abs_max": float(out["forces"].abs().max()),
        "n_edges": int(graph["edge_index"].shape[1]),
        "max_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
