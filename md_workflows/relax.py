"""Geometry relaxation with an mlff model: ``mlff relax`` and :func:`relax`.

Engines
    ``ase``: FIRE, BFGS or LBFGS (ase.optimize) on the positions, and with ``cell=True`` on the
    cell too through ``ase.filters.FrechetCellFilter`` at ``pressure`` (bar); converged when the
    largest force (and stress term) is below ``fmax`` (eV/A).
    ``openmm``: ``openmm.LocalEnergyMinimizer`` on a TorchForce system (positions only);
    converged when the largest force, evaluated after minimising, is below ``fmax``.

Writes ``relaxed.extxyz`` (energy, forces; stress for periodic cells), ``relaxed.pdb`` for pdb
inputs and ``relax.log`` (the optimiser's log) to ``out``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch  # before openmm

from calculators import openmm as _omm  # noqa: F401 - reloads openmm-torch plugins first
from md_workflows.md import load_structure
from mlff.units import ANGSTROM_TO_NM, BAR_TO_EV_PER_A3, KJ_PER_MOL_PER_NM_TO_EV_PER_A, NM_TO_ANGSTROM

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


@dataclass(frozen=True)
class RelaxConfig:
    """A relaxation. fmax: eV/A. steps: maximum optimiser steps. pressure: bar (cell).
    optimizer: one of FIRE, BFGS, LBFGS (ase engine). engine: ``ase`` or ``openmm``."""

    structure: str
    out: str = "runs/relax"
    model: str = "default"
    engine: str = "ase"
    optimizer: str = "FIRE"
    fmax: float = 0.01
    steps: int = 1000
    cell: bool = False
    pressure: float = 0.0
    dtype: Optional[str] = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.engine not in ("ase", "openmm"):
            raise ValueError(f"engine must be 'ase' or 'openmm', got {self.engine!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.fmax > 0 or self.steps < 1:
            raise ValueError(f"fmax must be > 0 and steps >= 1, got {self.fmax}, {self.steps}")
        if self.cell and self.engine != "ase":
            raise ValueError("cell relaxation needs the ase engine (FrechetCellFilter)")


@dataclass(frozen=True)
class RelaxResult:
    """converged: max force (and cell term) below fmax. fmax_final: eV/A. energy: eV."""

    converged: bool
    steps: int
    energy: float
    fmax_final: float
    files: Dict[str, Path]


def relax(cfg: RelaxConfig) -> RelaxResult:
    """Relax ``cfg.structure`` and write the results to ``cfg.out`` (see the module docstring)."""
    import ase.io

    from calculators._common import resolve_model
    from calculators.ase import MLFFCalculator
    from mlff.data.label import atomic_write_extxyz

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    potential = resolve_model(cfg.model, cfg.device, cfg.dtype)
    atoms, topology = load_structure(cfg.structure)
    periodic = bool(np.all(atoms.pbc))
    if cfg.cell and not periodic:
        raise ValueError("cell relaxation needs a periodic structure with a cell")
    calc = MLFFCalculator(potential, device=cfg.device)
    log_path = out / "relax.log"
    if cfg.engine == "ase":
        import ase.optimize
        from ase.filters import FrechetCellFilter

        atoms.calc = calc
        target = FrechetCellFilter(atoms, scalar_pressure=cfg.pressure * BAR_TO_EV_PER_A3) if cfg.cell else atoms
        opt = getattr(ase.optimize, cfg.optimizer)(target, logfile=str(log_path))
        converged = bool(opt.run(fmax=cfg.fmax, steps=cfg.steps))
        n_steps = int(opt.nsteps)
        fmax_final = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())
    else:
        n_steps, fmax_final = _openmm_minimize(cfg, atoms, topology, potential, log_path)
        converged = fmax_final < cfg.fmax
        atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    atoms.get_forces()
    relaxed = atoms.copy()
    from ase.calculators.singlepoint import SinglePointCalculator

    relaxed.calc = SinglePointCalculator(relaxed, **{k: v for k, v in calc.results.items()
                                                    if k in ("energy", "forces", "stress")})
    files = {"relaxed": out / "relaxed.extxyz", "log": log_path}
    atomic_write_extxyz(files["relaxed"], [relaxed])
    if Path(cfg.structure).suffix.lower() == ".pdb":
        import openmm.app as app
        import openmm.unit as u

        tmp = out / f".relaxed.tmp.{os.getpid()}.pdb"
        with open(tmp, "w") as f:
            app.PDBFile.writeFile(topology, u.Quantity(atoms.positions, u.angstrom), f)
        os.replace(tmp, out / "relaxed.pdb")
        files["relaxed_pdb"] = out / "relaxed.pdb"
    return RelaxResult(converged, n_steps, energy, fmax_final, files)


def _openmm_minimize(cfg: RelaxConfig, atoms, topology, potential, log_path: Path):
    import openmm
    import openmm.unit as u

    from calculators.openmm import make_torch_force

    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))
    periodic = bool(np.all(atoms.pbc))
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*r) for r in atoms.cell.array * ANGSTROM_TO_NM])
    system.addForce(make_torch_force(potential, [int(z) for z in atoms.numbers], periodic=periodic,
                                     device=cfg.device))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(atoms.positions * ANGSTROM_TO_NM)
    # OpenMM's tolerance is the RMS force in kJ/mol/nm; ask for fmax as RMS (stricter than max)
    tol = cfg.fmax / KJ_PER_MOL_PER_NM_TO_EV_PER_A
    openmm.LocalEnergyMinimizer.minimize(ctx, tol, cfg.steps)
    state = ctx.getState(getPositions=True, getForces=True, getEnergy=True)
    atoms.positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * NM_TO_ANGSTROM
    f = np.asarray(state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    fmax = float(np.sqrt((f ** 2).sum(axis=1)).max()) * KJ_PER_MOL_PER_NM_TO_EV_PER_A
    log_path.write_text(f"OpenMM LocalEnergyMinimizer: tolerance {tol:.4g} kJ/mol/nm, "
                        f"max iterations {cfg.steps}; final max force {fmax:.5f} eV/A\n")
    return cfg.steps, fmax
