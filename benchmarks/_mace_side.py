"""One side of benchmarks/mace_vs_peer.py, run in its own process (and, for the peer, in its
own virtual environment). Prints one JSON line: ms_per_call (energy + forces, median), params,
max_rss_MB. Usage: python _mace_side.py {mlff,mace-torch} STRUCTURE.xyz float32|float64 THREADS REPEATS
"""

import json
import resource
import statistics
import sys
import time

import ase.io
import torch

HYPER = dict(channels=64, max_L=1, max_ell=3, correlation=3, r_cut=5.0, num_interactions=2,
             num_bessel=8, cutoff_p=5, radial_mlp=[64, 64, 64], readout_mlp=16)
ELEMENTS = [1, 6, 8]
AVG_NEIGHBORS = 30.0


def build_mlff(atoms, dtype):
    from mlff.graph import atoms_to_graph
    from mlff.models.mace import MACE, MACEConfig
    from mlff.models.potential import Potential

    cfg = MACEConfig(elements=tuple(ELEMENTS), avg_num_neighbors=AVG_NEIGHBORS,
                     dtype="float32" if dtype == torch.float32 else "float64",
                     **{k: tuple(v) if isinstance(v, list) else v for k, v in HYPER.items()})
    pot = Potential(MACE(cfg)).eval()  # inference: no double-backward graph (peer: training=False)
    graph = atoms_to_graph(atoms, cfg.r_cut, ELEMENTS, dtype=torch.float64)

    def call():
        return pot(graph, compute_forces=True)["forces"]

    return pot, call


def build_peer(atoms, dtype):
    import numpy as np
    from e3nn import o3
    from mace import data, modules, tools
    from mace.tools import torch_geometric

    torch.set_default_dtype(dtype)
    model = modules.MACE(
        r_max=HYPER["r_cut"], num_bessel=HYPER["num_bessel"], num_polynomial_cutoff=HYPER["cutoff_p"],
        max_ell=HYPER["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=HYPER["num_interactions"], num_elements=len(ELEMENTS),
        hidden_irreps=o3.Irreps("64x0e+64x1o"), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(ELEMENTS)), avg_num_neighbors=AVG_NEIGHBORS,
        atomic_numbers=ELEMENTS, correlation=HYPER["correlation"], gate=torch.nn.functional.silu,
        radial_MLP=HYPER["radial_mlp"],
    ).to(dtype)
    z_table = tools.AtomicNumberTable(ELEMENTS)
    config = data.config_from_atoms(atoms)
    ad = data.AtomicData.from_config(config, z_table=z_table, cutoff=HYPER["r_cut"])
    loader = torch_geometric.dataloader.DataLoader([ad], batch_size=1, shuffle=False)
    batch = next(iter(loader)).to_dict()

    def call():
        return model(batch, training=False, compute_force=True)["forces"]

    return model, call


def main():
    side, path, dtype_name, threads, repeats = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    dtype = torch.float32 if dtype_name == "float32" else torch.float64
    atoms = ase.io.read(path)
    torch.manual_seed(0)
    model, call = (build_mlff if side == "mlff" else build_peer)(atoms, dtype)
    params = sum(p.numel() for p in model.parameters())
    for _ in range(3):
        call()
    times = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"ms_per_call": 1e3 * statistics.median(times), "params": params,
                      "max_rss_MB": rss}))


if __name__ == "__main__":
    main()
