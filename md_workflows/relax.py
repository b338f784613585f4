"""Geometry relaxation with an mlff model: ``mlff relax`` and :func:`relax`.

Engines
    ``ase``: FIRE, BFGS or LBFGS (ase.optimize) on the positions, and with ``cell=True`` on the
    cell too through ``ase.filters.FrechetCellFilter`` at ``pressure_bar``; converged when the
    largest force (and stress term) is below ``fmax_eV_per_A``.
    ``openmm``: ``openmm.LocalEnergyMinimizer`` on a TorchForce system (positions only);
    converged when the largest force, evaluated after minimising, is below ``fmax_eV_per_A``.

Writes ``relaxed.extxyz`` (energy, forces; stress for periodic cells), ``relaxed.pdb`` for pdb
inputs and ``relax.log`` (the optimiser's log) to ``out``, and ``relax_checkpoint.npz``: the
positions and cell after every optimiser step (ase; openmm: at the end) with the settings.
``resume=True`` (``mlff relax --resume``, e.g. with a larger ``--steps`` after a run that did not
converge, or after a kill) continues from that geometry with a fresh optimiser, up to ``steps``
in total; any change of setting other than :data:`RELAX_RESUMABLE` is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

# torch, numpy, OpenMM and ASE are imported where they are used: the configuration above
# :func:`relax` is what the command line imports to build its parser.

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")
#: RelaxConfig fields that may change on ``--resume`` (the step budget).
RELAX_RESUMABLE = ("steps",)
#: The checkpoint in the output folder.
CHECKPOINT = "relax_checkpoint.npz"


@dataclass(frozen=True)
class RelaxConfig:
    """A relaxation. fmax_eV_per_A: force threshold. steps: maximum optimiser steps.
    pressure_bar: the cell's target pressure (``cell=True``).
    optimizer: one of FIRE, BFGS, LBFGS (ase engine). engine: ``ase`` or ``openmm``."""

    structure: str
    out: str = "runs/relax"
    model: str = "default"
    engine: str = "ase"
    optimizer: str = "FIRE"
    fmax_eV_per_A: float = 0.01
    steps: int = 1000
    cell: bool = False
    pressure_bar: float = 0.0
    dtype: Optional[str] = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.engine not in ("ase", "openmm"):
            raise ValueError(f"engine must be 'ase' or 'openmm', got {self.engine!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.fmax_eV_per_A > 0 or self.steps < 1:
            raise ValueError(f"fmax_eV_per_A must be > 0 and steps >= 1, got {self.fmax_eV_per_A}, "
                             f"{self.steps}")
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


def relax(cfg: RelaxConfig, resume: bool = False) -> RelaxResult:
    """Relax ``cfg.structure`` (or, with ``resume``, continue the relaxation in ``cfg.out``) and
    write the results to ``cfg.out`` (see the module docstring), holding the folder's run lock
    (:mod:`mlff.run_lock`).

    Raises:
        FileExistsError: ``cfg.out`` holds a relaxation and ``resume`` is False.
        FileNotFoundError: ``resume`` without a checkpoint.
        ResumeMismatchError: ``resume`` with settings other than the saved ones.
    """
    from mlff.atomic import check_writable
    from mlff.run_lock import run_lock

    check_writable(cfg.out, "relax output folder")
    with run_lock(cfg.out, "mlff relax"):
        return _relax(cfg, resume)


def _relax(cfg: RelaxConfig, resume: bool) -> RelaxResult:
    import numpy as np

    from mlff.calculators.ase import MLFFCalculator
    from mlff.atomic import atomic_path, atomic_write_extxyz
    from mlff.io import resolve_model
    from mlff.md_workflows.run_folder import load_npz_checkpoint, save_npz_checkpoint
    from mlff.md_workflows.structure import load_structure
    from mlff.resume_check import check_resume_settings, run_settings, saved_settings
    from mlff.units import BAR_TO_EV_PER_A3

    out = Path(cfg.out)
    checkpoint = out / CHECKPOINT
    if resume and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint {checkpoint}; run without --resume first")
    if not resume and checkpoint.exists():
        raise FileExistsError(f"{out} already holds a relaxation; continue it with --resume "
                              "(e.g. with a larger --steps) or choose another --out")
    atoms, topology = load_structure(cfg.structure)
    periodic = bool(np.all(atoms.pbc))
    if cfg.cell and not periodic:
        raise ValueError("cell relaxation needs a periodic structure with a cell")
    settings = run_settings(cfg)
    inputs = {k: settings[k] for k in ("structure_sha256", "model_sha256")}
    done = 0  # optimiser steps of earlier runs
    if resume:
        arrays, meta = load_npz_checkpoint(checkpoint, ("steps_done", "config"))
        old = saved_settings(RelaxConfig, meta["config"], meta.get("inputs", {}), settings)
        check_resume_settings(old, settings, RELAX_RESUMABLE, str(out))
        atoms.positions = arrays["positions"]
        if "cell" in arrays:
            atoms.cell = arrays["cell"]
        done = int(meta["steps_done"])

    def save(steps_done: int) -> None:
        arrays = {"positions": atoms.positions, **({"cell": atoms.cell.array} if periodic else {})}
        save_npz_checkpoint(checkpoint, arrays, {"steps_done": steps_done, "config": asdict(cfg),
                                                 "inputs": inputs})

    potential = resolve_model(cfg.model, cfg.device, cfg.dtype)
    calc = MLFFCalculator(potential, device=cfg.device)
    log_path = out / "relax.log"
    if cfg.engine == "ase":
        import ase.optimize
        from ase.filters import FrechetCellFilter

        atoms.calc = calc
        target = FrechetCellFilter(atoms, scalar_pressure=cfg.pressure_bar * BAR_TO_EV_PER_A3) if cfg.cell else atoms
        opt = getattr(ase.optimize, cfg.optimizer)(target, logfile=str(log_path))
        opt.attach(lambda: save(done + int(opt.nsteps)), interval=1)
        converged = bool(opt.run(fmax=cfg.fmax_eV_per_A, steps=max(cfg.steps - done, 0)))
        n_steps = done + int(opt.nsteps)
        fmax_final = float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())
    else:
        n_steps, fmax_final = _openmm_minimize(cfg, atoms, topology, potential, log_path,
                                               max(cfg.steps - done, 1))
        n_steps += done
        converged = fmax_final < cfg.fmax_eV_per_A
        atoms.calc = calc
    save(n_steps)
    energy = float(atoms.get_potential_energy())
    atoms.get_forces()
    relaxed = atoms.copy()
    from ase.calculators.singlepoint import SinglePointCalculator

    relaxed.calc = SinglePointCalculator(relaxed, **{k: v for k, v in calc.results.items()
                                                    if k in ("energy", "forces", "stress")})
    files = {"relaxed": out / "relaxed.extxyz", "log": log_path, "checkpoint": checkpoint}
    atomic_write_extxyz(files["relaxed"], [relaxed])
    if Path(cfg.structure).suffix.lower() == ".pdb":
        import openmm.app as app
        import openmm.unit as u

        files["relaxed_pdb"] = out / "relaxed.pdb"
        with atomic_path(files["relaxed_pdb"]) as tmp, open(tmp, "w") as f:
            app.PDBFile.writeFile(topology, u.Quantity(atoms.positions, u.angstrom), f)
    return RelaxResult(converged, n_steps, energy, fmax_final, files)


def _openmm_minimize(cfg: RelaxConfig, atoms, topology, potential, log_path: Path, steps: int):
    import numpy as np
    import openmm
    import openmm.unit as u

    from mlff.calculators.openmm import build_ml_system
    from mlff.units import ANGSTROM_TO_NM, KJ_PER_MOL_PER_NM_TO_EV_PER_A, NM_TO_ANGSTROM

    system = build_ml_system(potential, atoms, device=cfg.device).system
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(atoms.positions * ANGSTROM_TO_NM)
    # OpenMM's tolerance is the RMS force in kJ/mol/nm; ask for fmax as RMS (stricter than max)
    tol = cfg.fmax_eV_per_A / KJ_PER_MOL_PER_NM_TO_EV_PER_A
    openmm.LocalEnergyMinimizer.minimize(ctx, tol, steps)
    state = ctx.getState(getPositions=True, getForces=True, getEnergy=True)
    atoms.positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * NM_TO_ANGSTROM
    f = np.asarray(state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    fmax = float(np.sqrt((f ** 2).sum(axis=1)).max()) * KJ_PER_MOL_PER_NM_TO_EV_PER_A
    with open(log_path, "a") as f:
        f.write(f"OpenMM LocalEnergyMinimizer: tolerance {tol:.4g} kJ/mol/nm, max iterations "
                f"{steps}; final max force {fmax:.5f} eV/A\n")
    return steps, fmax
