"""The sampler's settings (:class:`SamplingSettings`) and what a finished leg holds
(:class:`LegSamples`); the sampler is :mod:`.sampling`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from openmm.unit import MOLAR_GAS_CONSTANT_R, kelvin, kilojoule_per_mole

from mlff.units import PS_TO_FS

#: kJ/(mol K), OpenMM's value, so reduced potentials use the kT its thermostats use
MOLAR_GAS_CONSTANT_KJ: float = MOLAR_GAS_CONSTANT_R.value_in_unit(kilojoule_per_mole / kelvin)


@dataclass(frozen=True)
class SamplingSettings:
    """How each window is sampled. Times in ps, temperature in K, pressure in bar."""

    temperature_K: float = 298.15
    pressure_bar: float | None = None
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    equilibration_ps: float = 10.0
    production_ps: float = 40.0
    sample_every_ps: float = 1.0
    barostat_every_steps: int = 25
    platform: str = "CPU"
    threads: int = 1
    seed: int = 0
    checkpoint_every_samples: int = 10
    minimize: bool = True
    fd_step: float = 1e-3

    def __post_init__(self):
        for name in ("temperature_K", "timestep_fs", "friction_per_ps", "sample_every_ps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SamplingSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.production_ps < self.sample_every_ps:
            raise ValueError("production_ps must be at least one sample interval "
                             f"({self.sample_every_ps} ps), got {self.production_ps}")
        if self.equilibration_ps < 0:
            raise ValueError(f"equilibration_ps must be >= 0, got {self.equilibration_ps}")
        if self.platform not in ("Reference", "CPU", "CUDA", "OpenCL"):
            raise ValueError(f"unknown OpenMM platform {self.platform!r}: use Reference, CPU, CUDA or OpenCL")
        if not 0 < self.fd_step < 0.1:
            raise ValueError(f"fd_step must be in (0, 0.1), got {self.fd_step}")

    @property
    def kT_kj_mol(self) -> float:
        return MOLAR_GAS_CONSTANT_KJ * self.temperature_K

    @property
    def steps_per_sample(self) -> int:
        return max(1, int(round(self.sample_every_ps * PS_TO_FS / self.timestep_fs)))

    @property
    def equilibration_steps(self) -> int:
        return int(round(self.equilibration_ps * PS_TO_FS / self.timestep_fs))

    @property
    def n_samples(self) -> int:
        return int(round(self.production_ps / self.sample_every_ps))


@dataclass
class LegSamples:
    """What a leg's windows produced (all windows complete)."""

    states: list[dict[str, float]]
    ti_parameters: list[str]
    u_kln: list[np.ndarray]          # K arrays [K, n_k], reduced (kT)
    dudl: list[np.ndarray]           # K arrays [n_k, P], reduced (kT per unit lambda)
    time_ps: list[np.ndarray]        # K arrays [n_k]
    temperature_K: float
    positions_nm: list[np.ndarray] | None = None  # K arrays [n_k, A, 3] of save_atoms
    box_nm: list[np.ndarray] | None = None        # K arrays [n_k, 3, 3]

    @property
    def lambdas(self) -> np.ndarray:
        """[K, P] values of the TI parameters per window."""
        return np.array([[s[p] for p in self.ti_parameters] for s in self.states], dtype=float)
