"""``mlff label``, ``sample``, ``stats``, ``dataset`` and ``label-demo``: the data side.

Building these parsers imports only light modules (:mod:`mlff.data.label_settings`,
:mod:`mlff.defaults`); each command imports its library code when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict

from mlff.data.label_settings import METHODS, LabelSettings
from mlff.defaults import DEFAULT_R_CUT
from mlff.md_workflows.cli._common import COMMANDS, Subparsers, positive_int


def add_label(sub: Subparsers) -> None:
    """``mlff label IN -o OUT``."""
    d = LabelSettings()
    p = sub.add_parser("label", help=COMMANDS["label"], description=COMMANDS["label"] + (
        ". Resumable: a rerun skips frames already labelled; OUT appears only when complete."))
    p.add_argument("input", help="structures to label (extxyz, xyz, pdb, anything ase.io reads)")
    p.add_argument("-o", "--output", required=True, help="labelled extxyz file to write")
    p.add_argument("--method", default=d.method, choices=METHODS)
    p.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")
    p.add_argument("--chunk-size", type=positive_int, default=64, help="frames per checkpoint")
    p.add_argument("--accuracy", type=float, default=d.accuracy)
    p.add_argument("--electronic-temperature", type=float, default=d.electronic_temperature,
                   help="Fermi smearing temperature in K (default %(default)s)")
    p.add_argument("--energy-key", default=d.energy_key)
    p.add_argument("--forces-key", default=d.forces_key)
    p.add_argument("--stress-key", default=d.stress_key)
    p.set_defaults(func=run_label)


def run_label(args: argparse.Namespace) -> int:
    """Label the frames of ``args.input`` (:func:`mlff.data.label.label_file`)."""
    from mlff.data.label import label_file

    settings = LabelSettings(method=args.method, accuracy=args.accuracy,
                             electronic_temperature=args.electronic_temperature,
                             energy_key=args.energy_key, forces_key=args.forces_key,
                             stress_key=args.stress_key)
    report = label_file(args.input, args.output, settings, args.workers, args.chunk_size)
    print(
        f"{report.output}: {report.n_labelled} of {report.n_input} frames labelled with "
        f"{settings.method} ({report.n_skipped_already_done} were already done, "
        f"{len(report.failed)} failed)"
    )
    for index, why in report.failed:
        print(f"  frame {index} failed: {why}", file=sys.stderr)
    return 0


def add_sample(sub: Subparsers) -> None:
    """``mlff sample MOLECULE... -o OUT``."""
    p = sub.add_parser("sample", help=COMMANDS["sample"], description=(
        "Relax each molecule with GFN2-xTB, then sample it by Langevin MD at each MD temperature "
        "and by normal-mode sampling at each normal-mode temperature. Writes unlabelled frames; "
        "label them with `mlff label`."))
    p.add_argument("molecules", nargs="+",
                   help="names known to ase.build.molecule (e.g. CH3CH2OH) or structure files")
    p.add_argument("-o", "--output", required=True, help="extxyz file to write")
    p.add_argument("--md-temperatures", type=float, nargs="*", default=[300.0, 500.0, 750.0, 1000.0],
                   help="K")
    p.add_argument("--md-frames", type=int, default=20, help="MD frames per temperature")
    p.add_argument("--stride", type=positive_int, default=40, help="MD steps between frames")
    p.add_argument("--timestep", type=float, default=0.5, help="MD time step in fs")
    p.add_argument("--nm-temperatures", type=float, nargs="*", default=[300.0, 600.0, 1000.0],
                   help="K")
    p.add_argument("--nm-frames", type=int, default=10, help="normal-mode frames per temperature")
    p.add_argument("--rattle", type=float, default=0.0,
                   help="also add --rattle-frames random displacements of this width (A)")
    p.add_argument("--rattle-frames", type=int, default=0)
    p.add_argument("--method", default=LabelSettings().method, choices=METHODS,
                   help="method driving MD and the Hessian")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    """Sample every molecule of ``args.molecules`` into one extxyz file."""
    import os

    from tqdm.auto import tqdm

    from mlff.atomic import atomic_write_extxyz, check_writable
    from mlff.data.label import make_calculator
    from mlff.data.sampling import load_molecule, random_displacement_frames, sample_molecule

    check_writable(Path(args.output).parent, "output folder")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = LabelSettings(method=args.method)
    frames = []
    for k, spec in enumerate(tqdm(args.molecules, desc="sampling", unit="molecule")):
        for c, atoms in enumerate(load_molecule(spec)):
            frames += sample_molecule(
                atoms,
                lambda: make_calculator(settings),
                md_temperatures=args.md_temperatures,
                md_frames_per_temperature=args.md_frames,
                nm_temperatures=args.nm_temperatures,
                nm_frames_per_temperature=args.nm_frames,
                stride=args.stride,
                timestep_fs=args.timestep,
                seed=args.seed * 1000 + 10 * k + c,
            )
            if args.rattle > 0 and args.rattle_frames > 0:
                frames += random_displacement_frames(atoms, args.rattle, args.rattle_frames,
                                                     seed=args.seed + k)
    atomic_write_extxyz(Path(args.output), frames)
    print(f"{args.output}: {len(frames)} frames from {len(args.molecules)} molecule(s)")
    return 0


def add_stats(sub: Subparsers) -> None:
    """``mlff stats DATA...``."""
    d = LabelSettings()
    p = sub.add_parser("stats", help=COMMANDS["stats"], description=COMMANDS["stats"])
    p.add_argument("data", nargs="+", help="labelled files (extxyz or anything ase.io reads)")
    p.add_argument("--energy-key", default=d.energy_key)
    p.add_argument("--forces-key", default=d.forces_key)
    p.add_argument("--r-cut", dest="r_cut", type=float, default=DEFAULT_R_CUT,
                   help="radial cutoff of the neighbour count, A (default %(default)s)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the statistics here")
    p.set_defaults(func=run_stats)


def format_statistics(stats: Dict[str, object]) -> str:
    """Human-readable summary of :func:`mlff.data.statistics.dataset_statistics` output."""
    lines = [
        f"configurations      {stats['n_configs']}",
        f"atoms               {stats['n_atoms_total']} (per structure "
        f"{stats['n_atoms']['min']}-{stats['n_atoms']['max']}, mean {stats['n_atoms']['mean']:.1f})",
        "elements            " + ", ".join(f"{k}: {v}" for k, v in stats["elements"].items()),
        "E0s (eV)            " + (", ".join(
            f"{k}: {v:.4f} ({stats['e0_source'][k]})" for k, v in stats["e0s_eV"].items())
            if stats["e0s_eV"] else f"not determined: {stats.get('e0_note')}"),
    ]
    if stats["interaction_energy_per_atom_eV"]["mean"] is not None:
        lines.append(
            f"E - sum E0 per atom {stats['interaction_energy_per_atom_eV']['mean']:.4f} +/- "
            f"{stats['interaction_energy_per_atom_eV']['std']:.4f} eV")
    lines += [
        f"force RMS           {stats['force_rms_eV_per_A']:.4f} eV/A "
        f"(max |F_i,a| {stats['force_max_eV_per_A']:.3f})",
        f"mean neighbours     {stats['avg_num_neighbors']:.3f} within "
        f"{stats['avg_num_neighbors_cutoff_A']} A",
        "sources             " + ", ".join(f"{k}: {v}" for k, v in stats["sources"].items()),
    ]
    if "splits" in stats:
        lines.append("splits              " + ", ".join(f"{k}: {v}" for k, v in stats["splits"].items()))
    return "\n".join(lines)


def run_stats(args: argparse.Namespace) -> int:
    """Print (and optionally write) the statistics of ``args.data``."""
    from mlff.data.dataset import read_frames
    from mlff.data.statistics import dataset_statistics

    frames = [f for path in args.data for f in read_frames(path)]
    stats = dataset_statistics(frames, args.energy_key, args.forces_key, args.r_cut)
    print(format_statistics(stats))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(stats, indent=1))
    return 0


def add_dataset(sub: Subparsers) -> None:
    """``mlff dataset NAME --out DIR``."""
    p = sub.add_parser("dataset", help=COMMANDS["dataset"], description=(
        "Build a reference dataset by its recipe (resumable: rerun the same command after a kill)."))
    p.add_argument("name", choices=["organic-gfn2"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every sampling budget (1.0 is the shipped dataset)")
    p.set_defaults(func=run_dataset)


def run_dataset(args: argparse.Namespace) -> int:
    """Build the dataset ``args.name`` (:func:`mlff.data.organic_gfn2.build`)."""
    from mlff.data.organic_gfn2 import build

    stats = build(args.out, seed=args.seed, n_workers=args.workers, scale=args.scale)
    print(format_statistics(stats))
    print(f"written to {args.out}")
    return 0


def add_label_demo(sub: Subparsers) -> None:
    """``mlff label-demo``."""
    p = sub.add_parser("label-demo", help=COMMANDS["label-demo"], description=(
        "Sample alanine dipeptide with GFN2-xTB MD, label the frames with GFN2-xTB, print their "
        "statistics and those of the shipped organic_gfn2 dataset."))
    p.add_argument("--out", default="runs/demo", help="output folder (default %(default)s)")
    p.add_argument("--frames", type=positive_int, default=16, help="MD frames per temperature")
    p.set_defaults(func=run_label_demo)


def run_label_demo(args: argparse.Namespace) -> int:
    """Sample and label alanine dipeptide; print its statistics and the shipped dataset's."""
    import time

    from mlff.assets_path import asset
    from mlff.data.dataset import read_frames
    from mlff.atomic import atomic_write_extxyz
    from mlff.data.label import label_file, make_calculator
    from mlff.data.organic_gfn2 import isolated_atoms
    from mlff.data.sampling import load_molecule, sample_molecule
    from mlff.data.statistics import dataset_statistics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    atoms = load_molecule(str(asset("examples/alanine_dipeptide.pdb")))[0]
    sampled = out / "alanine_dipeptide_sampled.extxyz"
    frames = sample_molecule(
        atoms, lambda: make_calculator(LabelSettings()), md_temperatures=(300.0, 600.0),
        md_frames_per_temperature=args.frames, nm_temperatures=(300.0,),
        nm_frames_per_temperature=args.frames, seed=0,
    )
    atomic_write_extxyz(sampled, isolated_atoms() + frames)  # isolated atoms give the E0s
    labelled = out / "alanine_dipeptide_gfn2.extxyz"
    if labelled.exists():
        labelled.unlink()
    d = LabelSettings()
    label_file(sampled, labelled, d, n_workers=2, chunk_size=16)
    stats = dataset_statistics(read_frames(labelled), d.energy_key, d.forces_key, DEFAULT_R_CUT)
    print(f"\n== alanine dipeptide, GFN2-xTB ({time.time() - t0:.0f} s): {labelled}")
    print(format_statistics(stats))
    shipped = asset("datasets/organic_gfn2/stats.json")
    print(f"\n== shipped dataset organic_gfn2 ({shipped.parent})")
    print(format_statistics(json.loads(shipped.read_text())))
    return 0
