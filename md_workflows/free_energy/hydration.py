"""Hydration free energy of a small molecule: decouple it in water and in vacuum.

dG_hyd = dG_vacuum - dG_water, where each dG is f(decoupled) - f(coupled) along the same
lambda schedule (charges annihilated, then Lennard-Jones decoupled). In vacuum only the
electrostatic windows are needed: with nothing to interact with, decoupling the solute's
Lennard-Jones from its surroundings changes no energy (its intramolecular Lennard-Jones stays).

Output directory::

    config.json                the HydrationConfig used (reproduce with `mlff fe run`)
    ligand/                    mol2, frcmod, prmtop, ffxml copied from the parameter cache
    water/, vacuum/            sampling legs (see sampling.py), alchemlyb u_nk/dHdl parquet,
                               overlap / convergence / dU/dlambda PNGs
    ml/<model>-<sha>/water, vacuum/   with a model: the ML/MM correction legs (same layout,
                               plus the solute's frames), dudl.png, overlap.png
    result.json                dG_hyd per estimator (kcal/mol, with uncertainty), per leg;
                               with a model also "ml": dG_hyd(ML/MM), the corrections, their
                               statistical and model (ensemble) errors, FEP screens, warnings
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlff.atomic import atomic_write_text

from .alchemical import alchemical_system
from .dataframes import write_alchemlyb
from .estimators import FreeEnergyResult, analyze
from .plots import plot_convergence, plot_dudl, plot_overlap
from .replica_exchange import run_hrex_leg
from .hydration_config import HydrationConfig
from .sampling import LegSamples, prepare_leg, run_leg

ESTIMATORS = ("MBAR", "BAR", "TI_trapezoid", "TI_cubic", "EXP_forward", "EXP_reverse")


@dataclass
class LegResult:
    name: str
    samples: LegSamples
    analysis: FreeEnergyResult
    files: dict[str, str] = field(default_factory=dict)


def prepare_systems(config: HydrationConfig, out: Path):
    """Parameterise the solute (copied to ``out/ligand``); build both legs' Systems.

    Returns (params, legs, plain): ``legs[leg]`` = (alchemical System, start positions, box or
    None, states); ``plain[leg]`` = (MM System, positions [N, 3] nm, box or None, solute
    indices) and ``plain["numbers"]`` the solute's atomic numbers.
    """
    from openmm import unit

    from .parametrize import (ligand_atom_indices, parametrize_ligand, set_dihedrals,
                              solvated_system, vacuum_system)

    params = parametrize_ligand(config.smiles, name=config.name, forcefield=config.forcefield,
                                cache_dir=Path(config.cache_dir) if config.cache_dir else None,
                                seed=config.seed, molecule_file=config.molecule_file)
    legs = {}
    top, system, pos = solvated_system(params, box_edge_nm=config.box_edge_nm,
                                       nonbonded_cutoff_nm=config.nonbonded_cutoff_nm,
                                       hydrogen_mass_amu=config.hydrogen_mass_amu)
    solute = ligand_atom_indices(top)
    box = np.array([[v.x, v.y, v.z] for v in
                    (vec.value_in_unit(unit.nanometer) for vec in top.getPeriodicBoxVectors())])
    top_v, system_v, pos_v = vacuum_system(params, hydrogen_mass_amu=config.hydrogen_mass_amu)
    if config.start_dihedrals:  # start both legs from another conformer than the charges'
        pos = np.array(pos.value_in_unit(unit.nanometer))
        pos[solute] = set_dihedrals(params, pos[solute], config.start_dihedrals)
        pos_v = set_dihedrals(params, np.array(pos_v.value_in_unit(unit.nanometer)),
                              config.start_dihedrals)
    solute_v = ligand_atom_indices(top_v)
    legs["water"] = (alchemical_system(system, solute), pos, box, config.schedule.states(True))
    legs["vacuum"] = (alchemical_system(system_v, solute_v), pos_v, None,
                      config.schedule.states(False))
    def nm(x):
        return np.asarray(x.value_in_unit(unit.nanometer) if hasattr(x, "value_in_unit") else x)

    plain = {"water": (system, nm(pos), box, solute), "vacuum": (system_v, nm(pos_v), None, solute_v),
             "numbers": [a.element.atomic_number for a in top_v.atoms()]}
    lig_dir = out / "ligand"  # written once both systems are built: a failure leaves no files
    lig_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(params.directory).iterdir()):
        if f.is_file():
            shutil.copy2(f, lig_dir / f.name)
    return params, legs, plain


def analyze_leg(name: str, leg_dir: Path, samples: LegSamples, kT_kcal_mol: float) -> LegResult:
    """Estimators, alchemlyb dataframes and plots of one finished leg."""
    with_ti = bool(samples.ti_parameters)
    res = analyze(samples.u_kln, samples.dudl if with_ti else None,
                  samples.lambdas if with_ti else None)
    u_path, d_path = write_alchemlyb(samples, leg_dir)
    files = {
        "u_nk": str(u_path), **({"dHdl": str(d_path)} if d_path else {}),
        "overlap_png": str(plot_overlap(res, leg_dir / "overlap.png", name)),
        "convergence_png": str(plot_convergence(res, leg_dir / "convergence.png", kT_kcal_mol, name)),
    }
    if with_ti:
        files["dudl_png"] = str(plot_dudl(res, samples.ti_parameters, leg_dir / "dudl.png",
                                          kT_kcal_mol, name))
    return LegResult(name, samples, res, files)


def combine(config: HydrationConfig, water: LegResult, vacuum: LegResult) -> dict[str, Any]:
    """dG_hyd = dG_vacuum - dG_water per estimator, errors added in quadrature (kcal/mol)."""
    kt = config.kT_kcal_mol
    out: dict[str, Any] = {"name": config.label, "smiles": config.smiles,
                           "forcefield": config.forcefield, "temperature_K": config.temperature_K,
                           "dG_hyd_kcal_mol": {}, "legs": {}}
    for est in ESTIMATORS:
        if est not in water.analysis.estimates or est not in vacuum.analysis.estimates:
            continue
        w, v = water.analysis.estimates[est], vacuum.analysis.estimates[est]
        out["dG_hyd_kcal_mol"][est] = {"value": (v.value - w.value) * kt,
                                       "error": float(np.hypot(v.error, w.error)) * kt}
    for leg in (water, vacuum):
        a = leg.analysis
        out["legs"][leg.name] = {
            "dG_decouple_kcal_mol": {k: {"value": e.value * kt, "error": e.error * kt}
                                     for k, e in a.estimates.items()},
            "windows": len(leg.samples.states),
            "states": leg.samples.states,
            "samples_per_window": [int(len(u[0])) for u in leg.samples.u_kln],
            "decorrelated_samples": [int(n) for n in a.n_k],
            "statistical_inefficiency": a.statistical_inefficiency,
            "min_neighbour_overlap": a.min_neighbour_overlap,
            "files": leg.files,
        }
    best = out["dG_hyd_kcal_mol"]["MBAR"]
    out["dG_hyd"] = best["value"]
    out["dG_hyd_err"] = best["error"]
    return out


def run_hydration(config: HydrationConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) both legs, analyse them and write ``result.json``; returns the result.

    ``out`` is checked for write access first and locked (:mod:`mlff.run_lock`); its first
    files (``config.json``, ``ligand/``) are written once the molecule is parameterised and both
    Systems are built."""
    from mlff.atomic import check_writable
    from mlff.run_lock import run_lock

    check_writable(out_dir, "free-energy output folder")
    with run_lock(out_dir, "mlff fe"):  # one run at a time in a folder
        return _run_hydration(config, Path(out_dir), progress)


