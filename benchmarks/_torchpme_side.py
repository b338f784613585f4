"""One system of benchmarks/longrange_vs_torchpme.py, run in benchmarks/.torchpme-venv (mlff and
torch from the project venv, torch-pme only there): the Coulomb energy and forces of fixed point
charges by mlff's Ewald sums (the pieces of the long-range block: real space on a neighbour
list, smooth PME on a mesh, self and background terms) and by torch-pme's PMECalculator, with
the same splitting, real-space pairs and mesh, against mlff's exact Ewald reference
(``mlff.nn.ewald.coulomb_energy`` at accuracy 1e-10, up to 2,000 atoms: its phase matrix
outgrows the memory above that, where the two sides are compared with each other).

Usage: python _torchpme_side.py {nacl,water} N_ATOMS THREADS REPEATS
Prints one JSON line: n_atoms, ms per energy + forces call for each side (ours; torch-pme with
our split on the smallest power-of-two grid holding ours; torch-pme as its own tuner sets it up
for the same accuracy), each side's energy and largest force error against the reference, the
splittings and the grids.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import median_time  # noqa: E402

#: real-space cutoff (A) and Ewald accuracy of both sides (the long-range block's defaults are
#: the model's r_cut and 1e-6)
R_CUT, ACCURACY = 5.0, 1e-6
#: the plain-Ewald reference stores [atoms, k vectors] phases: above this it would not fit
REFERENCE_MAX_ATOMS = 2000


def nacl(n_atoms: int):
    """Rock salt (a = 5.64 A) with about ``n_atoms`` ions: charges +1 / -1."""
    from ase.build import bulk

    reps = max(1, round((n_atoms / 8) ** (1 / 3)))
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(reps)
    charges = np.where(atoms.numbers == 11, 1.0, -1.0)
    return atoms, charges


def water(n_atoms: int):
    """The benchmarks' water box with TIP3P charges (O -0.834, H +0.417)."""
    from ase import Atoms

    from neighbors import water_box

    pos, cell = water_box(n_atoms, seed=1)
    atoms = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    charges = np.where(atoms.numbers == 8, -0.834, 0.417)
    return atoms, charges


