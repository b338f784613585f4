"""The ML/MM hydration free energy: the MM result plus the end-state corrections of a model.

Called by :func:`.hydration.run_hydration` when the config names a ``model``, after the MM legs:
both correction legs (vacuum first: it is cheap and fixes the shared energy offset), each
resumable, then ``dG_hyd(ML/MM) = dG_hyd(MM) + dG_corr(water) - dG_corr(vacuum)``.

Output: ``OUT/ml/<model stem>-<first 8 of its SHA-256>/{vacuum,water}/`` (sampler layout plus
``dudl.png`` and ``overlap.png``), ``offset.json`` (the constant c of :mod:`.ml_interpolation`)
and ``correction.json`` (what :func:`.ml_correction.combine_ml` returns; also in result.json).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .ml_correction import (CorrectionLeg, analyze_correction, combine_ml, sample_correction,
                            write_json)
from .ml_interpolation import ml_minus_mm, model_spec


def correction_dir(out: Path, spec: dict) -> Path:
    """Where a model's correction legs live under a hydration run."""
    return out / "ml" / f"{Path(spec['model']).stem}-{spec['sha256'][:8]}"


def _mm_frames(leg_result) -> np.ndarray | None:
    """Solute frames of an MM leg's coupled window (window 0), when the leg saved them."""
    if leg_result is None:
        return None
    frames = leg_result.samples.positions_nm
    return None if frames is None else frames[0]


def shared_offset(ml_dir: Path, spec: dict, vacuum_system, vacuum_positions_nm) -> float:
    """U_ML - U_MM(intra) at the vacuum start geometry (kJ/mol), computed once and kept in
    ``offset.json`` so that both legs (and a resume) use the same constant."""
    path = ml_dir / "offset.json"
    if path.exists():
        return float(json.loads(path.read_text())["offset_kj_mol"])
    offset = ml_minus_mm(vacuum_system, spec, vacuum_positions_nm)
    write_json(path, {"offset_kj_mol": offset, "what": "U_ML - U_MM(solute intra) at the vacuum "
                      "start geometry; subtracted from U_ML in both legs"})
    return offset


def _switching(config, name: str, leg: CorrectionLeg, leg_dir: Path, progress: bool) -> dict:
    """The nonequilibrium-switching screen of one leg, from the windows' minimised start
    (estimates in kcal/mol)."""
    from .ml_switching import SwitchingProtocol, run_switching

    protocol = SwitchingProtocol(n_switches=config.ml_switches, switch_ps=config.ml_switch_ps,
                                 equilibration_ps=config.ml_equilibration_ps)
    start = np.load(leg_dir / "start.npz")["positions_nm"]
    out = run_switching(leg_dir / "switching", leg.system, start, leg.box_nm, leg.spec,
                        config.ml_sampling(name), protocol, progress=progress)
    kt = config.kT_kcal_mol
    for key in ("jarzynski_forward", "jarzynski_reverse", "bar"):
        out[key] = {"value": out[key]["value"] * kt, "error": out[key]["error"] * kt}
    return out


def check_model_domain(config, plain: dict) -> None:
    """Refuse a solute whose net charge (the sum of its MM partial charges) the model does not
    support (its file states the total charges it was trained on), before anything is sampled.

    Raises:
        InputError: the net charge is outside the model's domain; the message says so.
    """
    import openmm

    from mlff.io import resolve_model
    from mlff.models.potential import require_supported

    system, _, _, solute = plain["vacuum"]
    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    charge = sum(nonbonded[0].getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                 for i in solute) if nonbonded else 0.0
    if abs(charge - round(charge)) < 1e-3:  # partial charges sum to an integer up to round-off
        charge = round(charge)
    require_supported(resolve_model(config.model), charge, where=f"{config.label} (net charge of its MM charges)")


def run_ml_corrections(config, out: Path, mm_result: dict, mm_legs: dict | None, plain: dict,
                       progress: bool = True) -> dict[str, Any]:
    """Sample (or resume) and analyse both correction legs; returns the "ml" block of
    result.json (kcal/mol).

    Args:
        mm_result: needs ``dG_hyd`` and ``dG_hyd_err`` (kcal/mol) of the MM legs.
        mm_legs: the MM legs' LegResults (their coupled windows' solute frames feed an FEP
            screen), or None.
        plain: :func:`.hydration.prepare_systems`' plain Systems.
    """
    numbers = plain["numbers"]
    system_v, pos_v, _, solute_v = plain["vacuum"]
    spec = model_spec(config.model, solute_v, numbers, route=config.ml_route,
                      device=config.ml_device)
    ml_dir = correction_dir(out, spec)
    ml_dir.mkdir(parents=True, exist_ok=True)
    spec["offset_kj_mol"] = shared_offset(ml_dir, spec, system_v, pos_v)
    analyses, wall = {}, {}
    for name in ("vacuum", "water"):
        system, pos, box, solute = plain[name]
        leg = CorrectionLeg(name, system, pos, box, list(solute), dict(spec, atoms=list(solute)))
        start = time.time()
        samples = sample_correction(leg, ml_dir / name, config.ml_windows, config.ml_sampling(name),
                                    workers=config.workers, scheduler=config.scheduler,
                                    progress=progress)
        wall[name] = time.time() - start
        analyses[name] = analyze_correction(name, samples, leg.spec, system_v, numbers,
                                            ml_dir / name, config.kT_kcal_mol,
                                            mm_frames_nm=_mm_frames((mm_legs or {}).get(name)))
        if config.ml_switches:
            analyses[name]["neq"] = _switching(config, name, leg, ml_dir / name, progress)
            analyses[name]["warnings"] += [f"NEQ: {w}" for w in analyses[name]["neq"]["warnings"]]
    result = combine_ml(mm_result, analyses["water"], analyses["vacuum"], spec)
    result["directory"] = str(ml_dir)
    result["sampling_wall_s_this_run"] = wall
    write_json(ml_dir / "correction.json", result)
    return result
