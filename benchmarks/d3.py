"""D3(BJ) prior speed against the reference ``dftd3`` library (Fortran, analytic gradients).

The prior alone (:class:`mlff.nn.dispersion.D3Dispersion`, D3(BJ)-PBE two-body, the ``dftd3``
default cutoffs of 60 Bohr for pairs and 40 for CN) and ``dftd3`` with the same parameters and
``atm=False``, both computing energy and forces (and the virial of periodic cells), float64,
on ethanol, C60 and water boxes of 192 and 1,536 atoms at 1 g/cm^3. Ours is timed in eager
mode (its neighbour list from vesin) and under TorchScript (the pure-PyTorch list that a
deployed OpenMM TorchForce uses). The energies of the two codes are recorded next to the times.

Usage: python benchmarks/d3.py [--threads 2] [--systems ethanol c60 water_192 water_1536]
Writes benchmarks/results/d3.json and prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_lock, median_time, record, versions, write_results  # noqa: E402
from neighbors import water_box  # noqa: E402

from mlff.units import BOHR_TO_ANGSTROM, HARTREE_TO_EV  # noqa: E402

NAME = "d3"


def system(name: str):
    """``(numbers [N], positions [N, 3] A, cell [3, 3] A or None)``."""
    from ase.build import molecule

    if name == "ethanol":
        a = molecule("CH3CH2OH")
        return a.numbers, a.positions, None
    if name == "c60":
        a = molecule("C60")
        return a.numbers, a.positions, None
    n = int(name.split("_")[1])
    pos, cell = water_box(n)
    return np.array([8, 1, 1] * (len(pos) // 3)), pos, cell


def ours_call(module, numbers, positions, cell):
    elements = sorted(set(numbers.tolist()))
    species = torch.tensor([elements.index(z) for z in numbers])
    periodic = cell is not None
    cell_t = torch.tensor(cell if periodic else np.zeros((3, 3))).view(1, 1, 3, 3)
    pbc = torch.full((1, 3), periodic)
    ptr = torch.tensor([0, len(numbers)])
    empty_edges, empty_lengths = torch.zeros(2, 0, dtype=torch.long), torch.zeros(1, 0, 1, dtype=torch.float64)
    pos0 = torch.tensor(positions).unsqueeze(0)

    def call():
        pos = pos0.clone().requires_grad_(True)
        strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=periodic)
        ctx = {"positions": pos + pos @ strain, "cell": cell_t + cell_t @ strain, "pbc": pbc, "ptr": ptr}
        energy = module(species, empty_edges, empty_lengths, ctx).sum()
        grads = torch.autograd.grad(energy, [pos, strain] if periodic else [pos])
        return float(energy), grads
    return call


def dftd3_call(numbers, positions, cell):
    from dftd3.interface import DispersionModel, RationalDampingParam

    periodic = cell is not None
    model = DispersionModel(numbers, positions / BOHR_TO_ANGSTROM, cell / BOHR_TO_ANGSTROM if periodic else None,
                            np.ones(3, bool) if periodic else None)
    param = RationalDampingParam(method="pbe", atm=False)

    def call():
        res = model.get_dispersion(param, grad=True)
        return float(res["energy"]) * HARTREE_TO_EV, res
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--systems", nargs="*", default=["ethanol", "c60", "water_192", "water_1536"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mlff.nn.dispersion import D3Dispersion

    vers = versions("dftd3", "tad-dftd3", "vesin")
    records: List[Dict[str, object]] = []
    rows = []
    with benchmark_lock(__file__):
        for name in args.systems:
            numbers, positions, cell = system(name)
            n = len(numbers)
            eager = D3Dispersion(sorted(set(numbers.tolist())), functional="pbe")
            peer = dftd3_call(numbers, positions, cell)
            repeats = 5 if n <= 200 else 3
            t_peer = median_time(peer, repeats)
            e_peer = peer()[0]
            for mode, module in (("eager", eager), ("torchscript", torch.jit.script(eager))):
                call = ours_call(module, numbers, positions, cell)
                t = median_time(call, repeats)
                e = call()[0]
                rec = record(NAME, name, n, "s_per_energy_forces", t, "dftd3", t_peer, dtype="float64",
                             threads=args.threads, vers=vers, mode=mode, energy_eV=e, peer_energy_eV=e_peer)
                records.append(rec)
                rows.append(f"| {name} | {n} | {mode} | {1e3 * t:.1f} | {1e3 * t_peer:.1f} | "
                            f"{rec['speedup']:.2f} | {abs(e - e_peer):.1e} |")
                print(rows[-1], flush=True)
    write_results(NAME, records, keep_previous_by=("system", "mode", "threads"))
    print("| system | atoms | mlff mode | mlff D3 (ms) | dftd3 (ms) | speedup | abs(dE) (eV) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