def main() -> None:
    kind, n_req, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    import torchpme

    from mlff.neighbors import neighbor_list
    from mlff.nn import ewald, mesh
    from mlff.units import COULOMB_EV_A

    atoms, q_np = (nacl if kind == "nacl" else water)(n_req)
    dtype = torch.float64
    pos0 = torch.tensor(atoms.positions, dtype=dtype)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=dtype)
    q = torch.tensor(q_np, dtype=dtype)
    n = len(atoms)

    alpha, k_cut = ewald.ewald_splitting(R_CUT, ACCURACY)
    # the long-range block's mesh (B-spline order = torch-pme's interpolation nodes)
    order, oversample = mesh.ORDER, mesh.OVERSAMPLE
    shape = mesh.grid_shape(cell, k_cut, order, oversample)
    edge_index, shifts = neighbor_list(pos0, R_CUT, cell, torch.ones(3, dtype=torch.bool))
    half = edge_index[0] < edge_index[1]  # torch-pme takes each pair once
    pairs, pair_shifts = edge_index[:, half], shifts[half].to(dtype)

    def ours(pos):
        vec = pos[edge_index[0]] - pos[edge_index[1]] + shifts.to(dtype) @ cell
        pair = ewald.real_space_kernel(torch.linalg.norm(vec, dim=1), alpha, 0.0, R_CUT) * q[edge_index[0]]
        phi = torch.zeros_like(q).index_add(0, edge_index[1], pair).unsqueeze(0)
        phi = phi + mesh.coulomb_mesh_potential(q.unsqueeze(0), pos.unsqueeze(0), cell.unsqueeze(0), alpha,
                                                k_cut, order, oversample)
        phi = phi + ewald.ewald_self_potential(q.unsqueeze(0), alpha)
        volume = torch.abs(torch.linalg.det(cell))
        return COULOMB_EV_A * (0.5 * (q * phi[0]).sum() + ewald.background_energy(q.sum(), volume, alpha))

    # torch-pme's smearing sigma: its split erf(r / sqrt(2) sigma) is ours with sigma = 1 / (sqrt(2) alpha).
    # Its grids have 2^k points (next power of two of 2 L / spacing + 1): "matched" gets the
    # smallest one that holds ours along every edge, with the same split and order; "tuned" is
    # what torch-pme's own tuner picks (smearing, mesh, nodes) for the same accuracy and pairs.
    from torchpme.lib.kvectors import get_ns_mesh

    smearing = 1.0 / (math.sqrt(2.0) * alpha)
    edge = float(torch.linalg.norm(cell, dim=1).max())
    power = 2 ** math.ceil(math.log2(max(shape)))
    matched = (smearing, {"mesh_spacing": 2.0 * edge / (power - 1.5), "interpolation_nodes": order})
    vec0 = pos0[pairs[0]] - pos0[pairs[1]] + pair_shifts @ cell
    tuned_smearing, tuned_params, _ = torchpme.tuning.tune_pme(
        q.unsqueeze(1), cell, pos0, R_CUT, pairs.T.contiguous(), torch.linalg.norm(vec0, dim=1),
        prefactor=COULOMB_EV_A, accuracy=ACCURACY)
    charges_col = q.unsqueeze(1)
    peers = {}
    for name, (sm, params) in (("matched", matched), ("tuned", (tuned_smearing, tuned_params))):
        calc = torchpme.PMECalculator(torchpme.CoulombPotential(smearing=float(sm), prefactor=COULOMB_EV_A),
                                      mesh_spacing=float(params["mesh_spacing"]),
                                      interpolation_nodes=int(params["interpolation_nodes"]),
                                      full_neighbor_list=False).to(dtype=dtype)

        def peer(pos, calc=calc):
            vec = pos[pairs[0]] - pos[pairs[1]] + pair_shifts @ cell  # the neighbour list's convention
            potentials = calc(charges_col, cell, pos, pairs.T.contiguous(), torch.linalg.norm(vec, dim=1))
            return (charges_col * potentials).sum()  # the calculator's potential holds the 1/2

        peers[f"torchpme_{name}"] = peer
        grid = [int(x) for x in get_ns_mesh(cell, float(params["mesh_spacing"]))]
        peers[f"torchpme_{name}_info"] = {"smearing_A": float(sm), "mesh": grid,
                                          "interpolation_nodes": int(params["interpolation_nodes"])}

    def energy_forces(fn):
        pos = pos0.clone().requires_grad_(True)
        e = fn(pos)
        (g,) = torch.autograd.grad(e, pos)
        return float(e.detach()), -g

    sides = {"ours": ours, "torchpme_matched": peers["torchpme_matched"], "torchpme_tuned": peers["torchpme_tuned"]}
    results = {name: energy_forces(fn) for name, fn in sides.items()}
    out = {"system": kind, "n_atoms": n, "alpha_per_A": alpha, "mesh": shape, "order": order,
           "r_cut_A": R_CUT, "accuracy": ACCURACY}
    for name in ("torchpme_matched", "torchpme_tuned"):
        out[name] = peers[f"{name}_info"]
    if n <= REFERENCE_MAX_ATOMS:
        pos = pos0.clone().requires_grad_(True)
        e_ref = ewald.coulomb_energy(q, pos, cell, periodic=True, r_cut=8.0, accuracy=1e-10)
        (g_ref,) = torch.autograd.grad(e_ref, pos)
        f_ref, e_ref = -g_ref, float(e_ref.detach())
        out["energy_ref_eV"] = e_ref
        for name, (e, f) in results.items():
            out[f"{name}_energy_error_eV"] = abs(e - e_ref)
            out[f"{name}_force_error_eV_A"] = float((f - f_ref).abs().max())
    # ours against torch-pme with the same split (on every system)
    (e0, f0), (e1, f1) = results["ours"], results["torchpme_matched"]
    out["ours_vs_matched_energy_eV"] = abs(e0 - e1)
    out["ours_vs_matched_force_eV_A"] = float((f0 - f1).abs().max())
    # alternate the sides call by call; the median of each
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            times[name].append(median_time(lambda fn=fn: energy_forces(fn), 1, warmup=1 if not times[name] else 0))
    for name, ts in times.items():
        out[f"{name}_ms"] = 1e3 * float(np.median(ts))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
