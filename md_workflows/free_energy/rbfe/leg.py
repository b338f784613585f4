"""An ATM leg on the free-energy engine's sampler: independent windows along the ATM path,
checkpointed and resumable, run locally in processes or on a Dask cluster
(:mod:`..sampling`), with every state's energy from one ATMForce evaluation per sample
(:class:`..window_energies.ATMEnergies`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..sampling import load_leg, prepare_leg
from ..sampling_settings import SamplingSettings
from .analysis import RelativeBindingResult, relative_binding_arrays
from .schedule import ATMState, SoftCore


def prepare_atm_leg(out_dir: str | Path, system, positions_nm, states: Sequence[ATMState],
                    settings: SamplingSettings, soft: SoftCore = SoftCore(), box_vectors_nm=None,
                    save_atoms: list[int] | None = None, ml: dict | None = None) -> Path:
    """Write the inputs of an ATM run (``system`` holds the ATMForce of
    :func:`.atm_system.add_atm_force` and its restraints; ``states`` in path order, e.g.
    :func:`.schedule.linear_schedule`; ``ml`` the recipe of :func:`.ml_ligands.use_ml_ligands`
    for ML ligands). Run it with :func:`..sampling.run_leg`."""
    if any(b.s <= a.s for a, b in zip(states, states[1:])):
        raise ValueError("ATM states must be ordered along the path (s increasing), as linear_schedule gives")
    spec = {"states": [s.as_dict() for s in states], "soft": asdict(soft)}
    return prepare_leg(out_dir, system, positions_nm, [s.parameters() for s in states], settings,
                       ti_parameters=["s"], box_vectors_nm=box_vectors_nm, save_atoms=save_atoms, atm=spec,
                       ml=ml)


def analyze_atm_leg(out_dir: str | Path, detect_equilibration: bool = True) -> RelativeBindingResult:
    """ddG(A -> B), both legs and every estimator of a finished ATM run in ``out_dir``."""
    leg = json.loads((Path(out_dir) / "leg.json").read_text())
    if leg.get("atm") is None:
        raise ValueError(f"{out_dir} holds an alchemical leg that is not an ATM run")
    samples = load_leg(out_dir)
    s = np.array([[state["s"]] for state in leg["atm"]["states"]])
    return relative_binding_arrays(samples.u_kln, samples.dudl, s, detect_equilibration)


def write_atm_report(out_dir: str | Path, result: RelativeBindingResult, kT_kcal_mol: float,
                     title: str = "ATM") -> dict:
    """``result.json`` (ddG, both legs, every estimator, overlap) and ``overlap.png``,
    ``convergence.png``, ``dudl.png`` (dU/ds per state) in ``out_dir``; returns the paths."""
    from mlff.atomic import atomic_write_text

    from ..plots import plot_convergence, plot_dudl, plot_overlap

    out = Path(out_dir)
    record = result.to_dict(kT_kcal_mol)
    atomic_write_text(out / "result.json", json.dumps(record, indent=1))
    return {"result": out / "result.json",
            "overlap": plot_overlap(result.path, out / "overlap.png", title),
            "convergence": plot_convergence(result.path, out / "convergence.png", kT_kcal_mol, title),
            "dudl": plot_dudl(result.path, ["s"], out / "dudl.png", kT_kcal_mol, title)}

