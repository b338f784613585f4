"""ML/MM end-state corrections (MM -> ML for the solute's intramolecular energy), one leg at a
time, and the ML/MM hydration free energy built from them.

A correction leg samples the windows of :mod:`.ml_interpolation`'s lambda_ml with the
independent-window sampler (checkpointed, resumable, parallel or on Dask) and stores dU/dlambda
from the forces' analytic derivatives and the solute's positions of every sample. Its analysis:

- MBAR over the windows and TI on the analytic dU/dlambda (they must agree within errors),
  EXP both ways, the overlap matrix; a warning when adjacent windows overlap poorly;
- FEP screens from MM end-state frames (the MM legs' coupled window when it saved frames, and
  the correction's lambda = 0 window), with their diagnostics;
- the ensemble members' corrections by reweighting the same samples (model uncertainty).

dG_hyd(ML/MM) = dG_hyd(MM) + dG_corr(water) - dG_corr(vacuum), errors in quadrature; the
constant offset of the ML energy is shared by both legs and cancels.

Free energies in kcal/mol in results; kT inside.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mlff.units import KJ_PER_KCAL

from .estimators import MIN_NEIGHBOUR_OVERLAP, FreeEnergyResult, analyze
from .ml_interpolation import LAMBDA_ML
from .ml_reweighting import fep_screen, member_corrections, solute_energies
from .sampling import LegSamples, SamplingSettings, prepare_leg, run_leg


@dataclass
class CorrectionLeg:
    """What one correction leg needs: the plain MM System, start positions (nm), box or None,
    the solute's particle indices, and the ML recipe (:func:`.ml_interpolation.model_spec`)."""

    name: str
    system: Any
    positions_nm: np.ndarray
    box_nm: np.ndarray | None
    solute: list[int]
    spec: dict


def sample_correction(leg: CorrectionLeg, leg_dir: Path, windows: Sequence[float],
                      settings: SamplingSettings, workers: int = 1, scheduler: str | None = None,
                      progress: bool = True) -> LegSamples:
    """Prepare (or resume) and sample a correction leg's windows; returns the samples.

    The start is minimised once here with the MM System alone (the windows then skip
    minimisation: with the model inside, each minimiser step would pay an ML call).
    """
    import dataclasses

    states = [{LAMBDA_ML: float(x)} for x in windows]
    start = Path(leg_dir) / "start.npz"
    if (Path(leg_dir) / "leg.json").exists() and start.exists():
        positions = np.load(start)["positions_nm"]  # the start this leg was prepared with
    elif settings.minimize:
        positions = mm_minimized(leg.system, leg.positions_nm, leg.box_nm, settings)
    else:
        positions = np.asarray(leg.positions_nm, dtype=float)
    settings = dataclasses.replace(settings, minimize=False)
    prepare_leg(leg_dir, leg.system, positions, states, settings, ti_parameters=[LAMBDA_ML],
                box_vectors_nm=leg.box_nm, ml=leg.spec, analytic_derivatives=True,
                save_atoms=leg.solute)
    return run_leg(leg_dir, workers=workers, scheduler=scheduler, progress=progress,
                   label=f"ML/MM {leg.name}")


def mm_minimized(system, positions_nm, box_nm, settings: SamplingSettings) -> np.ndarray:
    """Positions [N, 3] (nm) after OpenMM's minimiser on the MM System (as the sampler does)."""
    import openmm

    from .sampling import _platform

    platform, props = _platform(settings)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), platform, props)
    if box_nm is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box_nm)])
    context.setPositions(np.asarray(positions_nm, dtype=float))
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(
        openmm.unit.nanometer)


def _estimates(res: FreeEnergyResult, kt: float) -> dict[str, dict[str, float]]:
    return {k: {"value": e.value * kt, "error": e.error * kt} for k, e in res.estimates.items()}


def _agreement(a: dict, b: dict) -> float:
    """|a - b| in units of their combined error."""
    return abs(a["value"] - b["value"]) / max(np.hypot(a["error"], b["error"]), 1e-12)


