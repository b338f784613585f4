"""The configuration of a hydration free-energy calculation (:class:`HydrationConfig`).

A light module (standard library and :mod:`.alchemical`'s schedule only) so that the command
line states the protocol's defaults without importing numpy or OpenMM; the calculation itself
is :func:`mlff.md_workflows.free_energy.hydration.run_hydration`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .alchemical import LambdaSchedule
from .periodic_box import minimum_box_edge_nm

if TYPE_CHECKING:
    from .sampling import SamplingSettings


@dataclass(frozen=True)
class HydrationConfig:
    """Everything that defines a hydration free-energy calculation (units in the names).

    ``method``: ``independent`` windows (parallel processes or a Dask cluster; MBAR, BAR, EXP
    and TI) or ``hrex`` (Hamiltonian replica exchange with openmmtools in one process; MBAR,
    BAR and EXP, no TI).

    The defaults are the protocol of benchmarks/freesolv.py: GAFF2/AM1-BCC in a 2.5 nm TIP3P
    box, PME 0.9 nm, 4 fs with hydrogen masses of 3 amu, 298.15 K and 1 atm, 13 windows of
    10 ps equilibration + 70 ps production with energies at every window each 1 ps; the vacuum
    leg on the Reference platform (faster than CPU for a handful of atoms).

    ``model`` (``"default"`` or a model file) adds the ML/MM end-state corrections (MM -> ML
    for the solute's intramolecular energy) in water and in vacuum after the MM legs:
    ``ml_windows`` of lambda_ml, each ``ml_equilibration_ps`` + ``ml_production_ps`` with
    energies every ``ml_sample_every_ps``, same thermostat and platforms as the MM legs and
    their timestep unless ``ml_timestep_fs`` is given (an ML potential may need a shorter one
    than the MM force field with heavy hydrogens); the model through ``ml_route`` (``torch``: TorchForce, ``python``: PythonForce) on
    ``ml_device`` (``cuda`` with the CUDA platform). ``ml_switches`` > 0 adds that many
    nonequilibrium switches each way per leg (``ml_switch_ps`` long; Jarzynski and BAR), a
    screen run in one process after the windows.
    """

    smiles: str | None = None
    name: str | None = None
    molecule_file: str | None = None
    start_dihedrals: dict[str, float] | None = None
    forcefield: str = "gaff2"
    electrostatics_windows: tuple[float, ...] = LambdaSchedule().electrostatics
    sterics_windows: tuple[float, ...] = LambdaSchedule().sterics
    box_edge_nm: float = 2.5
    nonbonded_cutoff_nm: float = 0.9
    hydrogen_mass_amu: float | None = 3.0
    temperature_K: float = 298.15
    pressure_bar: float = 1.01325
    timestep_fs: float = 4.0
    friction_per_ps: float = 1.0
    equilibration_ps: float = 10.0
    production_ps: float = 70.0
    sample_every_ps: float = 1.0
    water_platform: str = "CPU"
    vacuum_platform: str = "Reference"
    threads: int = 1
    workers: int = 2
    scheduler: str | None = None
    seed: int = 0
    cache_dir: str | None = None
    method: str = "independent"
    model: str | None = None
    ml_route: str = "torch"
    ml_windows: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    ml_equilibration_ps: float = 5.0
    ml_production_ps: float = 15.0
    ml_sample_every_ps: float = 0.5
    ml_timestep_fs: float | None = None
    ml_device: str = "cpu"
    ml_switches: int = 0
    ml_switch_ps: float = 2.0

    def __post_init__(self):
        if (self.smiles is None) == (self.molecule_file is None):
            raise ValueError("give the molecule as exactly one of smiles (e.g. smiles: CCO) and "
                             "molecule_file (a .mol, .sdf or .mol2 with hydrogens and 3D "
                             "coordinates, whose conformer is then used)")
        if self.molecule_file is not None:  # absolute, so a resumed run finds the same file
            object.__setattr__(self, "molecule_file", str(Path(self.molecule_file).expanduser().resolve()))
        object.__setattr__(self, "electrostatics_windows", tuple(float(x) for x in self.electrostatics_windows))
        object.__setattr__(self, "sterics_windows", tuple(float(x) for x in self.sterics_windows))
        self.schedule  # validates the windows
        # the water leg runs under a barostat when pressure_bar is set (see minimum_box_edge_nm)
        min_edge = minimum_box_edge_nm(self.nonbonded_cutoff_nm,
                                       barostat=self.pressure_bar is not None)
        if self.box_edge_nm < min_edge:
            raise ValueError(f"box_edge_nm {self.box_edge_nm} is too small for a "
                             f"{self.nonbonded_cutoff_nm} nm cutoff: use at least "
                             f"{min_edge:.2f} nm")
        if self.method not in ("independent", "hrex"):
            raise ValueError(f"unknown sampling method {self.method!r}: use 'independent' "
                             "(windows in parallel processes) or 'hrex' (replica exchange)")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("workers and threads must be >= 1")
        self.sampling("water")  # validates the sampling values
        object.__setattr__(self, "ml_windows", tuple(float(x) for x in self.ml_windows))
        w = self.ml_windows
        if len(w) < 2 or w[0] != 0.0 or w[-1] != 1.0 or any(b <= a for a, b in zip(w, w[1:])):
            raise ValueError(f"ml_windows must rise from 0 to 1 with at least two values, got {list(w)}")
        if self.ml_route not in ("torch", "python"):
            raise ValueError(f"ml_route must be 'torch' (TorchForce) or 'python' (PythonForce), "
                             f"got {self.ml_route!r}")
        if self.model is not None:
            self.ml_sampling("water")
            if self.ml_production_ps < 3 * self.ml_sample_every_ps:
                raise ValueError(f"ml_production_ps {self.ml_production_ps} gives fewer than 3 "
                                 f"samples per window at ml_sample_every_ps "
                                 f"{self.ml_sample_every_ps}: sample longer or more often")
        if self.ml_switches < 0 or (self.ml_switches and self.ml_switches < 2) or not self.ml_switch_ps > 0:
            raise ValueError("ml_switches must be 0 (no switching) or >= 2, ml_switch_ps > 0")

    @property
    def schedule(self) -> LambdaSchedule:
        return LambdaSchedule(self.electrostatics_windows, self.sterics_windows)

    @property
    def label(self) -> str:
        return self.name or self.smiles or Path(self.molecule_file).stem

    @property
    def kT_kcal_mol(self) -> float:
        from mlff.units import KJ_PER_KCAL

        from .sampling import MOLAR_GAS_CONSTANT_KJ

        return MOLAR_GAS_CONSTANT_KJ * self.temperature_K / KJ_PER_KCAL

    def sampling(self, leg: str) -> SamplingSettings:
        from .sampling import SamplingSettings

        return SamplingSettings(
            temperature_K=self.temperature_K,
            pressure_bar=self.pressure_bar if leg == "water" else None,
            timestep_fs=self.timestep_fs, friction_per_ps=self.friction_per_ps,
            equilibration_ps=self.equilibration_ps, production_ps=self.production_ps,
            sample_every_ps=self.sample_every_ps,
            platform=self.water_platform if leg == "water" else self.vacuum_platform,
            threads=self.threads, seed=self.seed + (0 if leg == "water" else 1))

    def ml_sampling(self, leg: str) -> SamplingSettings:
        """The correction leg's sampling: the MM leg's, with the ml_* lengths and timestep."""
        base = self.sampling(leg)
        return dataclasses.replace(base, equilibration_ps=self.ml_equilibration_ps,
                                   timestep_fs=self.ml_timestep_fs or base.timestep_fs,
                                   production_ps=self.ml_production_ps,
                                   sample_every_ps=self.ml_sample_every_ps,
                                   seed=self.seed + (10 if leg == "water" else 11))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "HydrationConfig":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {where}; valid keys: {sorted(valid)}")
        if "smiles" not in values and "molecule_file" not in values:
            raise ValueError(f"{where} needs 'smiles' (the molecule, e.g. smiles: CCO) or "
                             "'molecule_file' (a .mol/.sdf/.mol2 with hydrogens and 3D coordinates)")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "HydrationConfig":
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of HydrationConfig keys")
        data = data.get("hydration", data)
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
