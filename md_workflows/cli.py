"""The ``mlff`` command line.

Each subcommand builds a validated configuration and calls library code; the parsing lives
here and nowhere else. Run ``mlff <command> --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

COMMANDS: Dict[str, str] = {
    "label": "label structures with GFN2-xTB (tblite): energies, forces, stress",
    "sample": "sample diverse configurations of molecules (MD, normal modes, displacements)",
    "stats": "statistics of a labelled dataset (E0s, neighbours, force RMS, ...)",
    "dataset": "build the project's reference datasets (organic-gfn2)",
    "train": "train a model from a YAML config (resumable with --resume)",
    "eval": "errors of a model on labelled data (MAE/RMSE, per element) with parity plots",
    "md": "molecular dynamics (OpenMM or ASE; NVE/NVT/NPT; uncertainty monitor; --resume)",
    "relax": "geometry relaxation (ASE FIRE/BFGS/LBFGS with optional cell filter, or OpenMM)",
    "analyze": "trajectory analysis with mdtraj: RMSD, Rg, dihedrals, Ramachandran, RDF",
    "demo": "the main job: the default ensemble runs alanine dipeptide MD in OpenMM with the UQ monitor",
    "label-demo": "sample and label alanine dipeptide with GFN2-xTB (the data side of the suite)",
    "fe": "alchemical free energies: hydration free energies with MBAR/BAR/TI/EXP (resumable)",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_label(sub: argparse._SubParsersAction) -> None:
    from mlff.data.label import METHODS, LabelSettings

    d = LabelSettings()
    p = sub.add_parser("label", help=COMMANDS["label"], description=COMMANDS["label"] + (
        ". Resumable: a rerun skips frames already labelled; OUT appears only when complete."))
    p.add_argument("input", help="structures to label (extxyz, xyz, pdb, anything ase.io reads)")
    p.add_argument("-o", "--output", required=True, help="labelled extxyz file to write")
    p.add_argument("--method", default=d.method, choices=METHODS)
    p.add_argument("--workers", type=_positive_int, default=2, help="processes (default 2)")
    p.add_argument("--chunk-size", type=_positive_int, default=64, help="frames per checkpoint")
    p.add_argument("--accuracy", type=float, default=d.accuracy)
    p.add_argument("--electronic-temperature", type=float, default=d.electronic_temperature,
                   help="Fermi smearing temperature in K (default %(default)s)")
    p.add_argument("--energy-key", default=d.energy_key)
    p.add_argument("--forces-key", default=d.forces_key)
    p.add_argument("--stress-key", default=d.stress_key)
    p.set_defaults(func=_run_label)


def _run_label(args: argparse.Namespace) -> int:
    from mlff.data.label import LabelSettings, label_file

    settings = LabelSettings(
        method=args.method,
        accuracy=args.accuracy,
        electronic_temperature=args.electronic_temperature,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
    )
    report = label_file(args.input, args.output, settings, args.workers, args.chunk_size)
    print(
        f"{report.output}: {report.n_labelled} of {report.n_input} frames labelled with "
        f"{settings.method} ({report.n_skipped_already_done} were already done, "
        f"{len(report.failed)} failed)"
    )
    for index, why in report.failed:
        print(f"  frame {index} failed: {why}", file=sys.stderr)
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help=COMMANDS["sample"], description=(
        "Relax each molecule with GFN2-xTB, then sample it by Langevin MD at each MD temperature "
        "and by normal-mode sampling at each normal-mode temperature. Writes unlabelled frames; "
        "label them with `mlff label`."))
    p.add_argument("molecules", nargs="+",
                   help="names known to ase.build.molecule (e.g. CH3CH2OH) or structure files")
    p.add_argument("-o", "--output", required=True, help="extxyz file to write")
    p.add_argument("--md-temperatures", type=float, nargs="*", default=[300.0, 500.0, 750.0, 1000.0])
    p.add_argument("--md-frames", type=int, default=20, help="MD frames per temperature")
    p.add_argument("--stride", type=_positive_int, default=40, help="MD steps between frames")
    p.add_argument("--timestep", type=float, default=0.5, help="MD time step in fs")
    p.add_argument("--nm-temperatures", type=float, nargs="*", default=[300.0, 600.0, 1000.0])
    p.add_argument("--nm-frames", type=int, default=10, help="normal-mode frames per temperature")
    p.add_argument("--rattle", type=float, default=0.0,
                   help="also add --rattle-frames random displacements of this width (A)")
    p.add_argument("--rattle-frames", type=int, default=0)
    p.add_argument("--method", default="GFN2-xTB", help="method driving MD and the Hessian")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    import os

    from tqdm.auto import tqdm

    from mlff.data.label import LabelSettings, atomic_write_extxyz, make_calculator
    from mlff.data.sampling import load_molecule, random_displacement_frames, sample_molecule

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


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help=COMMANDS["stats"], description=COMMANDS["stats"])
    p.add_argument("data", nargs="+", help="labelled files (extxyz or anything ase.io reads)")
    p.add_argument("--energy-key", default="energy_xtb")
    p.add_argument("--forces-key", default="forces_xtb")
    p.add_argument("--cutoff", type=float, default=5.0, help="for the neighbour count (A)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the statistics here")
    p.set_defaults(func=_run_stats)


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


def _run_stats(args: argparse.Namespace) -> int:
    from mlff.data.dataset import read_frames
    from mlff.data.statistics import dataset_statistics

    frames = [f for path in args.data for f in read_frames(path)]
    stats = dataset_statistics(frames, args.energy_key, args.forces_key, args.cutoff)
    print(format_statistics(stats))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(stats, indent=1))
    return 0


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help=COMMANDS["dataset"], description=(
        "Build a reference dataset by its recipe (resumable: rerun the same command after a kill)."))
    p.add_argument("name", choices=["organic-gfn2"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive_int, default=2)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every sampling budget (1.0 is the shipped dataset)")
    p.set_defaults(func=_run_dataset)


def _run_dataset(args: argparse.Namespace) -> int:
    from mlff.data.organic_gfn2 import build

    stats = build(args.out, seed=args.seed, n_workers=args.workers, scale=args.scale)
    print(format_statistics(stats))
    print(f"written to {args.out}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=COMMANDS["train"], description=(
        "Train a model as the YAML config says (see mlff/train/config.py). Checkpoints are "
        "written atomically to OUT/checkpoint.pt; after a kill, rerun with --resume."))
    p.add_argument("config", help="YAML training config")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--finalize", action="store_true", help=(
        "do not train: recalibrate (ensembles), evaluate and export the run's current "
        "best_model.pt, e.g. to use a run that is still going"))
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from mlff.train.trainer import run_training

    summary = run_training(args.config, resume=args.resume, finalize_only=args.finalize)
    print(json.dumps(summary, default=str))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=COMMANDS["eval"], description=COMMANDS["eval"])
    p.add_argument("model", help="model file (.pt written by mlff train)")
    p.add_argument("data", nargs="+", help="labelled files")
    p.add_argument("--out", default="eval", help="folder for eval.json and parity plots")
    p.add_argument("--energy-key", default="energy_xtb")
    p.add_argument("--forces-key", default="forces_xtb")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from mlff.data.dataset import DataKeys
    from mlff.train.evaluate import evaluate

    keys = DataKeys(energy=args.energy_key, forces=args.forces_key, stress=None, virial=None)
    results = evaluate(args.model, args.data, args.out, keys, args.batch_size)
    for name, m in results.items():
        if name == "model":
            continue
        e, f = m["energy_per_atom_meV"], m["forces_meV_per_A"]
        print(f"{name}: energy MAE {e['mae']:.2f} RMSE {e['rmse']:.2f} meV/atom; forces MAE "
              f"{f['mae']:.1f} RMSE {f['rmse']:.1f} meV/A ({e['n']} structures)")
        for el, fe in m["forces_meV_per_A_by_element"].items():
            print(f"    {el}: force MAE {fe['mae']:.1f} meV/A")
        if "uncertainty" in m:
            u = m["uncertainty"]
            raw, cal = u["components_raw"], u["components_recalibrated"]
            print(f"    ensemble: Spearman(force std, error) per atom {u['spearman_per_atom']:.2f}, "
                  f"per structure {u['spearman_per_structure']:.2f}; miscalibration area "
                  f"{raw['miscalibration_area']:.3f} raw, {cal['miscalibration_area']:.3f} "
                  f"recalibrated (x{u['std_scale']:.2f}); NLL {raw['nll']:.2f} raw, {cal['nll']:.2f}")
    print(f"written to {args.out}/eval.json, parity plots (and calibration plots for ensembles)")
    return 0


def _add_md(sub: argparse._SubParsersAction) -> None:
    from md_workflows.md import ENGINES, ENSEMBLES, MDConfig

    d = MDConfig(structure="")
    p = sub.add_parser("md", help=COMMANDS["md"], description=(
        "Run MD with an mlff model. Writes trajectory.dcd + topology.pdb, log.csv, traces.png, "
        "uncertainty.png (ensembles), final.pdb/.extxyz and checkpoint.npz to --out. After a "
        "kill, rerun with --resume: it continues from the last report step, no frame lost or "
        "repeated. Exit status 3: stopped by --uq-stop."))
    p.add_argument("structure", help="pdb (topology kept) or anything ase.io reads")
    p.add_argument("--model", default=d.model, help="model file or 'default' (the shipped ensemble)")
    p.add_argument("--engine", default=d.engine, choices=ENGINES)
    p.add_argument("--ensemble", default=d.ensemble, choices=ENSEMBLES)
    p.add_argument("--temperature", type=float, default=d.temperature, help="K (default %(default)s)")
    p.add_argument("--pressure", type=float, default=d.pressure, help="bar, NPT (default %(default)s)")
    p.add_argument("--timestep", type=float, default=d.timestep, help="fs (default %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=d.steps)
    p.add_argument("--report-every", type=_positive_int, default=d.report_every,
                   help="steps between frames, log rows, UQ checks and checkpoints")
    p.add_argument("--friction", type=float, default=d.friction, help="Langevin friction, 1/ps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hmr", action="store_true", help="hydrogen mass repartitioning (OpenMM), for 2 fs")
    p.add_argument("--hydrogen-mass", type=float, default=d.hydrogen_mass, help="amu with --hmr")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--device", default=d.device)
    p.add_argument("--platform", default=None, help="OpenMM platform (CPU, Reference, CUDA)")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--uq-warn", type=float, default=None,
                   help="warn and save the frame when the max per-atom force std exceeds this (eV/A)")
    p.add_argument("--uq-stop", type=float, default=None,
                   help="stop cleanly when the max per-atom force std exceeds this (eV/A)")
    p.add_argument("--extxyz", action="store_true", help="also write trajectory.extxyz")
    p.add_argument("--out", default=d.out)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_md)


def _md_config(args: argparse.Namespace):
    from md_workflows.md import MDConfig

    return MDConfig(
        structure=args.structure, out=args.out, model=args.model, engine=args.engine,
        ensemble=args.ensemble, temperature=args.temperature, pressure=args.pressure,
        timestep=args.timestep, steps=args.steps, report_every=args.report_every,
        friction=args.friction, seed=args.seed, hmr=args.hmr, hydrogen_mass=args.hydrogen_mass,
        dtype=args.dtype, device=args.device, platform=args.platform, threads=args.threads,
        uq_warn=args.uq_warn, uq_stop=args.uq_stop, write_extxyz=args.extxyz,
        progress=not args.no_progress,
    )


def _print_md_result(result, files: Optional[Dict[str, Path]] = None, command: str = "md") -> int:
    """Print what an MD run wrote (``files``: these instead of ``result.files``); exit status
    3 when the uncertainty monitor stopped it."""
    print(f"{result.steps_done} steps, {result.n_frames} frames in {result.wall_s:.0f} s "
          f"({result.ns_per_day:.3f} ns/day)")
    for name, path in (files if files is not None else result.files).items():
        print(f"  {name:18s} {path}")
    if result.stopped:
        print(f"mlff {command}: {result.stopped}", file=sys.stderr)
        return 3
    return 0


def _run_md(args: argparse.Namespace) -> int:
    from md_workflows.md import run_md

    return _print_md_result(run_md(_md_config(args), resume=args.resume))


def _add_relax(sub: argparse._SubParsersAction) -> None:
    from md_workflows.relax import OPTIMIZERS, RelaxConfig

    d = RelaxConfig(structure="")
    p = sub.add_parser("relax", help=COMMANDS["relax"], description=(
        "Relax a structure; writes OUT/relaxed.extxyz (+ relaxed.pdb for pdb input) and "
        "OUT/relax.log. Exit status 4 when not converged within --steps."))
    p.add_argument("structure")
    p.add_argument("--model", default=d.model)
    p.add_argument("--engine", default=d.engine, choices=["ase", "openmm"])
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--fmax", type=float, default=d.fmax, help="eV/A (default %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=d.steps)
    p.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    p.add_argument("--pressure", type=float, default=d.pressure, help="bar, with --cell")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--device", default=d.device)
    p.add_argument("--out", default=d.out)
    p.set_defaults(func=_run_relax)


def _run_relax(args: argparse.Namespace) -> int:
    from md_workflows.relax import RelaxConfig, relax

    res = relax(RelaxConfig(structure=args.structure, out=args.out, model=args.model,
                            engine=args.engine, optimizer=args.optimizer, fmax=args.fmax,
                            steps=args.steps, cell=args.cell, pressure=args.pressure,
                            dtype=args.dtype, device=args.device))
    state = "converged" if res.converged else "NOT converged"
    print(f"{state}: energy {res.energy:.6f} eV, max force {res.fmax_final:.5f} eV/A "
          f"(fmax {args.fmax}) after {res.steps} steps")
    for name, path in res.files.items():
        print(f"  {name:18s} {path}")
    if not res.converged:
        print(f"mlff relax: not converged within {args.steps} steps; raise --steps or --fmax, or "
              "check the structure", file=sys.stderr)
        return 4
    return 0


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help=COMMANDS["analyze"], description=(
        "Analyse a trajectory (an `mlff md` output folder, or a file with --topology): "
        "analysis.csv, rmsd_rg.png, ramachandran.png for peptides, rdf_A_B.csv/.png."))
    p.add_argument("trajectory", help="mlff md output folder or trajectory file")
    p.add_argument("--topology", default=None, help="topology (pdb) for a trajectory file")
    p.add_argument("--out", default=None, help="output folder (default: TRAJECTORY/analysis)")
    p.add_argument("--timestep-ps", type=float, default=None, help="time between frames (ps)")
    p.add_argument("--rdf", nargs="*", default=[], metavar="A-B",
                   help="element pairs for radial distribution functions, e.g. O-H O-O")
    p.add_argument("--rdf-max", type=float, default=6.0, help="RDF range (A)")
    p.set_defaults(func=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> int:
    from md_workflows.analysis import analyze

    pairs = []
    for spec in args.rdf:
        if spec.count("-") != 1:
            raise ValueError(f"--rdf pairs look like O-H, got {spec!r}")
        pairs.append(tuple(spec.split("-")))
    out = args.out or str(Path(args.trajectory) / "analysis" if Path(args.trajectory).is_dir()
                          else "analysis")
    files = analyze(args.trajectory, out, args.topology, args.timestep_ps, pairs, args.rdf_max)
    for name, path in files.items():
        print(f"  {name:18s} {path}")
    return 0


#: The demo's model: the shipped default ensemble.
DEMO_STRUCTURE = "examples/alanine_dipeptide.pdb"


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=COMMANDS["demo"], description=(
        "The main job: the shipped default ensemble model runs alanine dipeptide in vacuum "
        "through an OpenMM TorchForce, NVT 300 K, 2 fs steps with hydrogen mass repartitioning, "
        "20 ps, with the uncertainty monitor on; then writes the trajectory, traces, "
        "uncertainty trace and a Ramachandran plot and prints where they are."))
    p.add_argument("--model", default="default", help="model file (default: the shipped ensemble)")
    p.add_argument("--out", default="runs/demo_md", help="output folder (default %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=10000, help="2 fs steps (default 20 ps)")
    p.add_argument("--report-every", type=_positive_int, default=50)
    p.add_argument("--uq-warn", type=float, default=0.5, help="eV/A (default %(default)s)")
    p.add_argument("--uq-stop", type=float, default=2.0, help="eV/A (default %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=1, help=(
        "torch and OpenMM threads (default 1: more oversubscribes a busy 2-core machine)"))
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import shutil
    import time

    from calculators._common import default_model_path
    from md_workflows.analysis import analyze
    from md_workflows.md import MDConfig, run_md
    from mlff.assets_path import asset

    model = str(default_model_path()) if args.model == "default" else args.model
    if not Path(model).exists():
        raise FileNotFoundError(f"model file {model} does not exist; pass --model PATH")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # the demo always starts fresh
    t0 = time.time()
    cfg = MDConfig(structure=str(asset(DEMO_STRUCTURE)), out=str(out), model=model,
                   engine="openmm", ensemble="nvt", temperature=300.0, timestep=2.0, hmr=True,
                   hydrogen_mass=3.0, friction=1.0, steps=args.steps,
                   report_every=args.report_every, uq_warn=args.uq_warn, uq_stop=args.uq_stop,
                   threads=args.threads, progress=not args.no_progress)
    print(f"== alanine dipeptide, vacuum, OpenMM TorchForce, NVT 300 K, 2 fs + HMR, "
          f"{args.steps * 2e-3:g} ps, model {model}")
    result = run_md(cfg)
    files = dict(result.files)
    files.update(analyze(str(out), str(out / "analysis"), timestep_ps=args.report_every * 2e-3))
    print(f"demo total (MD + analysis): {time.time() - t0:.0f} s")
    shown = ("trajectory", "topology", "log", "traces", "uncertainty", "ramachandran",
             "analysis_csv", "rmsd_rg", "final", "uncertain_frames")
    return _print_md_result(result, {k: files[k] for k in shown if k in files}, "demo")


def _add_label_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-demo", help=COMMANDS["label-demo"], description=(
        "Sample alanine dipeptide with GFN2-xTB MD, label the frames with GFN2-xTB, print their "
        "statistics and those of the shipped organic_gfn2 dataset."))
    p.add_argument("--out", default="runs/demo", help="output folder (default %(default)s)")
    p.add_argument("--frames", type=_positive_int, default=16, help="MD frames per temperature")
    p.set_defaults(func=_run_label_demo)


def _run_label_demo(args: argparse.Namespace) -> int:
    import time

    from mlff.assets_path import asset
    from mlff.data.dataset import read_frames
    from mlff.data.label import LabelSettings, atomic_write_extxyz, label_file, make_calculator
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
    label_file(sampled, labelled, LabelSettings(), n_workers=2, chunk_size=16)
    stats = dataset_statistics(read_frames(labelled), "energy_xtb", "forces_xtb", 5.0)
    print(f"\n== alanine dipeptide, GFN2-xTB ({time.time() - t0:.0f} s): {labelled}")
    print(format_statistics(stats))
    shipped = asset("datasets/organic_gfn2/stats.json")
    print(f"\n== shipped dataset organic_gfn2 ({shipped.parent})")
    print(format_statistics(json.loads(shipped.read_text())))
    return 0


def _fe_overrides(args: argparse.Namespace) -> Dict[str, object]:
    keys = ("name", "forcefield", "box_edge_nm", "temperature_K", "timestep_fs",
            "equilibration_ps", "production_ps", "sample_every_ps", "water_platform",
            "vacuum_platform", "threads", "workers", "scheduler", "seed", "method")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _add_fe_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forcefield", choices=["gaff2", "gaff"], default=None,
                   help="small-molecule force field (default gaff2; gaff = GAFF 1.x as in FreeSolv)")
    p.add_argument("--box-edge-nm", dest="box_edge_nm", type=float, default=None,
                   help="cubic TIP3P box edge, nm (default 2.5)")
    p.add_argument("--temperature", dest="temperature_K", type=float, default=None, help="K (default 298.15)")
    p.add_argument("--timestep", dest="timestep_fs", type=float, default=None,
                   help="fs (default 4, with hydrogen masses of 3 amu)")
    p.add_argument("--equilibration-ps", dest="equilibration_ps", type=float, default=None,
                   help="per window (default 10)")
    p.add_argument("--production-ps", dest="production_ps", type=float, default=None,
                   help="per window (default 40)")
    p.add_argument("--sample-every-ps", dest="sample_every_ps", type=float, default=None,
                   help="energies at all windows every this many ps (default 1)")
    p.add_argument("--platform", dest="water_platform", default=None,
                   help="OpenMM platform of the water leg (default CPU; CUDA when present)")
    p.add_argument("--vacuum-platform", dest="vacuum_platform", default=None,
                   help="OpenMM platform of the vacuum leg (default Reference)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads per window (default 1)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="windows sampled at once in separate processes (default 2)")
    p.add_argument("--scheduler", default=None,
                   help="dask.distributed scheduler address: run the windows as tasks on that "
                   "cluster (OUT must be on a shared file system)")
    p.add_argument("--method", choices=["independent", "hrex"], default=None,
                   help="independent windows (default; MBAR, BAR, EXP, TI) or Hamiltonian replica "
                   "exchange with openmmtools (one process; MBAR, BAR, EXP)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", required=True, help="output directory; rerun the same command to resume")
    p.add_argument("--no-progress", action="store_true")


def _add_fe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fe", help=COMMANDS["fe"], description=(
        "Alchemical free energies. 'mlff fe hydration --smiles CCO --out DIR' parameterises the "
        "molecule (GAFF2 + AM1-BCC through AmberTools), solvates it in TIP3P and decouples it in "
        "water and in vacuum (charges off, then softcore Lennard-Jones off). DIR gets "
        "result.json (dG_hyd per estimator with uncertainty), per-leg alchemlyb u_nk/dHdl "
        "parquet files and overlap / convergence / dU/dlambda PNGs. Every window checkpoints: "
        "rerun the same command after a kill to resume."))
    fesub = p.add_subparsers(dest="fe_command", metavar="FE_COMMAND")
    h = fesub.add_parser("hydration", help="hydration free energy of a molecule (SMILES or file)",
                         description="Hydration free energy of one molecule (defaults: the "
                         "benchmarks/freesolv.py protocol; about 15-20 min on 2 cores).")
    mol = h.add_mutually_exclusive_group(required=True)
    mol.add_argument("--smiles", help='the molecule, e.g. "CCO" (a conformer is generated)')
    mol.add_argument("--molecule", metavar="FILE",
                     help="the molecule as a .mol, .sdf or .mol2 file with hydrogens and 3D "
                     "coordinates; its conformer is used for the charges and as the start")
    h.add_argument("--name", default=None,
                   help="a label for the results (default: the SMILES or the file name)")
    _add_fe_common(h)
    h.set_defaults(func=_run_fe_hydration)
    r = fesub.add_parser("run", help="run a hydration calculation from a YAML config",
                         description="Run the HydrationConfig in CONFIG (keys: see "
                         "md_workflows/free_energy/hydration.py; example: "
                         "data/examples/hydration_ethanol.yaml). Command-line options override it.")
    r.add_argument("config", help="YAML file")
    r.add_argument("--name", default=None)
    _add_fe_common(r)
    r.set_defaults(func=_run_fe_config)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _print_fe(result: Dict, out: str) -> int:
    print(f"{result['name']}: dG_hyd = {result['dG_hyd']:.2f} +/- {result['dG_hyd_err']:.2f} kcal/mol (MBAR)")
    for est, v in result["dG_hyd_kcal_mol"].items():
        print(f"  {est:13s} {v['value']:8.2f} +/- {v['error']:.2f}")
    for leg, info in result["legs"].items():
        print(f"  {leg:7s} leg: {info['windows']} windows, smallest neighbour overlap "
              f"{info['min_neighbour_overlap']:.3f}")
    print(f"results in {out}/result.json; plots in {out}/water and {out}/vacuum")
    return 0


def _run_fe_hydration(args: argparse.Namespace) -> int:
    from md_workflows.free_energy.hydration import HydrationConfig, run_hydration

    molecule = {"smiles": args.smiles} if args.smiles else {"molecule_file": args.molecule}
    cfg = HydrationConfig.from_dict({**molecule, **_fe_overrides(args)}, "the command line")
    return _print_fe(run_hydration(cfg, args.out, progress=not args.no_progress), args.out)


def _run_fe_config(args: argparse.Namespace) -> int:
    import dataclasses

    from md_workflows.free_energy.hydration import HydrationConfig, run_hydration

    cfg = dataclasses.replace(HydrationConfig.from_yaml(args.config), **_fe_overrides(args))
    return _print_fe(run_hydration(cfg, args.out, progress=not args.no_progress), args.out)


def build_parser() -> argparse.ArgumentParser:
    from mlff import __version__

    parser = argparse.ArgumentParser(
        prog="mlff",
        description="Equivariant machine-learned interatomic potentials: data, training, "
        "simulation.",
    )
    parser.add_argument("--version", action="version", version=f"mlff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_label, _add_sample, _add_stats, _add_dataset, _add_train, _add_eval, _add_md,
                _add_relax, _add_analyze, _add_demo, _add_label_demo, _add_fe):
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"mlff {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