def analyze_correction(name: str, samples: LegSamples, spec: dict, vacuum_system,
                       numbers: Sequence[int], leg_dir: Path, kT_kcal_mol: float,
                       mm_frames_nm: np.ndarray | None = None) -> dict[str, Any]:
    """All estimates of one finished correction leg (kcal/mol), with diagnostics, warnings,
    the members' corrections and plots (``dudl.png``, ``overlap.png`` in ``leg_dir``).

    Args:
        vacuum_system: the solute's MM System alone (its energy = U_MM(solute intra)).
        mm_frames_nm: [N, A, 3] solute frames of an MM end-state simulation (the MM leg's
            coupled window) for the FEP screen, or None.
    """
    from .plots import plot_overlap

    kt = kT_kcal_mol
    kT_kj = kt * KJ_PER_KCAL
    offset = float(spec["offset_kj_mol"])
    # no forward/reverse convergence series: 20 more MBAR solves, slow where overlap is poor
    res = analyze(samples.u_kln, samples.dudl, samples.lambdas, with_convergence=False)
    est = _estimates(res, kt)
    warnings: list[str] = []
    if res.min_neighbour_overlap < MIN_NEIGHBOUR_OVERLAP:
        warnings.append(f"adjacent windows overlap poorly (min {res.min_neighbour_overlap:.3f} "
                        f"< {MIN_NEIGHBOUR_OVERLAP}): add windows between them")
    ti_vs_mbar = _agreement(est["TI_cubic"], est["MBAR"])
    if ti_vs_mbar > 2.5:
        warnings.append(f"TI and MBAR differ by {ti_vs_mbar:.1f} combined errors: sample longer "
                        "or add windows")
    out: dict[str, Any] = {"leg": name, "estimates": est, "dG": est["MBAR"]["value"],
                           "dG_err": est["MBAR"]["error"], "ti_vs_mbar_sigma": ti_vs_mbar,
                           "min_neighbour_overlap": res.min_neighbour_overlap,
                           "windows": [s[LAMBDA_ML] for s in samples.states],
                           "decorrelated_samples": [int(n) for n in res.n_k],
                           "statistical_inefficiency": res.statistical_inefficiency}
    # the members and the FEP screens, from the saved solute frames
    out["fep"] = _fep_block(samples, kT_kj, kt)
    model = spec.get("model")
    frames = np.concatenate(samples.positions_nm) if samples.positions_nm else None
    if spec["kind"] == "mlff" and frames is not None:
        energies = solute_energies(vacuum_system, numbers, model, frames, spec.get("device", "cpu"))
        n_members = energies.members.shape[0]
        if n_members > 1:
            split = np.cumsum([len(x) for x in samples.positions_nm])[:-1]
            delta = [d / kT_kj for d in np.split(energies.members - energies.ml[None, :], split, axis=1)]
            members = member_corrections(samples.u_kln, delta, res.sample_indices) * kt
            out["members"] = members.tolist()
            out["model_error"] = float(np.std(members))  # the model's own convention: ddof 0
        if mm_frames_nm is not None and len(mm_frames_nm):
            mm_energies = solute_energies(vacuum_system, numbers, model, mm_frames_nm,
                                          spec.get("device", "cpu"))
            screen = _kcal(fep_screen(mm_energies.work(offset), kT_kj), kt)
            if mm_energies.members.shape[0] > 1:
                screen["members"] = [fep_screen(w, kT_kj)["dG_kT"] * kt
                                     for w in mm_energies.member_work(offset)]
            out["fep"]["from_mm_leg"] = screen
    out["warnings"] = warnings + [f"FEP {key}: {f['warning']}" for key, f in out["fep"].items()
                                  if f.get("warning")]
    files = {"overlap_png": str(plot_overlap(res, leg_dir / "overlap.png", f"ML/MM {name}")),
             "dudl_png": str(plot_correction_dudl(res, samples, leg_dir / "dudl.png", kt,
                                                  f"ML/MM correction, {name}"))}
    out["files"] = files
    return out


def _kcal(screen: dict, kt: float) -> dict:
    out = dict(screen)
    out["value"], out["error"] = screen["dG_kT"] * kt, screen["dG_err_kT"] * kt
    return out


