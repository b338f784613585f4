"""Nonequilibrium switching between the MM and the ML end state: Jarzynski both ways and
Crooks/BAR, a cheap screen of the ML/MM correction (one process, checkpointed).

An equilibrium chain runs at lambda_ml = 0; every ``spacing_ps`` a switch starts from its
current state and drives lambda_ml from 0 to 1 in ``lambda_steps`` equal increments over
``switch_ps`` of dynamics, accumulating the work W = sum_i [U(lambda_i, x) - U(lambda_i-1, x)]
at the configuration where lambda changes; the chain then continues from where the switch
started. The same from lambda_ml = 1 back to 0. U is linear in lambda_ml, so each work
increment is (lambda_i - lambda_i-1) dU/dlambda(x), from the forces' analytic derivative.

Estimates (kT): Jarzynski forward -ln <exp(-W_f)>, reverse ln <exp(-W_r)>, and BAR on both
work sets (pymbar). Diagnostics: the spread of each work distribution and the mean dissipated
work (<W_f> + <W_r>) / 2 (zero for a reversible switch); a warning when they are large.

Checkpoint ``switching.npz`` (atomic): works so far and both chains' states; a rerun resumes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlff.atomic import atomic_savez
from mlff.units import PS_TO_FS

from .estimators import _lib
from .ml_interpolation import LAMBDA_ML, interpolated_system
from .sampling_settings import SamplingSettings

#: Jarzynski is flagged above this work spread (kT), BAR above this mean dissipation (kT)
MAX_JARZYNSKI_SPREAD_KT = 2.0
MAX_DISSIPATION_KT = 5.0


@dataclass(frozen=True)
class SwitchingProtocol:
    """``n_switches`` each way, each ``switch_ps`` long in ``lambda_steps`` increments, started
    every ``spacing_ps`` of the equilibrium chains (after ``equilibration_ps``)."""

    n_switches: int = 20
    switch_ps: float = 2.0
    lambda_steps: int = 50
    spacing_ps: float = 1.0
    equilibration_ps: float = 5.0

    def __post_init__(self):
        if self.n_switches < 2 or self.lambda_steps < 1 or not self.switch_ps > 0 or self.spacing_ps < 0:
            raise ValueError("switching needs n_switches >= 2, lambda_steps >= 1, switch_ps > 0 "
                             "and spacing_ps >= 0")


def _context(system, settings: SamplingSettings, box_nm):
    import openmm

    from .sampling import thermostatted_context

    context, integrator = thermostatted_context(system, settings, settings.seed * 7 + 12345)
    if box_nm is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box_nm)])
    return context, integrator


def _dudl(context) -> float:
    return float(context.getState(getParameterDerivatives=True).getEnergyParameterDerivatives()[LAMBDA_ML])


def _switch(context, integrator, start: float, end: float, steps_per_increment: int,
            increments: int) -> float:
    """One switch from lambda ``start`` to ``end``; returns the work (kJ/mol)."""
    work = 0.0
    lam = start
    for i in range(1, increments + 1):
        new = start + (end - start) * i / increments
        work += (new - lam) * _dudl(context)
        lam = new
        context.setParameter(LAMBDA_ML, lam)
        integrator.step(steps_per_increment)
    return work


def run_switching(out_dir: str | Path, mm_system, positions_nm, box_nm, spec: dict,
                  settings: SamplingSettings, protocol: SwitchingProtocol = SwitchingProtocol(),
                  progress: bool = False) -> dict:
    """Run (or resume) the switches of one leg; returns :func:`analyze_switching`'s dict."""
    import openmm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "switching.npz"
    kT = settings.kT_kj_mol
    steps = max(1, int(round(protocol.switch_ps * PS_TO_FS / settings.timestep_fs / protocol.lambda_steps)))
    spacing = int(round(protocol.spacing_ps * PS_TO_FS / settings.timestep_fs))
    works = {"forward": [], "reverse": []}
    states = {}
    if path.exists():
        data = np.load(path)
        works = {"forward": list(data["forward"]), "reverse": list(data["reverse"])}
        states = {k: str(data[f"state_{k}"]) for k in ("forward", "reverse") if f"state_{k}" in data.files}
    for direction, (start, end) in (("forward", (0.0, 1.0)), ("reverse", (1.0, 0.0))):
        if len(works[direction]) >= protocol.n_switches:
            continue
        system, _ = interpolated_system(mm_system, spec)
        context, integrator = _context(system, settings, box_nm)
        context.setParameter(LAMBDA_ML, start)
        if direction in states:
            context.setState(openmm.XmlSerializer.deserialize(states[direction]))
        else:
            context.setPositions(np.asarray(positions_nm))
            context.setVelocitiesToTemperature(settings.temperature_K, settings.seed + 99)
            integrator.step(int(round(protocol.equilibration_ps * PS_TO_FS / settings.timestep_fs)))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=protocol.n_switches, initial=len(works[direction]),
                       desc=f"switching {direction}")
        while len(works[direction]) < protocol.n_switches:
            integrator.step(spacing)
            chain = context.getState(getPositions=True, getVelocities=True, getParameters=True)
            works[direction].append(_switch(context, integrator, start, end, steps,
                                            protocol.lambda_steps) / kT)
            context.setState(chain)  # the equilibrium chain goes on from where it was
            context.setParameter(LAMBDA_ML, start)
            states[direction] = openmm.XmlSerializer.serialize(chain)
            atomic_savez(path, forward=np.array(works["forward"]), reverse=np.array(works["reverse"]),
                         **{f"state_{k}": np.array(v) for k, v in states.items()})
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return analyze_switching(np.array(works["forward"]), np.array(works["reverse"]))


def analyze_switching(w_forward_kT: np.ndarray, w_reverse_kT: np.ndarray) -> dict:
    """Jarzynski both ways and BAR on forward (0 -> 1) and reverse (1 -> 0) works (kT).

    Returns estimates of dG(0 -> 1) in kT (``jarzynski_forward``, ``jarzynski_reverse``,
    ``bar``: each ``value``, ``error``), ``work_std_kT`` per direction, ``dissipation_kT``
    and ``warnings``.
    """
    lib = _lib()
    wf, wr = np.asarray(w_forward_kT, dtype=float), np.asarray(w_reverse_kT, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jf = lib.other_estimators.exp(wf)
        jr = lib.other_estimators.exp(wr)
        b = lib.other_estimators.bar(wf, wr)
    out = {"jarzynski_forward": {"value": float(jf["Delta_f"]), "error": float(jf["dDelta_f"])},
           "jarzynski_reverse": {"value": -float(jr["Delta_f"]), "error": float(jr["dDelta_f"])},
           "bar": {"value": float(b["Delta_f"]), "error": float(b["dDelta_f"])},
           "work_std_kT": {"forward": float(np.std(wf, ddof=1)), "reverse": float(np.std(wr, ddof=1))},
           "dissipation_kT": float((wf.mean() + wr.mean()) / 2), "n_switches": [len(wf), len(wr)]}
    problems = []
    for direction, spread in out["work_std_kT"].items():
        if spread > MAX_JARZYNSKI_SPREAD_KT:
            problems.append(f"{direction} works spread {spread:.1f} kT: Jarzynski {direction} "
                            "is unreliable")
    if out["dissipation_kT"] > MAX_DISSIPATION_KT:
        problems.append(f"mean dissipated work {out['dissipation_kT']:.1f} kT: the work "
                        "distributions barely overlap, BAR is unreliable; switch more slowly")
    out["warnings"] = problems
    return out
