"""``mlff fe``: alchemical free energies (``fe hydration``, ``fe run``, ``fe rbfe``).

Every default stated in the help comes from :class:`HydrationConfig` (its light module
:mod:`mlff.md_workflows.free_energy.hydration_config`); the options default to None so that
only the ones given override a YAML config. OpenMM and the estimators are imported when a
command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Dict

from mlff.md_workflows.cli._common import COMMANDS, Subparsers, positive_int
from mlff.md_workflows.free_energy.hydration_config import HydrationConfig

#: HydrationConfig field -> its default (what the help texts state).
DEFAULTS: Dict[str, object] = {f.name: f.default for f in dataclasses.fields(HydrationConfig)}
#: The HydrationConfig fields that command-line options set.
OVERRIDABLE = ("name", "forcefield", "box_edge_nm", "temperature_K", "timestep_fs",
               "equilibration_ps", "production_ps", "sample_every_ps", "water_platform",
               "vacuum_platform", "threads", "workers", "scheduler", "seed", "method", "model",
               "ml_route", "ml_equilibration_ps", "ml_production_ps", "ml_device", "ml_switches")


def fe_overrides(args: argparse.Namespace) -> Dict[str, object]:
    """The HydrationConfig fields given on the command line."""
    return {k: getattr(args, k) for k in OVERRIDABLE if getattr(args, k, None) is not None}


def _add_fe_common(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--forcefield", choices=["gaff2", "gaff"], default=None,
                   help=f"small-molecule force field (default {d['forcefield']}; gaff = GAFF 1.x "
                   "as in FreeSolv)")
    p.add_argument("--box-edge-nm", dest="box_edge_nm", type=float, default=None,
                   help=f"cubic TIP3P box edge, nm (default {d['box_edge_nm']:g})")
    p.add_argument("--temperature", dest="temperature_K", type=float, default=None,
                   help=f"K (default {d['temperature_K']:g})")
    p.add_argument("--timestep", dest="timestep_fs", type=float, default=None,
                   help=f"fs (default {d['timestep_fs']:g}, with hydrogen masses of "
                   f"{d['hydrogen_mass_amu']:g} amu)")
    p.add_argument("--equilibration-ps", dest="equilibration_ps", type=float, default=None,
                   help=f"per window (default {d['equilibration_ps']:g})")
    p.add_argument("--production-ps", dest="production_ps", type=float, default=None,
                   help=f"per window (default {d['production_ps']:g})")
    p.add_argument("--sample-every-ps", dest="sample_every_ps", type=float, default=None,
                   help=f"energies at all windows every this many ps (default {d['sample_every_ps']:g})")
    p.add_argument("--platform", dest="water_platform", default=None,
                   help="OpenMM platform of the water leg: Reference, CPU, CUDA or OpenCL "
                   f"(default {d['water_platform']})")
    p.add_argument("--vacuum-platform", dest="vacuum_platform", default=None,
                   help="OpenMM platform of the vacuum leg: Reference, CPU, CUDA or OpenCL "
                   f"(default {d['vacuum_platform']})")
    p.add_argument("--threads", type=positive_int, default=None,
                   help=f"threads per window (default {d['threads']})")
    p.add_argument("--workers", type=positive_int, default=None,
                   help=f"windows sampled at once in separate processes (default {d['workers']})")
    p.add_argument("--scheduler", default=None,
                   help="dask.distributed scheduler address: run the windows as tasks on that "
                   "cluster (OUT must be on a shared file system)")
    p.add_argument("--method", choices=["independent", "hrex"], default=None,
                   help=f"independent windows (MBAR, BAR, EXP, TI) or Hamiltonian replica "
                   f"exchange with openmmtools (one process; MBAR, BAR, EXP); default {d['method']}")
    p.add_argument("--seed", type=int, default=None, help=f"default {d['seed']}")
    p.add_argument("--model", default=None, metavar="default|PATH",
                   help="also the ML/MM hydration free energy with this model ('default': the "
                   "shipped one): MM -> ML end-state corrections of the solute in water and in "
                   "vacuum after the MM legs (reused when finished)")
    p.add_argument("--ml-route", dest="ml_route", choices=["torch", "python"], default=None,
                   help=f"the model in OpenMM as a TorchForce or a PythonForce (default "
                   f"{d['ml_route']})")
    p.add_argument("--ml-equilibration-ps", dest="ml_equilibration_ps", type=float, default=None,
                   help=f"per correction window (default {d['ml_equilibration_ps']:g})")
    p.add_argument("--ml-production-ps", dest="ml_production_ps", type=float, default=None,
                   help=f"per correction window (default {d['ml_production_ps']:g}; windows "
                   f"{', '.join(f'{x:g}' for x in d['ml_windows'])})")
    p.add_argument("--ml-switches", dest="ml_switches", type=int, default=None,
                   help="also this many nonequilibrium switches MM <-> ML each way per leg "
                   "(Jarzynski, BAR; a screen run after the windows); default "
                   f"{d['ml_switches']} (off)")
    p.add_argument("--ml-device", dest="ml_device", default=None,
                   help="torch device of the model: cpu or cuda (with --platform CUDA); "
                   f"default {d['ml_device']}")
    p.add_argument("--out", required=True, help="output directory; rerun the same command to resume")
    p.add_argument("--no-progress", action="store_true")


def add_fe(sub: Subparsers) -> None:
    """``mlff fe hydration`` and ``mlff fe run``."""
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
    h.set_defaults(func=run_fe_hydration)
    r = fesub.add_parser("run", help="run a hydration calculation from a YAML config",
                         description="Run the HydrationConfig in CONFIG (keys: see "
                         "md_workflows/free_energy/hydration_config.py; example: "
                         "data/examples/hydration_ethanol.yaml). Command-line options override it.")
    r.add_argument("config", help="YAML file")
    r.add_argument("--name", default=None)
    _add_fe_common(r)
    r.set_defaults(func=run_fe_config)
    _add_rbfe(fesub)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def print_fe(result: Dict, out: str) -> int:
    """Print a hydration result (``result.json``'s content)."""
    print(f"{result['name']}: dG_hyd = {result['dG_hyd']:.2f} +/- {result['dG_hyd_err']:.2f} kcal/mol (MBAR)")
    for est, v in result["dG_hyd_kcal_mol"].items():
        print(f"  {est:13s} {v['value']:8.2f} +/- {v['error']:.2f}")
    for leg, info in result["legs"].items():
        print(f"  {leg:7s} leg: {info['windows']} windows, smallest neighbour overlap "
              f"{info['min_neighbour_overlap']:.3f}")
    ml = result.get("ml")
    if ml:
        model_err = "" if ml["model_error"] is None else f" +/- {ml['model_error']:.2f} (model)"
        print(f"ML/MM ({ml['model']}): dG_hyd = {ml['dG_hyd_ml_mm']:.2f} +/- "
              f"{ml['dG_hyd_ml_mm_err']:.2f} (statistical){model_err} kcal/mol")
        print(f"  correction water {ml['dG_corr_water']:.2f} +/- {ml['dG_corr_water_err']:.2f}, "
              f"vacuum {ml['dG_corr_vacuum']:.2f} +/- {ml['dG_corr_vacuum_err']:.2f} kcal/mol")
        for warning in ml["warnings"]:
            print(f"  warning: {warning}")
    print(f"results in {out}/result.json; plots in {out}/water and {out}/vacuum"
          + (f" and {ml['directory']}" if ml else ""))
    return 0


def run_fe_hydration(args: argparse.Namespace) -> int:
    """``mlff fe hydration``: the config from the options alone."""
    molecule = {"smiles": args.smiles} if args.smiles else {"molecule_file": args.molecule}
    cfg = HydrationConfig.from_dict({**molecule, **fe_overrides(args)}, "the command line")
    from mlff.md_workflows.free_energy.hydration import run_hydration

    return print_fe(run_hydration(cfg, args.out, progress=not args.no_progress), args.out)


def run_fe_config(args: argparse.Namespace) -> int:
    """``mlff fe run CONFIG``: the YAML config, overridden by the options given."""
    cfg = dataclasses.replace(HydrationConfig.from_yaml(args.config), **fe_overrides(args))
    from mlff.md_workflows.free_energy.hydration import run_hydration

    return print_fe(run_hydration(cfg, args.out, progress=not args.no_progress), args.out)


def _add_rbfe(fesub) -> None:
    r = fesub.add_parser(
        "rbfe", help="relative binding free energies of a ligand network by ATM (YAML config)",
        description="Relative binding free energies by the alchemical transfer method (OpenMM's "
        "ATMForce): for each edge A~B of CONFIG both ligands are in one box, A in the site and B "
        "displaced into the solvent, and 21 ATM states swap them. Ligands MM (GAFF2/AM1-BCC) or, "
        "with 'model:', ML (mechanical embedding). OUT gets edges/A~B/ (windows, result.json, "
        "overlap / convergence / dU/ds PNGs), result.json (edges, cycle closures, per-ligand "
        "values, statistics against experiment), edges.csv and network.png. Keys: "
        "md_workflows/free_energy/rbfe/config.py; example: data/examples/rbfe_hostguest.yaml. "
        "Rerun the same command to resume.")
    r.add_argument("config", help="YAML file")
    r.add_argument("--out", required=True, help="output directory; rerun the same command to resume")
    r.add_argument("--edges", nargs="+", metavar="A~B", default=None,
                   help="run only these edges (the others' finished results are still analysed)")
    r.add_argument("--workers", type=positive_int, default=None, help="windows sampled at once")
    r.add_argument("--threads", type=positive_int, default=None, help="threads per window")
    r.add_argument("--platform", default=None, help="OpenMM platform: Reference, CPU, CUDA or OpenCL")
    r.add_argument("--scheduler", default=None, help="dask.distributed scheduler address")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_fe_rbfe)


