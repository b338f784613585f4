"""The peer side of the TensorNet benchmark, run in benchmarks/.tensornet-peer-venv (see
tensornet_peer.py): torchmd-net's TensorNet with a Scalar head, built through torchmd-net's
own ``torchmdnet.models.model.create_model``, random seeded weights, energy + forces by
autograd. Each timed call is ``model(z, pos, batch, box=box)``, so it includes torchmd-net's
own neighbour search (inside the model). Prints one JSON line.

Usage: python _tensornet_peer_side.py STRUCTURE.xyz float32|float64 THREADS REPEATS HPARAMS_JSON
       python _tensornet_peer_side.py --smoke     (tiny float32 + float64 calls: install check)
"""

import json
import math
import resource
import statistics
import sys
import time

import torch

DEFAULTS = dict(hidden_channels=128, num_layers=2, num_rbf=32, rbf_type="expnorm",
                activation="silu", cutoff_lower=0.0, cutoff_upper=5.0,
                equivariance_invariance_group="O(3)", max_num_neighbors=None, seed=0)


def build(hp: dict, dtype: str, max_z: int):
    """torchmd-net's TensorNet + Scalar output through its public builder."""
    from torchmdnet.models.model import create_model

    unknown = set(hp) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown hyperparameters {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **hp}
    args = dict(
        model="tensornet",
        embedding_dimension=hp["hidden_channels"],
        num_layers=hp["num_layers"],
        num_rbf=hp["num_rbf"],
        rbf_type=hp["rbf_type"],
        trainable_rbf=False,
        activation=hp["activation"],
        cutoff_lower=float(hp["cutoff_lower"]),
        cutoff_upper=float(hp["cutoff_upper"]),
        max_z=max_z,
        max_num_neighbors=hp["max_num_neighbors"] or 64,  # torchmd-net's default
        equivariance_invariance_group=hp["equivariance_invariance_group"],
        # CPU: no CUDA graphs, so no padding of the pair list to max_num_neighbors * N
        static_shapes=False,
        check_errors=True,  # 2.4.x: raise on neighbour-list overflow (3.1.0 always checks)
        output_model="Scalar",
        reduce_op="sum",
        prior_model=None,
        atom_filter=-1,
        derivative=True,
        precision={"float32": 32, "float64": 64}[dtype],
        box_vecs=None,  # the box is passed per call
    )
    torch.manual_seed(hp["seed"])
    model = create_model(args).eval()  # eval: forces without create_graph (inference)
    if dtype == "float64":
        # same weights as the float32 model of this seed (initialising in float64 draws other
        # numbers), so float32 and float64 energies agree to float32 precision
        torch.manual_seed(hp["seed"])
        ref = create_model({**args, "precision": 32})
        model.load_state_dict(ref.state_dict())  # copy_ casts float32 -> float64
    return model


def max_neighbors(z, pos, batch, box, cutoff_lower: float, cutoff_upper: float,
                  capacity: int = 256) -> int:
    """Largest number of pairs (i, j) of any atom i, its self-loop included, as torchmd-net's
    own neighbour search (TensorNet's settings: loop, both directions) finds them with a
    capacity of ``capacity`` per atom."""
    from torchmdnet.models.utils import OptimizedDistance

    dist = OptimizedDistance(cutoff_lower, cutoff_upper, max_num_pairs=-capacity, loop=True,
                             resize_to_fit=True)
    try:
        with torch.no_grad():
            edge_index, _, _ = dist(pos, batch, box)
    except RuntimeError as exc:
        raise RuntimeError(f"more than {capacity} neighbours per atom on average: pass "
                           "max_num_neighbors in the hyperparameters") from exc
    return int(torch.bincount(edge_index[0], minlength=len(z)).max())


def check_box(cell, cutoff: float) -> None:
    """torchmd-net's box convention: rows are the vectors a, b, c; a[1] = a[2] = b[2] = 0,
    a[0], b[1], c[2] >= 2 cutoff, a[0] >= 2 b[0], a[0] >= 2 c[0], b[1] >= 2 c[1]."""
    a, b, c = cell
    ok = (a[1] == 0 and a[2] == 0 and b[2] == 0 and min(a[0], b[1], c[2]) >= 2 * cutoff
          and a[0] >= 2 * b[0] and a[0] >= 2 * c[0] and b[1] >= 2 * c[1])
    if not ok:
        raise ValueError(f"cell {cell.tolist()} is not in torchmd-net's reduced form with every "
                         f"width >= 2 x cutoff ({2 * cutoff} A); its neighbour search uses the "
                         "minimum image only")


