"""OpenMM MD speed on the CPU platform: mlff's TorchForce route and PythonForce route against
openmm-ml's MACE route (mace-torch 0.3.16), same hyperparameters, same machine, same run.

Hyperparameters are those of mace_vs_peer.py (hidden 64x0e+64x1o, max_ell 3, correlation 3,
r_cut 5 A, 2 interactions), random weights, float32, elements H C N O. Systems: capped alanine
dipeptide in vacuum (22 atoms) and a periodic water box (about 1,500 atoms, 1 g/cm^3). Each
route builds its System with ``MLPotential(...).createSystem`` (``'mlff'`` with
``implementation='torch'`` or ``'python'``; ``'mace'`` with a saved mace-torch model), runs
LangevinMiddle steps of 0.5 fs at 300 K, and reports steps per second after warm-up steps. Each
(route, system) runs in its own process; the peer runs in benchmarks/.peer-venv, with openmm and
openmm-ml installed there on first use.

Usage: python benchmarks/openmm_md.py [--threads 1] [--steps-small 40] [--steps-large 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ELEMENTS = [1, 6, 7, 8]
PDB = HERE.parent / "data" / "examples" / "alanine_dipeptide.pdb"
PEER_PACKAGES = ("openmm==8.6.1", "openmmml==1.8")
ROUTES = ("torch", "python", "mace")


# --- worker (runs in either virtual environment: openmm, openmm-ml, torch, numpy only) --------


def topology_of(numbers, box_nm):
    """An OpenMM Topology with one residue per atom (the ML potentials read elements only)."""
    import openmm.app as app

    top = app.Topology()
    chain = top.addChain()
    for z in numbers:
        residue = top.addResidue("UNK", chain)
        element = app.Element.getByAtomicNumber(int(z))
        top.addAtom(element.symbol, element, residue)
    if box_nm is not None:
        top.setPeriodicBoxVectors(box_nm)
    return top


def worker(route: str, system_file: str, model: str, steps: int, warmup: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import openmm
    import openmm.app as app
    import openmm.unit as u
    from openmmml import MLPotential

    data = np.load(system_file)
    box = data["box_nm"] if data["box_nm"].any() else None
    topology = topology_of(data["numbers"], box)
    if route == "mace":
        system = MLPotential("mace", modelPath=model).createSystem(topology, precision="single", returnEnergyType="energy")
    elif route.startswith("baseline-"):
        # an older mlff tree on PYTHONPATH (benchmarks/vs_baseline.py): its own module names,
        # registered under another name so that the installed entry point is not used
        from calculators.openmmml_entry import MLFFPotentialImplFactory

        MLPotential.registerImplFactory("mlff-baseline", MLFFPotentialImplFactory())
        system = MLPotential("mlff-baseline", modelPath=model, implementation=route[len("baseline-"):],
                             device="cpu").createSystem(topology)
    else:
        system = MLPotential("mlff", modelPath=model, implementation=route, device="cpu").createSystem(topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.5 * u.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(data["positions_nm"])
    context.setVelocitiesToTemperature(300 * u.kelvin, 1)
    integrator.step(warmup)
    t0 = time.perf_counter()
    integrator.step(steps)
    elapsed = time.perf_counter() - t0
    return {"steps_per_s": steps / elapsed, "ms_per_step": 1e3 * elapsed / steps, "steps": steps}


# --- driver (the project's virtual environment) ------------------------------------------------


def ensure_peer() -> Path:
    from mace_vs_peer import ensure_peer as ensure_mace

    python = ensure_mace()
    probe = subprocess.run([str(python), "-c", "import openmmml, openmm"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)
    return python


def write_systems(tmp: Path, water_atoms: int) -> dict:
    import openmm.app as app
    import openmm.unit as u
    from neighbors import water_box

    from mlff.units import ANGSTROM_TO_NM

    pdb = app.PDBFile(str(PDB))
    numbers = [a.element.atomic_number for a in pdb.topology.atoms()]
    pos = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    out = {}
    out["alanine_dipeptide_vacuum"] = (numbers, np.asarray(pos), np.zeros((3, 3)))
    wpos, cell = water_box(water_atoms, seed=1)
    out["water_box"] = ([8, 1, 1] * (len(wpos) // 3), wpos * ANGSTROM_TO_NM, cell * ANGSTROM_TO_NM)
    files = {}
    for name, (z, p, b) in out.items():
        files[name] = (tmp / f"{name}.npz", len(z))
        np.savez(files[name][0], numbers=np.asarray(z), positions_nm=p, box_nm=b)
    return files


def write_models(tmp: Path, peer_python: Optional[Path]) -> dict:
    """mlff model file and pickled mace-torch model with identical hyperparameters (float32);
    without ``peer_python``, the mlff model only."""
    import torch
    from ase.build import molecule

    import _mace_side
    from mlff.io import save_model

    _mace_side.ELEMENTS = ELEMENTS  # both builders read the module's element list
    pot, _ = _mace_side.build_mlff(molecule("CH4"), torch.float32)
    ours = tmp / "mlff.pt"
    save_model(pot, ours)
    params = sum(p.numel() for p in pot.parameters())
    if peer_python is None:
        return {"ours": ours, "peer": None, "params": params}
    peer = tmp / "mace.model"
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[2]); import _mace_side; "
        f"_mace_side.ELEMENTS = {ELEMENTS}; from ase.build import molecule; "
        "model, _ = _mace_side.build_peer(molecule('CH4'), torch.float32); torch.save(model, sys.argv[1])"
    )
    subprocess.run([str(peer_python), "-c", script, str(peer), str(HERE)], check=True, env=_env(1))
    return {"ours": ours, "peer": peer, "params": params}


def _env(threads: int) -> dict:
    # mace-torch models are pickled modules (openmm-ml loads them with torch.load)
    return dict(os.environ, OMP_NUM_THREADS=str(threads), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
                PYTHONWARNINGS="ignore")


def run_route(python: str, route: str, system: Path, model: Path, steps: int, warmup: int,
              threads: int, pythonpath: Optional[str] = None) -> dict:
    env = _env(threads)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    cmd = [python, str(Path(__file__).resolve()), "--worker", route, str(system), str(model),
           str(steps), str(warmup), str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{route} failed on {system.name}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-small", type=int, default=40, help="timed steps, alanine dipeptide")
    parser.add_argument("--steps-large", type=int, default=3, help="timed steps, water box")
    parser.add_argument("--water-atoms", type=int, default=1536)
    args = parser.parse_args()

    from _common import record, versions, write_results

    peer_python = str(ensure_peer())
    peer_version = subprocess.run(
        [peer_python, "-c", "import importlib.metadata as m; print(m.version('mace-torch'), m.version('openmmml'))"],
        capture_output=True, text=True,
    ).stdout.split()
    vers = versions("e3nn", "openmm", "openmmtorch", "openmmml")
    vers["peer"] = f"openmm-ml {peer_version[1]} MLPotential('mace') with mace-torch {peer_version[0]}"
    peer_name = f"openmm-ml {peer_version[1]} + mace-torch {peer_version[0]}"
    records, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        systems = write_systems(tmp, args.water_atoms)
        models = write_models(tmp, Path(peer_python))
        for name, (path, n_atoms) in systems.items():
            steps = args.steps_small if n_atoms < 100 else args.steps_large
            warmup = 5 if n_atoms < 100 else 2
            res = {}
            for route in ROUTES:
                python = peer_python if route == "mace" else sys.executable
                model = models["peer"] if route == "mace" else models["ours"]
                res[route] = run_route(python, route, path, model, steps, warmup, args.threads)
                print(f"{name} {route}: {res[route]['steps_per_s']:.2f} steps/s", file=sys.stderr)
            for route in ("torch", "python"):
                records.append(record(
                    "openmm_md", name, n_atoms, "steps_per_s", res[route]["steps_per_s"], peer_name,
                    res["mace"]["steps_per_s"], dtype="float32", threads=args.threads,
                    lower_is_better=False, vers=vers, route=f"mlff {route} (MLPotential('mlff', implementation='{route}'))",
                    platform="CPU", timed_steps=steps, timestep_fs=0.5, params=models["params"],
                ))
            rows.append((name, n_atoms, res))
    path = write_results("openmm_md", records)
    print(f"results: {path}\n")
    print("| system | atoms | mlff TorchForce (steps/s) | mlff PythonForce (steps/s) | openmm-ml MACE (steps/s) | TorchForce speedup | PythonForce speedup |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, r in rows:
        t, p, m = (r[k]["steps_per_s"] for k in ROUTES)
        print(f"| {name} | {n} | {t:.2f} | {p:.2f} | {m:.2f} | {t / m:.2f}x | {p / m:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # a child of main(), maybe in the peer's venv
        route, system_file, model, steps, warmup, threads = sys.argv[2:8]
        print(json.dumps(worker(route, system_file, model, int(steps), int(warmup), int(threads))))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import benchmark_lock  # noqa: E402

        with benchmark_lock(__file__):
            main()
