"""Ahead-of-time compiled packages (``mlff export --aot``) against TorchScript and eager.

Two models: the shipped default (a 4-member MACE ensemble, float32 as shipped) and a TensorNet
of torchmd-net's default size (128 channels, 2 layers, 32 radial functions, r_cut 5 A, random
weights, float32). Each is exported once (the compile time is recorded; packages are kept in
runs/export_aot/ and reused). Energy + forces (+ stress for the boxes) per call on ethanol and
water boxes of 192 and 1,536 atoms, 2 threads, median of repeats:

- ``prebuilt graph``: the eager Potential, ``torch.jit.script(Potential)`` (what the OpenMM
  TorchForce runs) and the package, on the same graph;
- ``ase_calculator``: the user's path, ``MLFFCalculator(model=FILE)`` against
  ``MLFFCalculator(model=FILE.pt2)`` (graph building included).

The package's energies and forces are checked against the eager Potential on every system.

Usage: python benchmarks/export_aot.py [--models default tensornet] [--threads 2]
Writes benchmarks/results/export_aot.json and prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import benchmark_lock, median_time, record, versions, write_results  # noqa: E402
from neighbors import water_box  # noqa: E402

NAME = "export_aot"
OUT = ROOT / "runs" / NAME
REPEATS = {"ethanol": 20, "water_box_192": 7, "water_box_1536": 3}
TENSORNET = dict(elements=(1, 6, 7, 8), channels=128, num_layers=2, num_rbf=32, r_cut=5.0, dtype="float32")


def structures():
    from ase import Atoms
    from ase.build import molecule

    out = {"ethanol": molecule("CH3CH2OH")}
    for n in (192, 1536):
        pos, cell = water_box(n, seed=1)
        out[f"water_box_{n}"] = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    return out


def model_file(name: str) -> Path:
    """The model file of ``name`` (the TensorNet is written once, seeded)."""
    from mlff.assets_path import asset

    if name == "default":
        return Path(asset("models/mace_organic_gfn2_ensemble.pt"))
    path = OUT / "tensornet.pt"
    if not path.exists():
        from mlff.io import save_model
        from mlff.models.potential import Potential
        from mlff.models.tensornet import TensorNet, TensorNetConfig

        torch.manual_seed(0)
        OUT.mkdir(parents=True, exist_ok=True)
        save_model(Potential(TensorNet(TensorNetConfig(**TENSORNET))).eval(), path)
    return path


def package(name: str, source: Path) -> tuple:
    """``(path of the .pt2, its compile seconds)``; a package already built is reused."""
    from mlff.export import export_aot
    from mlff.io import load_model

    path = OUT / f"{name}.pt2"
    seconds = OUT / f"{name}.compile_s"
    if path.exists() and seconds.exists():
        return path, float(seconds.read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    export_aot(load_model(source), path)
    seconds.write_text(f"{time.perf_counter() - start:.1f}")
    return path, float(seconds.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["default", "tensornet"])
    parser.add_argument("--systems", nargs="*", default=list(REPEATS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from e3nn.util import jit as e3nn_jit

    from mlff.calculators.ase import MLFFCalculator
    from mlff.export import ExportedPotential
    from mlff.graph import atoms_to_graph
    from mlff.io import load_model

    vers = versions("e3nn")
    records: List[Dict[str, object]] = []
    rows = []
    with benchmark_lock(__file__):
        atoms_by_name = structures()
        for model in args.models:
            source = model_file(model)
            pt2, compile_s = package(model, source)
            eager = load_model(source)
            # as the TorchForce route scripts it (e3nn's fx-generated modules need e3nn's script)
            scripted = e3nn_jit.script(load_model(source), in_place=True)
            program = ExportedPotential(pt2)
            calc_file, calc_pt2 = MLFFCalculator(model=source), MLFFCalculator(model=pt2)
            dtype = program.metadata["dtype"]
            for name in args.systems:
                atoms = atoms_by_name[name]
                periodic = bool(atoms.pbc.all())
                g = atoms_to_graph(atoms, eager.r_cut, eager.elements, torch.float64)
                ref, got = eager(g, compute_stress=periodic), program(g, compute_stress=periodic)
                err_e = float((ref["energy"] - got["energy"]).abs().max())
                err_f = float((ref["forces"] - got["forces"]).abs().max())
                reps = REPEATS[name]
                t_eager = median_time(lambda: eager(g, True, periodic), reps)
                t_script = median_time(lambda: scripted(g, True, periodic), reps)
                t_aot = median_time(lambda: program(g, True, periodic), reps)

                def ase_call(calc):
                    def call():
                        calc.reset()  # a new calculation each time, not ASE's cached result
                        a = atoms.copy()
                        a.calc = calc
                        a.get_forces()
                    return call
                t_ase_file = median_time(ase_call(calc_file), reps)
                t_ase_pt2 = median_time(ase_call(calc_pt2), reps)
                common = dict(dtype=dtype, threads=args.threads, vers=vers, model=model,
                              compile_s=compile_s, max_abs_energy_error_eV=err_e, max_abs_force_error_eV_A=err_f)
                for peer, t_peer, path in (("torchscript", t_script, "prebuilt_graph"),
                                           ("eager", t_eager, "prebuilt_graph"),
                                           ("ase_calculator_model_file", t_ase_file, "ase_calculator")):
                    ours = t_ase_pt2 if path == "ase_calculator" else t_aot
                    records.append(record(NAME, name, len(atoms), "s_per_energy_forces", ours, peer, t_peer,
                                          path=path, **common))
                rows.append(f"| {model} | {name} | {len(atoms)} | {dtype} | {1e3 * t_eager:.1f} | "
                            f"{1e3 * t_script:.1f} | {1e3 * t_aot:.1f} | {t_script / t_aot:.2f} | "
                            f"{1e3 * t_ase_file:.1f} | {1e3 * t_ase_pt2:.1f} | {t_ase_file / t_ase_pt2:.2f} | "
                            f"{err_f:.0e} |")
                print(rows[-1], flush=True)
            print(f"{model}: compiled in {compile_s:.0f} s", flush=True)
    write_results(NAME, records, keep_previous_by=("model", "system", "peer", "threads"))
    print("| model | system | atoms | dtype | eager (ms) | TorchScript (ms) | .pt2 (ms) | vs TorchScript | "
          "ASE, model file (ms) | ASE, .pt2 (ms) | ASE speedup | max force diff (eV/A) |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
