"""The two MD engines of :func:`mlff.md_workflows.md.run_md` behind one interface,
:class:`Engine`, in eV, Angstrom and amu.

``openmm`` (:class:`OpenMMEngine`)
    the System from :func:`mlff.calculators.openmm.build_ml_system` (the model file built once,
    into the force); NVE ``VerletIntegrator``, NVT ``LangevinMiddleIntegrator``, NPT adds a
    ``MonteCarloBarostat``; optional hydrogen mass repartitioning from the topology's bonds.
    For ensembles a :class:`~mlff.md_workflows.uq.UQReporter` registered with the Simulation
    checks the spread at every report step, evaluating the force's own model.
``ase`` (:class:`ASEEngine`)
    :class:`mlff.calculators.ase.MLFFCalculator`; NVE ``VelocityVerlet``, NVT ``Langevin``, NPT
    ``LangevinBAOAB`` driven by the model's stress (hydrostatic).

OpenMM units (nm, kJ/mol, ps) appear only inside :class:`OpenMMEngine`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, Optional, Protocol

import numpy as np
import torch

from mlff.md_workflows.md_config import MDConfig
from mlff.md_workflows.structure import repartitioned_masses
from mlff.md_workflows.openmm_platform import platform_and_properties
from mlff.md_workflows.uq import UQMonitor, UQRecord, UQReporter
from mlff.units import (
    ANGSTROM_TO_NM, BAR_TO_EV_PER_A3, FS_ASE, FS_TO_PS, KJ_PER_MOL_TO_EV, NM_TO_ANGSTROM,
)

#: ASE NPT: barostat time constant in MD time steps.
BAROSTAT_TAU_STEPS = 100


@dataclass(frozen=True)
class Snapshot:
    """The state of a run at one step: positions ``[N, 3]`` (A), cell ``[3, 3]`` (A rows, None
    when non-periodic), potential and kinetic energy (eV)."""

    positions: np.ndarray
    cell: Optional[np.ndarray]
    potential: float
    kinetic: float


class Engine(Protocol):
    """What :func:`~mlff.md_workflows.md.run_md` drives.

    Attributes:
        step_count: MD steps done. masses: ``[N]`` amu (after HMR). n_dof: degrees of freedom
        for the temperature. periodic: whether there is a cell. num_members: ensemble members
        of the model (1: a single model, no spread).
    """

    masses: np.ndarray
    n_dof: int
    periodic: bool
    num_members: int

    @property
    def step_count(self) -> int: ...

    def step(self, n: int) -> None:
        """Advance ``n`` steps. May raise :class:`~mlff.md_workflows.uq.UncertaintyStop` at a
        report step (OpenMM's reporter); the engine is then at that step."""

    def snapshot(self) -> Snapshot:
        """The current :class:`Snapshot`."""

    def uq(self) -> Optional[UQRecord]:
        """The spread checked at the current step (None for a single model). Raises
        :class:`~mlff.md_workflows.uq.UncertaintyStop` above the stop level."""

    def checkpoint(self) -> Dict[str, np.ndarray]:
        """Everything needed to continue exactly (arrays for ``np.savez``)."""

    def restore(self, ckpt: Dict[str, np.ndarray], step: int) -> None:
        """Continue from :meth:`checkpoint`'s arrays, at MD step ``step``."""


def make_engine(cfg: MDConfig, atoms, topology, monitor: UQMonitor) -> Engine:
    """The engine ``cfg.engine`` for ``atoms`` (ase.Atoms, A) and ``topology`` (OpenMM, with
    bonds), with ``monitor`` checking the spread of ensembles.

    Raises:
        ValueError: npt without a cell; hmr on a hydrogen without a heavy partner.
    """
    if cfg.ensemble == "npt" and not bool(np.all(atoms.pbc)):
        raise ValueError("npt needs a periodic structure (a cell); use nvt for molecules")
    cls = OpenMMEngine if cfg.engine == "openmm" else ASEEngine
    return cls(cfg, atoms, topology, monitor)


class OpenMMEngine:
    """OpenMM Simulation with the ML System of :func:`~mlff.calculators.openmm.build_ml_system`."""

    def __init__(self, cfg: MDConfig, atoms, topology, monitor: UQMonitor) -> None:
        import openmm
        import openmm.app as app
        import openmm.unit as u

        from mlff.calculators.openmm import build_ml_system

        self.periodic = bool(np.all(atoms.pbc))
        masses = atoms.get_masses().astype(np.float64)
        self.masses = repartitioned_masses(topology, masses, cfg.hydrogen_mass_amu) if cfg.hmr else masses
        box = atoms.cell.array * ANGSTROM_TO_NM if self.periodic else None
        # the model file is built once, into the force; the reporter evaluates that same model
        self.ml = build_ml_system(cfg.model, atoms, periodic=self.periodic, masses=self.masses,
                                  box_vectors=box, device=cfg.device, dtype=cfg.dtype)
        system = self.ml.system
        system.addForce(openmm.CMMotionRemover())
        dt = cfg.timestep_fs * FS_TO_PS
        if cfg.ensemble == "nve":
            integrator = openmm.VerletIntegrator(dt)
        else:
            integrator = openmm.LangevinMiddleIntegrator(cfg.temperature_K, cfg.friction_per_ps, dt)
            integrator.setRandomNumberSeed(cfg.seed + 1)
        if cfg.ensemble == "npt":
            baro = openmm.MonteCarloBarostat(cfg.pressure_bar, cfg.temperature_K, cfg.barostat_every)
            baro.setRandomNumberSeed(cfg.seed + 2)
            system.addForce(baro)
        name = cfg.platform or ("CUDA" if cfg.device.startswith("cuda") else "CPU")
        platform, props = platform_and_properties(name, cfg.threads or torch.get_num_threads())
        self.simulation = app.Simulation(topology, system, integrator, platform, props)
        self.num_members = self.ml.num_members
        self.reporter: Optional[UQReporter] = None
        if self.num_members > 1:
            self.reporter = UQReporter(self.ml, monitor, cfg.report_every, dt)
            self.simulation.reporters.append(self.reporter)
        ctx = self.simulation.context
        ctx.setPositions(atoms.positions * ANGSTROM_TO_NM)
        ctx.setVelocitiesToTemperature(cfg.temperature_K * u.kelvin, cfg.seed + 3)
        # remove the centre-of-mass velocity now (CMMotionRemover would do it in the first step,
        # changing the kinetic energy between the first two log rows)
        v = np.asarray(ctx.getState(getVelocities=True).getVelocities(asNumpy=True)
                       .value_in_unit(u.nanometer / u.picosecond))
        v -= (self.masses[:, None] * v).sum(0) / self.masses.sum()
        ctx.setVelocities(v)
        self.n_dof = 3 * len(atoms) - 3
        self._u = u

    @property
    def step_count(self) -> int:
        return int(self.simulation.currentStep)

    def step(self, n: int) -> None:
        self.simulation.step(n)

    def _reported(self) -> bool:
        """Whether the reporter has evaluated the current step."""
        last = None if self.reporter is None else self.reporter.last
        return last is not None and last.step == self.step_count

    def uq(self) -> Optional[UQRecord]:
        if self.reporter is None:
            return None
        if self._reported():
            return self.reporter.last
        # OpenMM reports only after steps, at multiples of the interval: step 0 (and a last
        # step off the interval) are checked here explicitly
        return self.reporter.report_now(self.simulation)

    def snapshot(self) -> Snapshot:
        u = self._u
        # at a report step, the reporter's State (positions and energies) is this step's
        s = self.reporter.state if self._reported() else self.simulation.context.getState(
            getPositions=True, getEnergy=True)
        pos = np.asarray(s.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * NM_TO_ANGSTROM
        cell = None
        if self.periodic:
            box = s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
            cell = np.asarray(box) * NM_TO_ANGSTROM
        return Snapshot(
            pos, cell,
            s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL_TO_EV,
            s.getKineticEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL_TO_EV,
        )

    def checkpoint(self) -> Dict[str, np.ndarray]:
        data = self.simulation.context.createCheckpoint()
        return {"openmm": np.frombuffer(data, dtype=np.uint8).copy()}

    def restore(self, ckpt: Dict[str, np.ndarray], step: int) -> None:
        self.simulation.context.loadCheckpoint(ckpt["openmm"].tobytes())
        self.simulation.currentStep = int(step)


class ASEEngine:
    """ASE dynamics with :class:`~mlff.calculators.ase.MLFFCalculator`."""

    def __init__(self, cfg: MDConfig, atoms, topology, monitor: UQMonitor) -> None:
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
        from ase.md.verlet import VelocityVerlet

        from mlff.calculators.ase import MLFFCalculator

        self.cfg = cfg
        self.atoms = atoms
        self.monitor = monitor
        self.periodic = bool(np.all(atoms.pbc))
        atoms.calc = MLFFCalculator(cfg.model, device=cfg.device, dtype=cfg.dtype)
        self.num_members = int(atoms.calc.potential.num_members)
        self.masses = atoms.get_masses().astype(np.float64)
        self.rng = np.random.default_rng(cfg.seed)
        thermalize_momenta(atoms, temperature_K=cfg.temperature_K, rng=self.rng)
        Stationary(atoms)
        if not self.periodic:
            ZeroRotation(atoms)
        dt = cfg.timestep_fs * FS_ASE
        self.n_dof = 3 * len(atoms) - 3
        if cfg.ensemble != "npt":
            from ase.constraints import FixCom

            atoms.set_constraint(FixCom())  # ASE's recommended way to hold the centre of mass
        if cfg.ensemble == "nve":
            self.dyn = VelocityVerlet(atoms, dt)
        elif cfg.ensemble == "nvt":
            self.dyn = Langevin(atoms, dt, temperature_K=cfg.temperature_K,
                                friction=cfg.friction_per_ps * FS_TO_PS / FS_ASE, fixcm=False, rng=self.rng)
        else:
            from ase.md.langevinbaoab import LangevinBAOAB

            self.dyn = LangevinBAOAB(
                atoms, dt, temperature_K=cfg.temperature_K,
                # ASE stress is minus the pressure: a positive value would pull the box apart
                externalstress=-cfg.pressure_bar * BAR_TO_EV_PER_A3, hydrostatic=True,
                T_tau=FS_ASE / (cfg.friction_per_ps * FS_TO_PS),
                P_tau=BAROSTAT_TAU_STEPS * cfg.timestep_fs * FS_ASE, rng=self.rng,
            )
            self.n_dof = 3 * len(atoms)  # BAOAB does not hold the centre of mass
        self._steps = 0

    @property
    def step_count(self) -> int:
        return self._steps

    def step(self, n: int) -> None:
        self.dyn.run(n)
        self._steps += n

    def snapshot(self) -> Snapshot:
        a = self.atoms
        return Snapshot(a.positions.copy(), a.cell.array.copy() if self.periodic else None,
                        float(a.get_potential_energy()), float(a.get_kinetic_energy()))

    def uq(self) -> Optional[UQRecord]:
        if self.num_members < 2:
            return None
        a, calc = self.atoms, self.atoms.calc
        calc.get_property("forces", a)
        step = self._steps
        return self.monitor.check(step, step * self.cfg.timestep_fs * FS_TO_PS,
                                  float(calc.results["energy_std"]), np.asarray(calc.results["forces_std"]),
                                  a.positions.copy(), a.cell.array.copy() if self.periodic else None)

    def checkpoint(self) -> Dict[str, np.ndarray]:
        rng_state = json.dumps(self.rng.bit_generator.state)
        return {"positions": self.atoms.positions.copy(), "momenta": self.atoms.get_momenta(),
                "cell": self.atoms.cell.array.copy(),
                "rng": np.frombuffer(rng_state.encode(), dtype=np.uint8).copy()}

    def restore(self, ckpt: Dict[str, np.ndarray], step: int) -> None:
        self.atoms.set_cell(ckpt["cell"])
        self.atoms.positions = ckpt["positions"]
        self.atoms.set_momenta(ckpt["momenta"])
        self.rng.bit_generator.state = json.loads(ckpt["rng"].tobytes().decode())
        self._steps = int(step)
