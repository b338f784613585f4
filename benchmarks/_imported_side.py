"""One side of benchmarks/imported_vs_peer.py, run in its own process: mlff in the project's
virtual environment, mace-torch / openmm-ml in the peer's (this module imports neither mlff nor
mace at module level, so it runs in both). Prints one JSON line.

Energy + forces per call (times in ms, energies in eV)::

    python _imported_side.py call {mlff,mlff-aot,mace-torch} MODEL.model STRUCTURE.xyz float32|float64 THREADS REPEATS WARMUP

-> ``ms_per_call`` (median of REPEATS calls after WARMUP calls), ``energy`` (eV, of the first
call), ``params``, ``max_rss_MB``. mlff: ``import_mace(MODEL, dtype)``; mlff-aot: that model
compiled by ``mlff export --aot`` (once per file and dtype, cached in runs/imported_aot/, which
git ignores: the models are third-party and their conversions are never committed; the
compile is not timed); mace-torch: the pickled module itself, cast to ``dtype``. Loading and the neighbour list are outside the timing on both
sides.

OpenMM MD steps per second (through :func:`openmm_md.worker`)::

    python _imported_side.py md {torch,mace} SYSTEM.npz MODEL STEPS WARMUP THREADS

``torch``: ``MLPotential('mlff', modelPath=MODEL, implementation='torch')`` with an mlff model
file; ``mace``: openmm-ml's ``MLPotential('mace', modelPath=MODEL)`` with a mace-torch file.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import ase.io
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_time  # noqa: E402  (standard library only: fine in the peer venv)

HERE = Path(__file__).resolve().parent


def _imported(model_file: str, atoms, dtype: torch.dtype):
    """The imported Potential (eval mode) and the graph of ``atoms`` for it."""
    from mlff.dtypes import dtype_name
    from mlff.graph import atoms_to_graph
    from mlff.io_import.mace_torch import import_mace

    pot, _ = import_mace(model_file, dtype=dtype_name(dtype))
    pot.eval()
    return pot, atoms_to_graph(atoms, pot.r_cut, pot.elements, dtype=torch.float64)


def build_mlff(model_file: str, atoms, dtype: torch.dtype) -> Tuple[torch.nn.Module, Callable[[], float]]:
    """mlff: the imported Potential (eval mode) and a call returning the energy (eV)."""
    pot, graph = _imported(model_file, atoms, dtype)

    def call() -> float:
        return float(pot(graph, compute_forces=True)["energy"].sum())

    return pot, call


def build_mlff_aot(model_file: str, atoms, dtype: torch.dtype) -> Tuple[torch.nn.Module, Callable[[], float]]:
    """mlff-aot: the imported Potential compiled into a .pt2 package (cached) and a call through
    :class:`~mlff.export.ExportedPotential` returning the energy (eV); the Potential is returned
    for its parameter count."""
    import hashlib

    from mlff.dtypes import dtype_name
    from mlff.export import ExportedPotential, export_aot

    pot, graph = _imported(model_file, atoms, dtype)
    digest = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()[:16]
    package = HERE.parent / "runs" / "imported_aot" / f"{Path(model_file).stem}_{digest}_{dtype_name(dtype)}.pt2"
    if not package.exists():
        export_aot(pot, package)  # makes the folder
    program = ExportedPotential(package)

    def call() -> float:
        return float(program(graph, compute_forces=True)["energy"].sum())

    return pot, call


def build_peer(model_file: str, atoms, dtype: torch.dtype) -> Tuple[torch.nn.Module, Callable[[], float]]:
    """mace-torch: the pickled model cast to ``dtype`` and a call returning the energy (eV)."""
    from mace import data
    from mace.tools import AtomicNumberTable, torch_geometric

    torch.set_default_dtype(dtype)
    model = torch.load(model_file, map_location="cpu", weights_only=False).to(dtype)
    model.eval()
    # 2022 files hold r_max as a float and atomic_numbers as a list; later ones as tensors
    r_max = float(model.r_max)
    z_table = AtomicNumberTable([int(z) for z in model.atomic_numbers])
    ad = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=z_table, cutoff=r_max)
    loader = torch_geometric.dataloader.DataLoader([ad], batch_size=1, shuffle=False)
    batch = next(iter(loader)).to_dict()

    def call() -> float:
        return float(model(batch, training=False, compute_force=True)["energy"].sum())

    return model, call


def time_calls(model_file: str, side: str, path: str, dtype_name: str, threads: int, repeats: int,
               warmup: int) -> Dict[str, float]:
    """Median wall time (ms) of energy + forces, energy (eV), parameter count, max RSS (MB)."""
    torch.set_num_threads(threads)
    dtype = torch.float32 if dtype_name == "float32" else torch.float64
    atoms = ase.io.read(path)
    builder = {"mlff": build_mlff, "mlff-aot": build_mlff_aot, "mace-torch": build_peer}[side]
    model, call = builder(model_file, atoms, dtype)
    energy = call()  # the first warm-up call
    seconds = median_time(call, repeats, warmup=max(warmup - 1, 0))
    return {"ms_per_call": 1e3 * seconds, "energy": energy, "n_atoms": len(atoms),
            "params": sum(p.numel() for p in model.parameters()),
            "max_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def hide_unimportable_entry_points() -> None:
    """openmm-ml loads every ``openmmml.potentials`` entry point on import and fails on one whose
    module is missing. A peer interpreter that shares the project's site-packages sees mlff's
    entry point without mlff on its path; drop such entry points (the peer needs only 'mace')."""
    import importlib.metadata as md
    import importlib.util

    original = md.entry_points

    def importable(ep) -> bool:
        try:
            return importlib.util.find_spec(ep.value.split(":")[0]) is not None
        except (ImportError, ValueError):
            return False

    def entry_points(**params):
        eps = original(**params)
        if params.get("group", "").startswith("openmmml."):
            return md.EntryPoints(ep for ep in eps if importable(ep))
        return eps

    md.entry_points = entry_points


def main() -> None:
    mode = sys.argv[1]
    if mode == "call":
        side, model_file, path, dtype_name, threads, repeats, warmup = sys.argv[2:9]
        out = time_calls(model_file, side, path, dtype_name, int(threads), int(repeats), int(warmup))
    elif mode == "md":
        route, system_file, model_file, steps, warmup, threads = sys.argv[2:8]
        hide_unimportable_entry_points()
        sys.path.insert(0, str(HERE))
        from openmm_md import worker

        out = worker(route, system_file, model_file, int(steps), int(warmup), int(threads))
    else:
        raise SystemExit(f"unknown mode {mode!r}: 'call' or 'md'")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