def _run_hydration(config: HydrationConfig, out: Path, progress: bool) -> dict[str, Any]:
    """:func:`run_hydration` holding the folder's run lock."""
    saved = out / "config.json"
    if saved.exists() and any(out.glob("*/window_*/samples.npz")):
        # compare as JSON (tuples were saved as lists); keys added to mlff since the run was
        # started count as their defaults; parallelism may change on resume
        new = json.loads(json.dumps(config.to_dict()))
        defaults = json.loads(json.dumps(dataclasses.replace(config, **{
            f.name: f.default for f in dataclasses.fields(config)
            if f.default is not dataclasses.MISSING and f.name not in ("smiles", "molecule_file")
        }).to_dict()))
        old = {**defaults, **json.loads(saved.read_text())}
        changed = sorted(k for k in new if old.get(k) != new[k])
        if changed:
            # the ML/MM settings leave the MM legs alone (the correction legs check their own)
            harmless = {"workers", "scheduler", "threads", "model", "ml_device"} | {
                k for k in new if k.startswith("ml_")}
            # a longer production extends every independent window from its checkpoint
            extends = (new["production_ps"] > old["production_ps"] and config.method == "independent")
            if extends:
                harmless.add("production_ps")
            if not set(changed) <= harmless:
                hint = (" (a longer production extends independent windows; replica-exchange runs "
                        "cannot be extended)" if "production_ps" in changed else "")
                raise ValueError(f"{out} holds a run with a different config (changed: {changed}); "
                                 f"use a new --out or the same settings to resume{hint}")
    params, legs, plain = prepare_systems(config, out)
    if config.model is not None:  # a charge the model does not support fails before the MM legs
        from .ml_hydration import check_model_domain

        check_model_domain(config, plain)
    atomic_write_text(saved, json.dumps(config.to_dict(), indent=1))
    results = {}
    for name in ("vacuum", "water"):
        system, pos, box, states = legs[name]
        leg_dir = out / name
        if config.method == "hrex":
            samples = run_hrex_leg(leg_dir, system, pos, states, config.sampling(name),
                                   box_vectors_nm=box, progress=progress, label=name)
        else:
            prepare_leg(leg_dir, system, pos, states, config.sampling(name),
                        ti_parameters=["lambda_electrostatics", "lambda_sterics"], box_vectors_nm=box,
                        save_atoms=plain[name][3])
            samples = run_leg(leg_dir, workers=config.workers, scheduler=config.scheduler,
                              progress=progress, label=name)
        results[name] = analyze_leg(name, leg_dir, samples, config.kT_kcal_mol)
    result = combine(config, results["water"], results["vacuum"])
    result["smiles"] = params.smiles  # canonical; also for molecule-file input
    if config.molecule_file:
        result["molecule_file"] = config.molecule_file
    atomic_write_text(out / "result.json", json.dumps(result, indent=1))
    if config.model is not None:
        from .ml_hydration import run_ml_corrections

        result["ml"] = run_ml_corrections(config, out, result, results, plain, progress)
        atomic_write_text(out / "result.json", json.dumps(result, indent=1))
    return result
