"""Configuration and result records of ``mlff md`` (:func:`mlff.md_workflows.md.run_md`).

A light module (standard library only) so that the command line can build its parser and state
the defaults without importing torch, numpy, OpenMM or ASE.

Units are in the field names: K, bar, fs, 1/ps, amu.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger(__name__)

#: MD engines: OpenMM (TorchForce) or ASE (MLFFCalculator).
ENGINES = ("openmm", "ase")
#: Thermodynamic ensembles (``npt`` needs a periodic cell).
ENSEMBLES = ("nve", "nvt", "npt")
#: The columns of ``log.csv``, in order.
LOG_COLUMNS = ("step", "time_ps", "potential_eV", "kinetic_eV", "total_eV", "temperature_K",
               "volume_A3", "density_g_cm3", "energy_std_eV", "max_force_std_eV_A",
               "max_force_std_atom")
#: MDConfig fields that may change when a run is resumed (the total length, how the run is
#: shown, threads, the uncertainty monitor's levels); any other change is refused.
#: ``out`` is the run folder itself; ``structure`` and ``model`` are compared by file content.
MD_RESUMABLE = ("steps", "progress", "threads", "uq_warn", "uq_stop")
#: Largest time step (fs) without hydrogen mass repartitioning that passes without a warning.
MAX_TIMESTEP_WITHOUT_HMR_FS = 1.0


@dataclass(frozen=True)
class MDConfig:
    """A molecular-dynamics run (validated on creation).

    Attributes:
        structure: input file: pdb (topology kept) or anything ase.io reads (xyz, extxyz, ...).
        model: model file, or ``"default"`` for the shipped default ensemble.
        engine: ``openmm`` or ``ase``. ensemble: ``nve``, ``nvt`` or ``npt`` (periodic only).
        temperature_K: thermostat target and initial velocities. pressure_bar: NPT target.
        timestep_fs: MD time step. steps: MD steps in total (a resumed run continues up to it).
        report_every: steps between frames, log rows, UQ checks and checkpoints.
        friction_per_ps: Langevin friction. seed: velocities and thermostat noise.
        hmr: hydrogen mass repartitioning (OpenMM engine): hydrogens get ``hydrogen_mass_amu``,
            taken from the bonded heavy atom.
        dtype: ``None`` keeps the model's dtype. device: ``cpu`` or ``cuda``.
        threads: torch (and OpenMM CPU platform) threads; None leaves torch's setting.
        uq_warn / uq_stop: force-std levels in eV/A (ensembles only), see :mod:`mlff.md_workflows.uq`.
        write_extxyz: also write every frame to ``trajectory.extxyz`` (ASE engine).
        barostat_every: MonteCarloBarostat frequency (steps).
        platform: OpenMM platform (``CPU``: single precision, the default on CPU; ``Reference``:
            double precision, slow; ``CUDA``: the default with ``device="cuda"``).
        progress: show a tqdm progress bar with ns/day.
    """

    structure: str
    out: str = "runs/md"
    model: str = "default"
    engine: str = "openmm"
    ensemble: str = "nvt"
    temperature_K: float = 300.0
    pressure_bar: float = 1.0
    timestep_fs: float = 0.5
    steps: int = 1000
    report_every: int = 50
    friction_per_ps: float = 1.0
    seed: int = 0
    hmr: bool = False
    hydrogen_mass_amu: float = 3.0
    dtype: Optional[str] = None
    device: str = "cpu"
    threads: Optional[int] = None
    uq_warn: Optional[float] = None
    uq_stop: Optional[float] = None
    write_extxyz: bool = False
    barostat_every: int = 25
    platform: Optional[str] = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        for name in ("timestep_fs", "temperature_K", "friction_per_ps", "hydrogen_mass_amu"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("steps", "report_every", "barostat_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.hmr and self.engine != "openmm":
            raise ValueError("hmr is implemented for the openmm engine; use --engine openmm or "
                             "drop --hmr (and use a 0.5 fs time step)")
        if self.timestep_fs > MAX_TIMESTEP_WITHOUT_HMR_FS and not self.hmr:
            log.warning("time step %.2f fs without hydrogen mass repartitioning: X-H "
                        "vibrations may be unstable; use --hmr or 0.5 fs", self.timestep_fs)

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "MDConfig":
        """Build from a dict; unknown keys are an error listing the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown MD option(s) {unknown}; valid: {sorted(valid)}")
        return cls(**d)


@dataclass(frozen=True)
class MDResult:
    """What :func:`mlff.md_workflows.md.run_md` did. ``stopped``: the UQ stop message, else None."""

    out: Path
    steps_done: int
    n_frames: int
    wall_s: float
    ns_per_day: float
    stopped: Optional[str]
    files: Dict[str, Path]