def inputs(atoms, dtype: torch.dtype):
    z = torch.as_tensor(atoms.numbers, dtype=torch.long)
    pos = torch.as_tensor(atoms.positions, dtype=dtype).contiguous()
    batch = torch.zeros_like(z)
    box = None
    if atoms.pbc.any():
        if not atoms.pbc.all():
            raise ValueError("torchmd-net supports pbc all True or all False, not mixed")
        box = torch.as_tensor(atoms.cell.array, dtype=dtype)  # [3, 3], rows a, b, c
    return z, pos, batch, box


def versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("torchmd-net", "torchmd-net-cpu", "warp-lang", "ase"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    from torchmdnet.models import tensornet

    out["torchmdnet_warp_ops"] = bool(getattr(tensornet, "OPT", False))
    out["torch_threads"] = torch.get_num_threads()
    return out


def smoke() -> dict:
    from ase import Atoms

    out = {}
    mol = Atoms("OH2C", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [0, 0, 1.5]])
    box = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]],
                cell=[6.0, 6.0, 6.0], pbc=True)
    for name in ("float32", "float64"):
        model = build(dict(hidden_channels=8, num_layers=1, num_rbf=4, cutoff_upper=2.5,
                           max_num_neighbors=8), name, 9)
        for atoms in (mol, box):
            z, pos, batch, cell = inputs(atoms, getattr(torch, name))
            e, f = model(z, pos, batch, box=cell)
            if not (torch.isfinite(e).all() and torch.isfinite(f).all()):
                raise RuntimeError(f"non-finite energy/forces in {name}")
            out[f"{name}_{len(atoms)}"] = float(e.sum())
    out["versions"] = versions()
    return out


def main() -> None:
    if sys.argv[1:] == ["--smoke"]:
        torch.set_num_threads(1)
        print(json.dumps(smoke()))
        return
    path, dtype_name, threads, repeats, hp_json = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    import ase.io

    atoms = ase.io.read(path)
    hp = {**DEFAULTS, **json.loads(hp_json)}
    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    cutoff = float(hp["cutoff_upper"])
    if atoms.pbc.any():
        check_box(atoms.cell.array, cutoff)
    z, pos, batch, box = inputs(atoms, dtype)
    if hp["max_num_neighbors"] is None:
        # torchmd-net's capacity is max_num_neighbors * N pairs in all (self-loops included,
        # both directions); it raises "Found num_pairs > max_num_pairs" when exceeded.
        # 25 % headroom over the counted maximum, at least its default 64.
        counted = max_neighbors(z, pos, batch, box, float(hp["cutoff_lower"]), cutoff)
        hp["max_num_neighbors"] = max(64, math.ceil(1.25 * counted))
    model = build(hp, dtype_name, max_z=int(atoms.numbers.max()) + 1)
    n_params = sum(p.numel() for p in model.parameters())

    def call():
        energy, forces = model(z, pos, batch, box=box)
        return energy, forces

    warmup_ms = []
    for _ in range(3):
        t0 = time.perf_counter()
        energy, forces = call()
        warmup_ms.append((time.perf_counter() - t0) * 1e3)
    times, cpu_times = [], []
    for _ in range(int(repeats)):
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_times.append((time.process_time() - c0) * 1e3)
    with torch.no_grad():
        edge_index, _, _ = model.representation_model.distance(pos.detach(), batch, box)
    print(json.dumps({
        "ms_per_call": statistics.median(times),
        "ms_all": times,
        "ms_min": min(times),
        "warmup_ms": warmup_ms,
        # CPU time of this process (all its threads) per call: less sensitive than wall time
        # to other load on a shared machine
        "cpu_ms_per_call": statistics.median(cpu_times),
        "n_params": n_params,
        "energy": float(energy.detach().to(torch.float64).sum()),
        "force_abs_max": float(forces.detach().abs().max()),
        "n_atoms": len(atoms),
        "n_pairs": int(edge_index.shape[1]),  # directed pairs incl. N self-loops
        "max_num_neighbors": hp["max_num_neighbors"],
        "max_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dtype": dtype_name,
        "threads": int(threads),
        "hparams": hp,
        "versions": versions(),
    }))


if __name__ == "__main__":
    main()
