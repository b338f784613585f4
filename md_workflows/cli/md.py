"""``mlff md``, ``relax``, ``analyze`` and ``demo``: simulations with a model.

The parsers take their defaults from the light configuration modules
(:mod:`mlff.md_workflows.md_config`, :class:`mlff.md_workflows.relax.RelaxConfig`); torch,
OpenMM and ASE are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional

from mlff.md_workflows.cli._common import COMMANDS, Subparsers, add_model_arguments, positive_int
from mlff.md_workflows.md_config import ENGINES, ENSEMBLES, MDConfig, MDResult
from mlff.md_workflows.relax import OPTIMIZERS, RelaxConfig

#: The demo's structure (an asset path); its model is the shipped default ensemble.
DEMO_STRUCTURE = "examples/alanine_dipeptide.pdb"
#: The demo's MD protocol (the :class:`MDConfig` fields it sets besides the run length).
DEMO_MD: Dict[str, object] = dict(engine="openmm", ensemble="nvt", temperature_K=300.0,
                                  timestep_fs=2.0, hmr=True, hydrogen_mass_amu=3.0,
                                  friction_per_ps=1.0)


def add_md(sub: Subparsers) -> None:
    """``mlff md STRUCTURE``."""
    d = MDConfig(structure="")
    p = sub.add_parser("md", help=COMMANDS["md"], description=(
        "Run MD with an mlff model. Writes trajectory.dcd + topology.pdb, log.csv, traces.png, "
        "uncertainty.png (ensembles), final.pdb/.extxyz and checkpoint.npz to --out. After a "
        "kill, rerun with --resume: it continues from the last report step, no frame lost or "
        "repeated. Exit status 3: stopped by --uq-stop."))
    p.add_argument("structure", help="pdb (topology kept) or anything ase.io reads")
    add_model_arguments(p, d.model, d.device)
    p.add_argument("--engine", default=d.engine, choices=ENGINES)
    p.add_argument("--ensemble", default=d.ensemble, choices=ENSEMBLES)
    p.add_argument("--temperature", type=float, default=d.temperature_K, help="K (default %(default)s)")
    p.add_argument("--pressure", type=float, default=d.pressure_bar, help="bar, NPT (default %(default)s)")
    p.add_argument("--timestep", type=float, default=d.timestep_fs, help="fs (default %(default)s)")
    p.add_argument("--steps", type=positive_int, default=d.steps)
    p.add_argument("--report-every", type=positive_int, default=d.report_every,
                   help="steps between frames, log rows, UQ checks and checkpoints")
    p.add_argument("--friction", type=float, default=d.friction_per_ps,
                   help="Langevin friction, 1/ps (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hmr", action="store_true", help="hydrogen mass repartitioning (OpenMM), for 2 fs")
    p.add_argument("--hydrogen-mass", type=float, default=d.hydrogen_mass_amu,
                   help="amu with --hmr (default %(default)s)")
    p.add_argument("--platform", default=None, help="OpenMM platform (CPU, Reference, CUDA)")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--uq-warn", type=float, default=None,
                   help="warn and save the frame when the max per-atom force std exceeds this (eV/A)")
    p.add_argument("--uq-stop", type=float, default=None,
                   help="stop cleanly when the max per-atom force std exceeds this (eV/A)")
    p.add_argument("--extxyz", action="store_true", help="also write trajectory.extxyz")
    p.add_argument("--out", default=d.out)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_md)


def md_config(args: argparse.Namespace) -> MDConfig:
    """The :class:`MDConfig` of parsed ``mlff md`` arguments."""
    return MDConfig(
        structure=args.structure, out=args.out, model=args.model, engine=args.engine,
        ensemble=args.ensemble, temperature_K=args.temperature, pressure_bar=args.pressure,
        timestep_fs=args.timestep, steps=args.steps, report_every=args.report_every,
        friction_per_ps=args.friction, seed=args.seed, hmr=args.hmr,
        hydrogen_mass_amu=args.hydrogen_mass, dtype=args.dtype, device=args.device,
        platform=args.platform, threads=args.threads, uq_warn=args.uq_warn,
        uq_stop=args.uq_stop, write_extxyz=args.extxyz, progress=not args.no_progress,
    )


def print_md_result(result: MDResult, files: Optional[Dict[str, Path]] = None,
                    command: str = "md") -> int:
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


def run_md(args: argparse.Namespace) -> int:
    """Run (or resume) the MD run of the arguments."""
    cfg = md_config(args)  # validated before the engines are imported
    from mlff.md_workflows.md import run_md as _run_md

    return print_md_result(_run_md(cfg, resume=args.resume))


def add_relax(sub: Subparsers) -> None:
    """``mlff relax STRUCTURE``."""
    d = RelaxConfig(structure="")
    p = sub.add_parser("relax", help=COMMANDS["relax"], description=(
        "Relax a structure; writes OUT/relaxed.extxyz (+ relaxed.pdb for pdb input), "
        "OUT/relax.log and OUT/relax_checkpoint.npz. Exit status 4 when not converged within "
        "--steps: rerun with a larger --steps and --resume to continue from where it stopped."))
    p.add_argument("structure")
    add_model_arguments(p, d.model, d.device)
    p.add_argument("--engine", default=d.engine, choices=["ase", "openmm"])
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--fmax", type=float, default=d.fmax_eV_per_A, help="eV/A (default %(default)s)")
    p.add_argument("--steps", type=positive_int, default=d.steps)
    p.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    p.add_argument("--pressure", type=float, default=d.pressure_bar,
                   help="bar, with --cell (default %(default)s)")
    p.add_argument("--out", default=d.out)
    p.add_argument("--resume", action="store_true", help=(
        "continue the relaxation in OUT from its last geometry (after a kill, or with a larger "
        "--steps); other settings must stay the same"))
    p.set_defaults(func=run_relax)


def run_relax(args: argparse.Namespace) -> int:
    """Relax the structure; exit status 4 when not converged."""
    cfg = RelaxConfig(structure=args.structure, out=args.out, model=args.model,
                      engine=args.engine, optimizer=args.optimizer, fmax_eV_per_A=args.fmax,
                      steps=args.steps, cell=args.cell, pressure_bar=args.pressure,
                      dtype=args.dtype, device=args.device)
    from mlff.md_workflows.relax import relax

    res = relax(cfg, resume=args.resume)
    state = "converged" if res.converged else "NOT converged"
    print(f"{state}: energy {res.energy:.6f} eV, max force {res.fmax_final:.5f} eV/A "
          f"(fmax {args.fmax}) after {res.steps} steps")
    for name, path in res.files.items():
        print(f"  {name:18s} {path}")
    if not res.converged:
        print(f"mlff relax: not converged within {args.steps} steps; rerun with a larger --steps "
              "and --resume, raise --fmax, or check the structure", file=sys.stderr)
        return 4
    return 0


def add_analyze(sub: Subparsers) -> None:
    """``mlff analyze TRAJECTORY``."""
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
    p.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    """Analyse the trajectory (:func:`mlff.md_workflows.analysis.analyze`)."""
    pairs = []
    for spec in args.rdf:
        if spec.count("-") != 1:
            raise ValueError(f"--rdf pairs look like O-H, got {spec!r}")
        pairs.append(tuple(spec.split("-")))
    from mlff.md_workflows.analysis import analyze

    out = args.out or str(Path(args.trajectory) / "analysis" if Path(args.trajectory).is_dir()
                          else "analysis")
    files = analyze(args.trajectory, out, args.topology, args.timestep_ps, pairs, args.rdf_max)
    for name, path in files.items():
        print(f"  {name:18s} {path}")
    return 0


def add_demo(sub: Subparsers) -> None:
    """``mlff demo``."""
    md = DEMO_MD
    p = sub.add_parser("demo", help=COMMANDS["demo"], description=(
        "The main job: the shipped default ensemble model runs alanine dipeptide in vacuum "
        f"through an OpenMM TorchForce, {str(md['ensemble']).upper()} {md['temperature_K']:g} K, "
        f"{md['timestep_fs']:g} fs steps with hydrogen mass repartitioning, with the uncertainty "
        "monitor on; then writes the trajectory, traces, uncertainty trace and a Ramachandran "
        "plot and prints where they are."))
    p.add_argument("--model", default="default", help="model file (default: the shipped ensemble)")
    p.add_argument("--out", default="runs/demo_md", help="output folder (default %(default)s)")
    p.add_argument("--steps", type=positive_int, default=10000,
                   help=f"{md['timestep_fs']:g} fs steps (default %(default)s)")
    p.add_argument("--report-every", type=positive_int, default=50)
    p.add_argument("--uq-warn", type=float, default=0.5, help="eV/A (default %(default)s)")
    p.add_argument("--uq-stop", type=float, default=2.0, help="eV/A (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1, help=(
        "torch and OpenMM threads (default 1: more oversubscribes a busy 2-core machine)"))
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """The demo: MD of alanine dipeptide with the default ensemble, then its analysis."""
    import shutil
    import time

    from mlff.assets_path import asset
    from mlff.io import model_path
    from mlff.md_workflows.analysis import analyze
    from mlff.md_workflows.md import run_md as _run_md
    from mlff.units import FS_TO_PS

    model = str(model_path(args.model))
    if not Path(model).exists():
        raise FileNotFoundError(f"model file {model} does not exist; pass --model PATH")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # the demo always starts fresh
    t0 = time.time()
    cfg = MDConfig(structure=str(asset(DEMO_STRUCTURE)), out=str(out), model=model,
                   steps=args.steps, report_every=args.report_every, uq_warn=args.uq_warn,
                   uq_stop=args.uq_stop, threads=args.threads, progress=not args.no_progress,
                   **DEMO_MD)
    print(f"== alanine dipeptide, vacuum, OpenMM TorchForce, {cfg.ensemble.upper()} "
          f"{cfg.temperature_K:g} K, {cfg.timestep_fs:g} fs + HMR, "
          f"{args.steps * cfg.timestep_fs * FS_TO_PS:g} ps, model {model}")
    result = _run_md(cfg)
    files = dict(result.files)
    files.update(analyze(str(out), str(out / "analysis"),
                         timestep_ps=args.report_every * cfg.timestep_fs * FS_TO_PS))
    print(f"demo total (MD + analysis): {time.time() - t0:.0f} s")
    shown = ("trajectory", "topology", "log", "traces", "uncertainty", "ramachandran",
             "analysis_csv", "rmsd_rg", "final", "uncertain_frames")
    return print_md_result(result, {k: files[k] for k in shown if k in files}, "demo")