def run_fe_rbfe(args: argparse.Namespace) -> int:
    """``mlff fe rbfe CONFIG --out DIR``."""
    from mlff.md_workflows.free_energy.rbfe.config import RBFEConfig

    overrides = {k: getattr(args, k) for k in ("workers", "threads", "platform", "scheduler")
                 if getattr(args, k) is not None}
    cfg = dataclasses.replace(RBFEConfig.from_yaml(args.config), **overrides)
    from mlff.md_workflows.free_energy.rbfe.run import run_rbfe

    result = run_rbfe(cfg, args.out, progress=not args.no_progress, only=args.edges)
    ligand_kind = f"ML ({result['model']})" if result["model"] else "MM"
    print(f"{result['name']}: {len(result['edges'])} edges, ligands {ligand_kind}; kcal/mol")
    print(f"  {'edge':24s} {'ddG':>7s} {'error':>6s} {'model':>6s} {'expt':>7s}")
    for e in result["edges"]:
        model = "" if e.get("model_error") is None else f"{e['model_error']:.2f}"
        expt = "" if e["experiment"] is None else f"{e['experiment']:.2f}"
        print(f"  {e['system']:24s} {e['ddG']:7.2f} {e['ddG_err']:6.2f} {model:>6s} {expt:>7s}")
    for c in result["cycles"]:
        print(f"  cycle {c['system']}: closure {c['cycle_closure']:.2f} +/- {c['cycle_closure_err']:.2f} "
              f"({c['closure_sigma']:.1f} sigma)")
    if result["edge_statistics"]:
        st = result["edge_statistics"]
        print(f"  against experiment ({st['n']} edges): MUE {st['mue']:.2f}, RMSE {st['rmse']:.2f}")
    for warning in result["warnings"]:
        print(f"  warning: {warning}")
    print(f"results in {args.out}/result.json, {args.out}/edges.csv")
    return 0