def _fep_block(samples: LegSamples, kT_kj: float, kt: float) -> dict:
    """FEP from the lambda = 0 window forward and from the lambda = 1 window back, on the
    windows' own energies: w = (u_1 - u_0) kT is the same per-sample difference the screens on
    MM-leg frames use."""
    first, last = np.asarray(samples.u_kln[0]), np.asarray(samples.u_kln[-1])
    forward = fep_screen((first[-1] - first[0]) * kT_kj, kT_kj)
    back = fep_screen((last[0] - last[-1]) * kT_kj, kT_kj)
    back["dG_kT"] = -back["dG_kT"]
    gap = abs(forward["dG_kT"] - back["dG_kT"]) / max(np.hypot(forward["dG_err_kT"], back["dG_err_kT"]), 1e-12)
    if gap > 2.5 and forward["warning"] is None and back["warning"] is None:
        # one-sided FEP towards a broader distribution is biased however little w spreads
        forward["warning"] = back["warning"] = (
            f"forward and reverse FEP differ by {gap:.1f} combined errors: one direction "
            "samples the other end state's important region poorly; use the MBAR/TI windows")
    return {"forward_from_lambda0": _kcal(forward, kt), "reverse_from_lambda1": _kcal(back, kt)}


def plot_correction_dudl(res: FreeEnergyResult, samples: LegSamples, path: Path, kt: float,
                         title: str) -> Path:
    """<dU/dlambda> of each window (TI points, standard errors) and MBAR's <dU/dlambda>(lambda)
    between them: U is linear in lambda, so dU/dlambda(x) = u_1(x) - u_0(x) and MBAR reweights
    it to any lambda (kcal/mol)."""
    from .plots import _pyplot, _save

    plt = _pyplot()
    lam = samples.lambdas[:, 0]
    u_kn = np.hstack([np.asarray(u)[:, keep] for u, keep in zip(samples.u_kln, res.sample_indices)])
    du = u_kn[-1] - u_kn[0]  # per sample, kT
    grid = np.linspace(lam.min(), lam.max(), 101)
    # MBAR weights of every sample at lambda: w_n ~ 1 / sum_k N_k exp(f_k - u_k(x_n)) * exp(-u_l)
    f = np.asarray(res.mbar_f_k)
    n_k = np.asarray(res.n_k, dtype=float)
    log_den = np.logaddexp.reduce(np.log(n_k)[:, None] + f[:, None] - u_kn, axis=0)
    curve = []
    for x in grid:
        log_w = -(u_kn[0] + x * du) - log_den
        w = np.exp(log_w - log_w.max())
        curve.append(float((w * du).sum() / w.sum()))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(grid, np.array(curve) * kt, "-", color="C0", label="MBAR <dU/dlambda>(lambda)")
    ax.errorbar(lam, res.dudl_mean[:, 0] * kt, yerr=res.dudl_sem[:, 0] * kt, fmt="o", color="C1",
                capsize=3, label="TI: window mean +/- s.e.")
    ax.set_xlabel("lambda_ml (0 = MM solute, 1 = ML solute)")
    ax.set_ylabel("dU/dlambda (kcal/mol)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def combine_ml(mm_result: dict, water: dict, vacuum: dict, spec: dict) -> dict[str, Any]:
    """dG_hyd(ML/MM) = dG_hyd(MM) + dG_corr(water) - dG_corr(vacuum) (kcal/mol), the
    statistical error in quadrature and the model error from the members (each member's own
    hydration correction, then their spread)."""
    dg = mm_result["dG_hyd"] + water["dG"] - vacuum["dG"]
    err = float(np.sqrt(mm_result["dG_hyd_err"] ** 2 + water["dG_err"] ** 2 + vacuum["dG_err"] ** 2))
    out = {"model": Path(spec["model"]).name if spec.get("model") else None,
           "model_path": spec.get("model"), "model_sha256": spec.get("sha256"),
           "route": spec.get("route"), "offset_kj_mol": spec["offset_kj_mol"],
           "dG_hyd_mm": mm_result["dG_hyd"], "dG_hyd_mm_err": mm_result["dG_hyd_err"],
           "dG_hyd_ml_mm": dg, "dG_hyd_ml_mm_err": err,
           "dG_corr_water": water["dG"], "dG_corr_water_err": water["dG_err"],
           "dG_corr_vacuum": vacuum["dG"], "dG_corr_vacuum_err": vacuum["dG_err"],
           "dG_corr": water["dG"] - vacuum["dG"], "legs": {"water": water, "vacuum": vacuum},
           "model_error": None, "warnings": water["warnings"] + vacuum["warnings"]}
    if "members" in water and "members" in vacuum:
        per_member = np.asarray(water["members"]) - np.asarray(vacuum["members"])
        out["members_dG_corr"] = per_member.tolist()
        out["model_error"] = float(np.std(per_member))
    return out


def write_json(path: Path, data: dict) -> None:
    from mlff.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1))
