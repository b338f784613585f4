"""Imported third-party MACE models: mlff (``mlff.io_import.mace_torch.import_mace``) against
mace-torch 0.3.16 on the same model file, same machine, same run.

Models (trained, from ../shared/pretrained; a missing file is skipped with a message): the
ANI-1x MACE (``mace_ani1x_small``, H C N O, 64x0e, r_max 5 A), the SPICE MACE
(``mace_spice_2022``, 15 elements, 32x0e, r_max 4.5 A, 2022 file format) and the Ge-Sb-Te MACE
(``mace_swa_L1``, 64x0e+64x1o, r_max 5 A).

1. Energy + forces per call (ms, median of repeats after warm-up calls, prebuilt neighbour list,
   inference mode on both sides), float32 and float64: the organic models on alanine dipeptide
   (22 atoms) and on a seeded, non-periodic 1,000-atom cluster of small H C N O molecules at
   liquid-like density; the Ge-Sb-Te model on a rattled 512-atom rock-salt cell (periodic).
   Each (model, system, dtype, side) runs in its own process (benchmarks/_imported_side.py).
   In float64 both sides' energies must agree to 1e-8 relative (a guard on the benchmark:
   the two sides evaluate the same model); the difference is recorded on every row.
2. OpenMM MD steps/s, alanine dipeptide in vacuum, float32, LangevinMiddle 0.5 fs, CPU platform:
   ``MLPotential('mlff', modelPath=<imported .pt>, implementation='torch')`` against openmm-ml's
   ``MLPotential('mace', modelPath=<the .model>)`` with ``precision='single'``.

The peer is benchmarks/.peer-venv (made on first use, see mace_vs_peer.py and openmm_md.py) or
the interpreter named by ``MLFF_PEER_PYTHON``. Conversions are written to a temporary folder
only, and ``--ours mlff-aot``'s compiled packages to runs/imported_aot/, which git ignores (the
models are third-party; see ../shared/pretrained/PROVENANCE.md).

Usage: python benchmarks/imported_vs_peer.py [--threads 2] [--repeats 10] [--models ...]
       [--systems ...] [--dtypes ...] [--no-md] [--ours mlff|mlff-aot] [--resume] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

PRETRAINED = Path(__file__).resolve().parents[1].parent / "shared" / "pretrained"
PDB = HERE.parent / "data" / "examples" / "alanine_dipeptide.pdb"
NAME = "imported_vs_peer"
#: folder -> (file, kind of systems it runs on)
MODELS = {"mace_ani1x_small": ("ani500k_small_CC.model", "organic"),
          "mace_spice_2022": ("MACE_SPICE.model", "organic"),
          "mace_swa_L1": ("mace_swa.model", "gst")}
#: system -> kind
SYSTEMS = {"alanine_dipeptide": "organic", "organic_cluster_1000": "organic", "gst_cell_512": "gst"}
#: models whose OpenMM rows run (organic only: the MD system is alanine dipeptide)
MD_MODELS = ("mace_ani1x_small", "mace_spice_2022")
MD_SYSTEM = "alanine_dipeptide_vacuum"
ENERGY_RTOL = 1e-8
#: glibc malloc settings equivalent to what ``import mlff`` sets (see mace_vs_peer.py)
MALLOC_TUNED_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
IDENTITY = ("model", "system", "dtype", "metric", "ours_kind")


# --- structures (positions in A) ---------------------------------------------------------------


def organic_cluster(n_atoms: int = 1000, spacing: float = 3.8, min_dist: float = 1.6, seed: int = 0):
    """A non-periodic cluster of exactly ``n_atoms`` atoms: small H C N O molecules (water,
    ammonia, formaldehyde, formic acid, methanol, acetonitrile, acetaldehyde), randomly rotated,
    on a jittered cubic grid of ``spacing`` A (liquid-like: about 1 g/cm^3 inside) filled from the
    centre out, no two atoms of different molecules closer than ``min_dist`` A. Seeded."""
    from ase import Atoms
    from ase.build import molecule
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    names = ("H2O", "NH3", "H2CO", "HCOOH", "CH3OH", "CH3CN", "CH3CHO")
    templates = {n: molecule(n) for n in names}
    by_size = {len(m): n for n, m in templates.items()}
    picks, left = [], n_atoms
    while left >= 10:  # molecules have 3-7 atoms: the last 3-9 atoms are one or two molecules
        name = names[rng.integers(len(names))]
        picks.append(name)
        left -= len(templates[name])
    picks += [by_size[k] for k in {3: [3], 4: [4], 5: [5], 6: [6], 7: [7], 8: [4, 4], 9: [3, 6]}[left]]
    half = int(np.ceil(len(picks) ** (1 / 3) / 2)) + 2
    grid = np.array([(i, j, k) for i in range(-half, half + 1) for j in range(-half, half + 1)
                     for k in range(-half, half + 1)], dtype=float) * spacing
    grid = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")]
    numbers: List[int] = []
    placed = np.zeros((0, 3))
    site = 0
    for name in picks:
        mol = templates[name]
        local = mol.positions - mol.positions.mean(0)
        while True:
            if site >= len(grid):
                raise RuntimeError("organic_cluster: ran out of grid sites; raise spacing or half")
            centre = grid[site] + rng.normal(0.0, 0.25, 3)
            tree = cKDTree(placed) if len(placed) else None
            for _ in range(50):
                pos = Rotation.random(random_state=rng).apply(local) + centre
                if tree is None or np.min(tree.query(pos)[0]) >= min_dist:
                    break
            else:
                site += 1  # this site is crowded: try the next one
                continue
            site += 1
            break
        placed = np.vstack([placed, pos])
        numbers += list(mol.numbers)
    return Atoms(numbers=numbers, positions=placed, pbc=False)


def gst_cell(cells: int = 4, a: float = 6.0, sb_fraction: float = 0.25, rattle: float = 0.05, seed: int = 0):
    """Rock-salt Ge/Te, ``cells`` conventional 8-atom cells (lattice ``a`` A) per side (512 atoms
    for 4), a seeded ``sb_fraction`` of the Ge sublattice replaced by Sb, rattled by
    ``rattle`` A (standard deviation). Periodic."""
    from ase.build import bulk

    atoms = bulk("GeTe", "rocksalt", a=a, cubic=True).repeat((cells, cells, cells))
    rng = np.random.default_rng(seed)
    ge = np.flatnonzero(atoms.numbers == 32)
    numbers = atoms.numbers.copy()
    numbers[rng.choice(ge, int(round(sb_fraction * len(ge))), replace=False)] = 51
    atoms.numbers = numbers
    atoms.rattle(rattle, seed=seed)
    return atoms


def write_structures(tmp: Path) -> Dict[str, Tuple[Path, int]]:
    """The three systems as extxyz files (both sides read the same positions)."""
    import ase.io

    structures = {"alanine_dipeptide": ase.io.read(PDB), "organic_cluster_1000": organic_cluster(),
                  "gst_cell_512": gst_cell()}
    out = {}
    for name, atoms in structures.items():
        out[name] = (tmp / f"{name}.xyz", len(atoms))
        ase.io.write(out[name][0], atoms, format="extxyz")
    return out


def write_md_system(tmp: Path) -> Path:
    """Alanine dipeptide for openmm_md.worker: atomic numbers, positions (nm), no box."""
    import ase.io

    from mlff.units import ANGSTROM_TO_NM

    atoms = ase.io.read(PDB)
    path = tmp / f"{MD_SYSTEM}.npz"
    np.savez(path, numbers=atoms.numbers, positions_nm=atoms.positions * ANGSTROM_TO_NM, box_nm=np.zeros((3, 3)))
    return path


# --- running the sides -------------------------------------------------------------------------


def peer_python(need_md: bool) -> str:
    """``MLFF_PEER_PYTHON`` if set, else benchmarks/.peer-venv (with openmm-ml when ``need_md``)."""
    if os.environ.get("MLFF_PEER_PYTHON"):
        return os.environ["MLFF_PEER_PYTHON"]
    if need_md:
        from openmm_md import ensure_peer
    else:
        from mace_vs_peer import ensure_peer
    return str(ensure_peer())


def _env(threads: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    # mace-torch models are pickled modules; e3nn 0.4.4 under torch 2.9 needs the old torch.load
    return dict(os.environ, OMP_NUM_THREADS=str(threads), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
                PYTHONWARNINGS="ignore", **(extra or {}))


def run_side(python: str, args: List[str], threads: int, extra_env: Optional[Dict[str, str]] = None) -> dict:
    """Run ``_imported_side.py ARGS`` with ``python``; its last stdout line is JSON."""
    res = subprocess.run([python, str(HERE / "_imported_side.py"), *args], capture_output=True,
                         text=True, env=_env(threads, extra_env))
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def previous_identities() -> set:
    path = RESULTS / f"{NAME}.json"
    if not path.exists():
        return set()
    return {tuple(r.get(k) for k in IDENTITY) for r in json.loads(path.read_text())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls on the molecule; half (at least 3) on the 1,000- and 512-atom systems")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--md-steps", type=int, default=40, help="timed MD steps (after 5 warm-up steps)")
    parser.add_argument("--no-md", action="store_true", help="skip the OpenMM MD rows")
    parser.add_argument("--ours", choices=["mlff", "mlff-aot"], default="mlff",
                        help="mlff's side: the imported model as it is, or compiled by mlff export --aot "
                             "(rows with ours_kind 'mlff-aot'; the MD rows run only with 'mlff')")
    parser.add_argument("--no-peer-malloc-tuned", action="store_true",
                        help="skip the extra mace-torch run with mlff's glibc malloc settings")
    parser.add_argument("--resume", action="store_true",
                        help="skip rows already in benchmarks/results/imported_vs_peer.json")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: molecule only, 2 repeats, 5 MD steps; results not written")
    args = parser.parse_args()
    if args.quick:
        args.systems, args.repeats, args.md_steps = ["alanine_dipeptide"], 2, 5

    present = []
    for folder in args.models:
        path = PRETRAINED / folder / MODELS[folder][0]
        if path.exists():
            present.append(folder)
        else:
            print(f"skipping {folder}: {path} is absent (third-party models live in ../shared/pretrained)",
                  file=sys.stderr)
    ours_kind = None if args.ours == "mlff" else args.ours  # None: the rows from before --ours
    do_md = not args.no_md and args.ours == "mlff" and any(m in MD_MODELS for m in present)
    peer = peer_python(do_md)
    probe = ("import importlib.metadata as m; print(m.version('mace-torch'), m.version('e3nn'), "
             + ("m.version('openmmml'))" if do_md else "'-')"))
    res = subprocess.run([peer, "-c", probe], capture_output=True, text=True, env=_env(1))
    if res.returncode != 0:
        raise SystemExit(f"peer interpreter {peer} lacks mace-torch, e3nn"
                         f"{' or openmm-ml (or pass --no-md)' if do_md else ''}:\n{res.stderr[-1000:]}")
    peer_v = res.stdout.split()[-3:]
    vers = versions("e3nn", "openmm", "openmmtorch", "openmmml")
    vers["peer"] = f"mace-torch {peer_v[0]} (e3nn {peer_v[1]})" + (f", openmm-ml {peer_v[2]}" if do_md else "")
    peer_call = f"mace-torch {peer_v[0]}"
    peer_md = f"openmm-ml {peer_v[2]} + mace-torch {peer_v[0]}" if do_md else None
    done = previous_identities() if args.resume else set()
    records: List[dict] = []
    guard_failures: List[str] = []
    notes: List[str] = []

    def save(rec: dict) -> None:
        records.append(rec)
        if not args.quick:  # after every row: a stopped run keeps what it measured
            write_results(NAME, records, keep_previous_by=IDENTITY)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        structures = write_structures(tmp)
        for folder in present:
            model_file = str(PRETRAINED / folder / MODELS[folder][0])
            for system in args.systems:
                if SYSTEMS[system] != MODELS[folder][1]:
                    continue
                path, n_atoms = structures[system]
                big = n_atoms >= 100
                repeats, warmup = (max(3, args.repeats // 2), 2) if big else (args.repeats, 3)
                if args.quick:
                    warmup = 2
                for dtype in args.dtypes:
                    if (folder, system, dtype, "ms_per_call", ours_kind) in done:
                        print(f"{folder} {system} {dtype}: in the results already (--resume)", file=sys.stderr)
                        continue
                    side_args = [model_file, str(path), dtype, str(args.threads), str(repeats), str(warmup)]
                    ours = run_side(sys.executable, ["call", args.ours, *side_args], args.threads)
                    theirs = run_side(peer, ["call", "mace-torch", *side_args], args.threads)
                    extra = {}
                    if not args.no_peer_malloc_tuned:
                        tuned = run_side(peer, ["call", "mace-torch", *side_args], args.threads, MALLOC_TUNED_ENV)
                        extra = dict(peer_malloc_tuned_ms_per_call=tuned["ms_per_call"],
                                     speedup_vs_peer_malloc_tuned=tuned["ms_per_call"] / ours["ms_per_call"])
                    rel = abs(ours["energy"] - theirs["energy"]) / abs(theirs["energy"])
                    if dtype == "float64" and not rel <= ENERGY_RTOL:
                        guard_failures.append(f"{folder} {system}: energies differ by {rel:.2e} relative "
                                              f"(mlff {ours['energy']!r} eV, mace-torch {theirs['energy']!r} eV)")
                    save(record(NAME, system, n_atoms, "ms_per_call", ours["ms_per_call"], peer_call,
                                theirs["ms_per_call"], dtype=dtype, threads=args.threads, vers=vers,
                                lower_is_better=True, model=folder, energy_rel_diff=rel,
                                energy_eV=ours["energy"], peer_energy_eV=theirs["energy"], repeats=repeats,
                                warmup=warmup, params=ours["params"], peer_params=theirs["params"],
                                max_rss_MB=ours["max_rss_MB"], peer_max_rss_MB=theirs["max_rss_MB"],
                                ours_kind=ours_kind, **extra))
                    print(f"{folder} {system} {dtype}: mlff {ours['ms_per_call']:.1f} ms, mace-torch "
                          f"{theirs['ms_per_call']:.1f} ms, energy rel diff {rel:.1e}", file=sys.stderr)

        if do_md:
            md_file = write_md_system(tmp)
            warmup = 2 if args.quick else 5
            for folder in (m for m in present if m in MD_MODELS):
                if (folder, MD_SYSTEM, "float32", "steps_per_s", None) in done:
                    print(f"{folder} MD: in the results already (--resume)", file=sys.stderr)
                    continue
                model_file = str(PRETRAINED / folder / MODELS[folder][0])
                md_args = [str(md_file), model_file, str(args.md_steps), str(warmup), str(args.threads)]
                try:
                    theirs = run_side(peer, ["md", "mace", *md_args], args.threads)
                except RuntimeError as err:
                    last = str(err).strip().splitlines()[-1]
                    notes.append(f"{folder}: openmm-ml's MLPotential('mace', modelPath=...) fails on this "
                                 f"file, MD row skipped ({last})")
                    print(notes[-1], file=sys.stderr)
                    continue
                from mlff.io import save_model
                from mlff.io_import.mace_torch import import_mace

                pot, meta = import_mace(model_file, dtype="float32")
                ours_file = tmp / f"{folder}_float32.pt"
                save_model(pot, ours_file, metadata=meta)
                md_args[1] = str(ours_file)
                ours = run_side(sys.executable, ["md", "torch", *md_args], args.threads)
                save(record(NAME, MD_SYSTEM, int(np.load(md_file)["numbers"].size), "steps_per_s",
                            ours["steps_per_s"], peer_md, theirs["steps_per_s"], dtype="float32",
                            threads=args.threads, vers=vers, lower_is_better=False, model=folder,
                            route="MLPotential('mlff', implementation='torch') vs MLPotential('mace', "
                            "precision='single')", platform="CPU", timed_steps=args.md_steps,
                            warmup_steps=warmup, timestep_fs=0.5))
                print(f"{folder} MD: mlff {ours['steps_per_s']:.2f} steps/s, openmm-ml "
                      f"{theirs['steps_per_s']:.2f} steps/s", file=sys.stderr)

    print("(--quick: results not written)\n" if args.quick else f"results: {RESULTS / (NAME + '.json')}\n")
    print("| model | system | atoms | dtype | metric | mlff | peer | speedup | peer, mlff's malloc | E rel diff |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|")
    for r in records:
        tuned = r.get("peer_malloc_tuned_ms_per_call")
        rel = r.get("energy_rel_diff")
        print(f"| {r['model']}{' (.pt2)' if r.get('ours_kind') else ''} | {r['system']} | {r['n_atoms']} | {r['dtype']} | {r['metric']} | "
              f"{r['ours']:.2f} | {r['peer_value']:.2f} | {r['speedup']:.2f}x | "
              f"{'-' if tuned is None else f'{tuned:.2f}'} | {'-' if rel is None else f'{rel:.1e}'} |")
    if records:
        met = sum(r["speedup"] >= 2.0 for r in records)
        print(f"\nbar (>= 2x): met on {met} of {len(records)} rows")
    for note in notes:
        print(f"note: {note}")
    for failure in guard_failures:
        print(f"ENERGY GUARD FAILED (float64, rtol {ENERGY_RTOL:g}): {failure}")
    return 1 if guard_failures else 0


if __name__ == "__main__":
    with benchmark_lock(__file__):
        sys.exit(main())
