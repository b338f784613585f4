"""Molecular dynamics with an mlff model: ``mlff md`` and :func:`run_md`.

Engines
    ``openmm``: the model as an ``openmmtorch.TorchForce`` (TorchScript); NVE with
    ``VerletIntegrator``, NVT with ``LangevinMiddleIntegrator``, NPT adds a
    ``MonteCarloBarostat``; optional hydrogen mass repartitioning (HMR) for 2 fs steps.
    ``ase``: :class:`calculators.ase.MLFFCalculator`; NVE ``VelocityVerlet``, NVT ``Langevin``,
    NPT ``LangevinBAOAB`` driven by the model's stress (hydrostatic).

Output folder (``out``)
    ``topology.pdb``      topology + first frame (mdtraj reads it with the trajectory)
    ``trajectory.dcd``    every report step, through mdtraj (written at the end or a stop)
    ``frames.bin``        the same frames as raw float32 [n_frames, N, 3] A, appended as the
                          run goes (the source of ``trajectory.dcd``; survives a kill)
    ``cells.bin``         periodic runs: float64 [n_frames, 3, 3] A
    ``log.csv``           step, time, energies, temperature, volume, density, ensemble spread
    ``traces.png``, ``uncertainty.png``   the log as plots
    ``final.pdb``, ``final.extxyz``       the last structure
    ``checkpoint.npz``    written atomically at every report step; ``resume=True`` continues
                          from it, truncating anything written after it, so no frame is lost or
                          duplicated (OpenMM: the Context checkpoint, RNG included; ASE:
                          positions, momenta, cell and the Langevin RNG state)
    ``uncertain_frames.extxyz``  frames above ``uq_warn`` (for ``mlff label``)

Units: input/output in K, bar, fs, eV, A; OpenMM units only at the OpenMM boundary.
Temperature is ``2 KE / ((3N - 3) kB)``: both engines remove the centre-of-mass motion.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch  # before openmm (openmm-torch plugins)

from calculators import openmm as _omm  # noqa: F401 - reloads openmm-torch plugins first
from mlff.atomic import atomic_savez, atomic_write_text
from md_workflows.uq import UncertaintyStop, UQMonitor, UQRecord, UQReporter
from mlff.units import (
    ANGSTROM_TO_NM, BAR_TO_EV_PER_A3, FS_ASE, FS_TO_PS, KB_EV_PER_K, KJ_PER_MOL_TO_EV,
    NM_TO_ANGSTROM,
)

log = logging.getLogger(__name__)

ENGINES = ("openmm", "ase")
ENSEMBLES = ("nve", "nvt", "npt")
#: amu / A^3 -> g / cm^3 (from ase.units' amu in kg: 1 kg = 1e3 g, 1 A^3 = 1e-24 cm^3)
AMU_PER_A3_TO_G_PER_CM3 = float(__import__("ase.units").units._amu) * 1e3 / 1e-24
LOG_COLUMNS = ("step", "time_ps", "potential_eV", "kinetic_eV", "total_eV", "temperature_K",
               "volume_A3", "density_g_cm3", "energy_std_eV", "max_force_std_eV_A",
               "max_force_std_atom")


@dataclass(frozen=True)
class MDConfig:
    """A molecular-dynamics run (validated on creation).

    Attributes:
        structure: input file: pdb (topology kept) or anything ase.io reads (xyz, extxyz, ...).
        model: model file, or ``"default"`` for the shipped default ensemble.
        engine: ``openmm`` or ``ase``. ensemble: ``nve``, ``nvt`` or ``npt`` (periodic only).
        temperature: K (thermostat target and initial velocities). pressure: bar (NPT).
        timestep: fs. steps: MD steps in total (a resumed run continues up to it).
        report_every: steps between frames, log rows, UQ checks and checkpoints.
        friction: Langevin friction (1/ps). seed: velocities and thermostat noise.
        hmr: hydrogen mass repartitioning (OpenMM engine): hydrogens get ``hydrogen_mass`` amu,
            taken from the bonded heavy atom.
        dtype: ``None`` keeps the model's dtype. device: ``cpu`` or ``cuda``.
        threads: torch (and OpenMM CPU platform) threads; None leaves torch's setting.
        uq_warn / uq_stop: force-std levels in eV/A (ensembles only), see :mod:`md_workflows.uq`.
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
    temperature: float = 300.0
    pressure: float = 1.0
    timestep: float = 0.5
    steps: int = 1000
    report_every: int = 50
    friction: float = 1.0
    seed: int = 0
    hmr: bool = False
    hydrogen_mass: float = 3.0
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
        for name in ("timestep", "temperature", "friction", "hydrogen_mass"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("steps", "report_every", "barostat_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.hmr and self.engine != "openmm":
            raise ValueError("hmr is implemented for the openmm engine; use --engine openmm or "
                             "drop --hmr (and use a 0.5 fs time step)")
        if self.timestep > 1.0 and not self.hmr:
            log.warning("time step %.2f fs without hydrogen mass repartitioning: X-H "
                        "vibrations may be unstable; use --hmr or 0.5 fs", self.timestep)

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
    """What :func:`run_md` did. ``stopped``: the UQ stop message, else None."""

    out: Path
    steps_done: int
    n_frames: int
    wall_s: float
    ns_per_day: float
    stopped: Optional[str]
    files: Dict[str, Path]


# --------------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------------


def load_structure(path: str):
    """``(ase.Atoms, openmm.app.Topology)`` of a structure file.

    A pdb keeps its residues and bonds (OpenMM's PDBFile); other formats (ase.io) get one
    residue ``MOL`` and no bonds. The Atoms is periodic when the file has a cell (CRYST1, extxyz
    Lattice) and non-periodic otherwise.
    """
    import ase.io
    import openmm.app as app

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"structure file {path} does not exist")
    if p.suffix.lower() == ".pdb":
        pdb = app.PDBFile(str(p))
        atoms = ase.io.read(str(p), format="proteindatabank")
        topology = pdb.topology
    else:
        atoms = ase.io.read(str(p))
        topology = app.Topology()
        chain = topology.addChain()
        res = topology.addResidue("MOL", chain)
        for k, z in enumerate(atoms.numbers):
            el = app.Element.getByAtomicNumber(int(z))
            topology.addAtom(f"{el.symbol}{k + 1}", el, res)
    periodic = bool(np.all(atoms.pbc)) and atoms.cell.volume > 1e-6
    if not periodic:
        atoms.pbc = False
        atoms.cell = None
    return atoms, topology


def repartitioned_masses(atoms, hydrogen_mass: float) -> np.ndarray:
    """Masses (amu, ``[N]``) with each hydrogen raised to ``hydrogen_mass`` and the difference
    taken from the heavy atom it is bonded to (bonds from ASE's covalent-radius cutoffs). The
    total mass is unchanged.

    Raises:
        ValueError: a hydrogen bonded to no heavy atom, or a heavy atom left too light.
    """
    from ase.neighborlist import natural_cutoffs, neighbor_list

    masses = atoms.get_masses().astype(np.float64).copy()
    i, j, d = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=1.2))
    for h in np.flatnonzero(atoms.numbers == 1):
        partners = [(dd, jj) for ii, jj, dd in zip(i, j, d) if ii == h and atoms.numbers[jj] != 1]
        if not partners:
            raise ValueError(f"hydrogen {h} is bonded to no heavy atom; hmr needs bonded hydrogens "
                             "(drop --hmr and use a 0.5 fs time step)")
        heavy = min(partners)[1]
        delta = hydrogen_mass - masses[h]
        masses[h] += delta
        masses[heavy] -= delta
    light = np.flatnonzero((atoms.numbers != 1) & (masses < 1.0))
    if len(light):
        raise ValueError(f"hmr leaves heavy atom(s) {light.tolist()} lighter than 1 amu; lower "
                         "hydrogen_mass")
    return masses


# --------------------------------------------------------------------------------------------
# engines: a common interface in eV, A, amu
# --------------------------------------------------------------------------------------------


class _Engine:
    """step(n); snapshot() -> dict (positions [N,3] A, cell [3,3] A or None, potential eV,
    kinetic eV); uq() -> (energy_std eV, forces_std [N,3] eV/A) or None; checkpoint bytes."""

    step_count: int = 0
    masses: np.ndarray


class _OpenMMEngine(_Engine):
    def __init__(self, cfg: MDConfig, atoms, topology, potential) -> None:
        import openmm
        import openmm.app as app
        import openmm.unit as u
        import openmmtorch

        from calculators.openmm import make_torch_module

        self.cfg = cfg
        self.periodic = bool(np.all(atoms.pbc))
        if cfg.ensemble == "npt" and not self.periodic:
            raise ValueError("npt needs a periodic structure (a cell); use nvt for molecules")
        self.masses = (repartitioned_masses(atoms, cfg.hydrogen_mass) if cfg.hmr
                       else atoms.get_masses().astype(np.float64))
        system = openmm.System()
        for m in self.masses:
            system.addParticle(float(m))
        if self.periodic:
            box = atoms.cell.array * ANGSTROM_TO_NM
            system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
        # the reporter below calls this same module: one model in memory for forces and spread
        self.module = make_torch_module(potential, [int(z) for z in atoms.numbers],
                                        periodic=self.periodic, device=cfg.device)
        force = openmmtorch.TorchForce(self.module)
        force.setOutputsForces(True)
        force.setUsesPeriodicBoundaryConditions(self.periodic)
        system.addForce(force)
        system.addForce(openmm.CMMotionRemover())
        dt = cfg.timestep * FS_TO_PS
        if cfg.ensemble == "nve":
            integrator = openmm.VerletIntegrator(dt)
        else:
            integrator = openmm.LangevinMiddleIntegrator(cfg.temperature, cfg.friction, dt)
            integrator.setRandomNumberSeed(cfg.seed + 1)
        if cfg.ensemble == "npt":
            baro = openmm.MonteCarloBarostat(cfg.pressure, cfg.temperature, cfg.barostat_every)
            baro.setRandomNumberSeed(cfg.seed + 2)
            system.addForce(baro)
        name = cfg.platform or ("CUDA" if cfg.device.startswith("cuda") else "CPU")
        platform = openmm.Platform.getPlatformByName(name)
        props = {"Threads": str(cfg.threads or torch.get_num_threads())} if name == "CPU" else {}
        self.simulation = app.Simulation(topology, system, integrator, platform, props)
        ctx = self.simulation.context
        ctx.setPositions(atoms.positions * ANGSTROM_TO_NM)
        ctx.setVelocitiesToTemperature(cfg.temperature * u.kelvin, cfg.seed + 3)
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

    def state(self):
        return self.simulation.context.getState(getPositions=True, getEnergy=True)

    def snapshot(self, state=None) -> Dict[str, object]:
        u = self._u
        s = state if state is not None else self.state()
        pos = np.asarray(s.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * NM_TO_ANGSTROM
        cell = None
        if self.periodic:
            cell = np.asarray(s.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)) * NM_TO_ANGSTROM
        return {
            "positions": pos, "cell": cell,
            "potential": s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL_TO_EV,
            "kinetic": s.getKineticEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL_TO_EV,
        }

    def checkpoint(self) -> Dict[str, np.ndarray]:
        data = self.simulation.context.createCheckpoint()
        return {"openmm": np.frombuffer(data, dtype=np.uint8).copy()}

    def restore(self, ckpt: Dict[str, np.ndarray], step: int) -> None:
        self.simulation.context.loadCheckpoint(ckpt["openmm"].tobytes())
        self.simulation.currentStep = int(step)


class _ASEEngine(_Engine):
    def __init__(self, cfg: MDConfig, atoms, topology, potential) -> None:
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
        from ase.md.verlet import VelocityVerlet

        from calculators.ase import MLFFCalculator

        self.cfg = cfg
        self.atoms = atoms
        self.periodic = bool(np.all(atoms.pbc))
        if cfg.ensemble == "npt" and not self.periodic:
            raise ValueError("npt needs a periodic structure (a cell); use nvt for molecules")
        atoms.calc = MLFFCalculator(potential, device=cfg.device, dtype=cfg.dtype)
        self.masses = atoms.get_masses().astype(np.float64)
        self.rng = np.random.default_rng(cfg.seed)
        thermalize_momenta(atoms, temperature_K=cfg.temperature, rng=self.rng)
        Stationary(atoms)
        if not self.periodic:
            ZeroRotation(atoms)
        dt = cfg.timestep * FS_ASE
        self.n_dof = 3 * len(atoms) - 3
        if cfg.ensemble != "npt":
            from ase.constraints import FixCom

            atoms.set_constraint(FixCom())  # ASE's recommended way to hold the centre of mass
        if cfg.ensemble == "nve":
            self.dyn = VelocityVerlet(atoms, dt)
        elif cfg.ensemble == "nvt":
            self.dyn = Langevin(atoms, dt, temperature_K=cfg.temperature,
                                friction=cfg.friction * FS_TO_PS / FS_ASE, fixcm=False, rng=self.rng)
        else:
            from ase.md.langevinbaoab import LangevinBAOAB

            self.dyn = LangevinBAOAB(
                atoms, dt, temperature_K=cfg.temperature,
                # ASE stress is minus the pressure: a positive value would pull the box apart
                externalstress=-cfg.pressure * BAR_TO_EV_PER_A3, hydrostatic=True,
                T_tau=FS_ASE / (cfg.friction * FS_TO_PS), P_tau=100 * cfg.timestep * FS_ASE,
                rng=self.rng,
            )
            self.n_dof = 3 * len(atoms)  # BAOAB does not hold the centre of mass
        self._steps = 0

    @property
    def step_count(self) -> int:
        return self._steps

    def step(self, n: int) -> None:
        self.dyn.run(n)
        self._steps += n

    def snapshot(self, state=None) -> Dict[str, object]:
        a = self.atoms
        return {"positions": a.positions.copy(), "cell": a.cell.array.copy() if self.periodic else None,
                "potential": float(a.get_potential_energy()), "kinetic": float(a.get_kinetic_energy())}

    def uq(self) -> Optional[Tuple[float, np.ndarray]]:
        calc = self.atoms.calc
        calc.get_property("forces", self.atoms)
        if "forces_std" not in calc.results:
            return None
        return float(calc.results["energy_std"]), np.asarray(calc.results["forces_std"])

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


# --------------------------------------------------------------------------------------------
# output folder
# --------------------------------------------------------------------------------------------


def _truncate(path: Path, n_bytes: int) -> None:
    if path.exists() and path.stat().st_size > n_bytes:
        with open(path, "r+b") as f:
            f.truncate(n_bytes)


def _read_log(path: Path) -> List[Dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_frames(out: Path, n_atoms: int) -> np.ndarray:
    """Frames of a run folder, ``[n_frames, N, 3]`` float32 A (from ``frames.bin``)."""
    raw = np.fromfile(Path(out) / "frames.bin", dtype=np.float32)
    return raw.reshape(-1, n_atoms, 3)


def write_trajectory(out: Path, md_topology, n_atoms: int, periodic: bool) -> Path:
    """``trajectory.dcd`` from ``frames.bin`` (and ``cells.bin``), written atomically."""
    import mdtraj

    xyz = read_frames(out, n_atoms) * ANGSTROM_TO_NM
    traj = mdtraj.Trajectory(xyz, md_topology)
    if periodic:
        cells = np.fromfile(out / "cells.bin", dtype=np.float64).reshape(-1, 3, 3)[: len(xyz)]
        traj.unitcell_vectors = cells * ANGSTROM_TO_NM
    path = out / "trajectory.dcd"
    tmp = out / f".trajectory.tmp.{os.getpid()}.dcd"
    traj.save_dcd(str(tmp))
    os.replace(tmp, path)
    return path


def plot_log(log_path: Path, out: Path) -> List[Path]:
    """``traces.png`` (energies, temperature, volume/density) and ``uncertainty.png`` from a
    ``log.csv``. Returns the written files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_log(log_path)
    if not rows:
        return []
    col = {k: np.array([float(r[k]) if r[k] not in ("", "nan") else np.nan for r in rows])
           for k in LOG_COLUMNS}
    t = col["time_ps"]
    periodic = not np.all(np.isnan(col["volume_A3"]))
    n = 3 + periodic
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.2 * n), sharex=True)
    axes[0].plot(t, col["potential_eV"], label="potential")
    axes[0].set_ylabel("E_pot (eV)")
    axes[1].plot(t, col["total_eV"], color="k")
    axes[1].set_ylabel("E_total (eV)")
    axes[2].plot(t, col["temperature_K"], color="tab:red")
    axes[2].set_ylabel("T (K)")
    if periodic:
        axes[3].plot(t, col["density_g_cm3"], color="tab:green")
        axes[3].set_ylabel("density (g/cm3)")
    axes[-1].set_xlabel("time (ps)")
    fig.tight_layout()
    files = [out / "traces.png"]
    fig.savefig(files[0], dpi=110)
    plt.close(fig)
    if not np.all(np.isnan(col["max_force_std_eV_A"])):
        fig, axes = plt.subplots(2, 1, figsize=(7, 4.4), sharex=True)
        axes[0].plot(t, col["max_force_std_eV_A"], color="tab:purple")
        axes[0].set_ylabel("max force std (eV/A)")
        axes[1].plot(t, col["energy_std_eV"], color="tab:orange")
        axes[1].set_ylabel("energy std (eV)")
        axes[1].set_xlabel("time (ps)")
        fig.tight_layout()
        files.append(out / "uncertainty.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def run_md(cfg: MDConfig, resume: bool = False) -> MDResult:
    """Run (or resume) the MD described by ``cfg``; see the module docstring for the output.

    Raises:
        FileExistsError: ``cfg.out`` already holds a run and ``resume`` is False.
        FileNotFoundError: ``resume`` without a checkpoint in ``cfg.out``.
        ValueError: bad options (UQ levels with a single model, npt without a cell, ...).
    """
    import mdtraj
    from ase import Atoms
    from tqdm.auto import tqdm

    from calculators._common import resolve_model

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.npz"
    log_path = out / "log.csv"
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint {ckpt_path}; run without --resume first")
    if not resume and (ckpt_path.exists() or log_path.exists()):
        raise FileExistsError(f"{out} already holds a run; continue it with --resume or choose "
                              "another --out")
    out.mkdir(parents=True, exist_ok=True)

    potential = resolve_model(cfg.model, cfg.device, cfg.dtype)
    ensemble = int(potential.num_members) > 1
    if (cfg.uq_warn is not None or cfg.uq_stop is not None) and not ensemble:
        raise ValueError("uq_warn/uq_stop need an ensemble model (this model has one member); "
                         "train one with model.ensemble_size > 1 or drop the UQ options")
    atoms, topology = load_structure(cfg.structure)
    n_atoms = len(atoms)
    periodic = bool(np.all(atoms.pbc))
    engine = (_OpenMMEngine if cfg.engine == "openmm" else _ASEEngine)(cfg, atoms, topology, potential)
    monitor = UQMonitor(cfg.uq_warn, cfg.uq_stop, out / "uncertain_frames.extxyz", atoms.numbers)
    reporter = None
    if cfg.engine == "openmm" and ensemble:
        reporter = UQReporter(engine.module, monitor, cfg.report_every, cfg.timestep * FS_TO_PS,
                              periodic)
    md_top = mdtraj.Topology.from_openmm(topology)
    total_mass = float(engine.masses.sum())

    frames_path, cells_path = out / "frames.bin", out / "cells.bin"
    n_frames = 0
    if resume:
        with np.load(ckpt_path) as z:
            ckpt = {k: z[k] for k in z.files}
        meta = json.loads(ckpt.pop("meta").tobytes().decode())
        if meta["n_atoms"] != n_atoms or meta["engine"] != cfg.engine:
            raise ValueError(f"checkpoint in {out} is for {meta['n_atoms']} atoms with engine "
                             f"{meta['engine']}; resume with the same structure and engine")
        engine.restore(ckpt, meta["step"])
        n_frames = int(meta["n_frames"])
        # drop whatever was written after the checkpoint: no duplicated frames
        _truncate(frames_path, n_frames * n_atoms * 3 * 4)
        _truncate(cells_path, n_frames * 9 * 8)
        rows = _read_log(log_path)
        rows = [r for r in rows if int(r["step"]) <= meta["step"]]
        _write_log(log_path, rows)
        monitor.truncate_after(meta["step"])
        if cfg.write_extxyz:
            _truncate_extxyz(out / "trajectory.extxyz", n_frames)
    else:
        for p in (frames_path, cells_path, monitor.frames_path, out / "trajectory.extxyz"):
            if p.exists():
                p.unlink()
        _write_log(log_path, [])

    def record(state=None) -> Optional[UQRecord]:
        """Frame + log row + UQ check + checkpoint at the current step."""
        nonlocal n_frames
        step = engine.step_count
        snap = engine.snapshot(state)
        uq_rec, stop = None, None
        if ensemble:
            if reporter is not None:
                s = state if state is not None else engine.state()
                try:
                    reporter.report(engine.simulation, s)
                except UncertaintyStop as exc:
                    stop = exc
                uq_rec = reporter.last
            else:
                e_std, f_std = engine.uq()
                try:
                    uq_rec = monitor.check(step, step * cfg.timestep * FS_TO_PS, e_std, f_std,
                                           snap["positions"], snap["cell"])
                except UncertaintyStop as exc:
                    stop, uq_rec = exc, exc.record
        with open(frames_path, "ab") as f:
            f.write(np.ascontiguousarray(snap["positions"], dtype=np.float32).tobytes())
        if periodic:
            with open(cells_path, "ab") as f:
                f.write(np.ascontiguousarray(snap["cell"], dtype=np.float64).tobytes())
        if cfg.write_extxyz:
            import ase.io

            frame = Atoms(numbers=atoms.numbers, positions=snap["positions"], cell=snap["cell"],
                          pbc=periodic)
            frame.info.update(step=step, energy=snap["potential"])
            with open(out / "trajectory.extxyz", "a") as f:
                ase.io.write(f, frame, format="extxyz")
        n_frames += 1
        volume = abs(float(np.linalg.det(snap["cell"]))) if periodic else float("nan")
        row = {
            "step": step, "time_ps": step * cfg.timestep * FS_TO_PS,
            "potential_eV": snap["potential"], "kinetic_eV": snap["kinetic"],
            "total_eV": snap["potential"] + snap["kinetic"],
            "temperature_K": 2.0 * snap["kinetic"] / (engine.n_dof * KB_EV_PER_K),
            "volume_A3": volume,
            "density_g_cm3": total_mass / volume * AMU_PER_A3_TO_G_PER_CM3 if periodic else float("nan"),
            "energy_std_eV": uq_rec.energy_std if uq_rec else float("nan"),
            "max_force_std_eV_A": uq_rec.max_force_std if uq_rec else float("nan"),
            "max_force_std_atom": uq_rec.max_atom if uq_rec else "",
        }
        with open(log_path, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS).writerow(row)
            f.flush()
            os.fsync(f.fileno())
        meta = {"step": step, "n_frames": n_frames, "n_atoms": n_atoms, "engine": cfg.engine,
                "config": asdict(cfg)}
        arrays = engine.checkpoint()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8).copy()
        atomic_savez(ckpt_path, **arrays)
        if stop is not None:
            raise stop
        return uq_rec

    stopped: Optional[str] = None
    t0 = time.time()
    start_step = engine.step_count
    bar = tqdm(total=cfg.steps, initial=start_step, unit="step", disable=not cfg.progress,
               desc=f"md {cfg.engine} {cfg.ensemble}")
    try:
        if not resume:
            record()
        while engine.step_count < cfg.steps:
            n = min(cfg.report_every - engine.step_count % cfg.report_every,
                    cfg.steps - engine.step_count)
            engine.step(n)
            record()
            bar.update(n)
            done = engine.step_count - start_step
            elapsed = max(time.time() - t0, 1e-9)
            bar.set_postfix(ns_day=f"{done * cfg.timestep * 1e-6 / elapsed * 86400:.3f}")
    except UncertaintyStop as exc:
        stopped = str(exc)
        log.warning(stopped)
    finally:
        bar.close()
    wall = time.time() - t0
    done = engine.step_count - start_step
    ns_day = done * cfg.timestep * 1e-6 / max(wall, 1e-9) * 86400  # fs -> ns: 1e-6

    files = _finish(out, atoms, engine, md_top, n_atoms, periodic)
    if monitor.frames_path.exists():
        files["uncertain_frames"] = monitor.frames_path
    return MDResult(out, engine.step_count, n_frames, wall, ns_day, stopped, files)


def _write_log(path: Path, rows: List[Dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def _truncate_extxyz(path: Path, n: int) -> None:
    import ase.io

    from mlff.data.label import atomic_write_extxyz

    if path.exists():
        frames = ase.io.read(path, ":", format="extxyz")
        if len(frames) > n:
            atomic_write_extxyz(path, frames[:n])


def _finish(out: Path, atoms, engine: _Engine, md_top, n_atoms: int, periodic: bool) -> Dict[str, Path]:
    """Trajectory, topology, final structure and plots."""
    import mdtraj

    from mlff.data.label import atomic_write_extxyz

    files: Dict[str, Path] = {}
    frames = read_frames(out, n_atoms)
    first = mdtraj.Trajectory(frames[:1] * ANGSTROM_TO_NM, md_top)
    last = mdtraj.Trajectory(frames[-1:] * ANGSTROM_TO_NM, md_top)
    if periodic:
        snap = engine.snapshot()
        for t in (first, last):
            t.unitcell_vectors = snap["cell"][None] * ANGSTROM_TO_NM
    for name, t in (("topology.pdb", first), ("final.pdb", last)):
        tmp = out / f".{name}.tmp.{os.getpid()}.pdb"
        t.save_pdb(str(tmp))
        os.replace(tmp, out / name)
        files[name.split(".")[0]] = out / name
    files["trajectory"] = write_trajectory(out, md_top, n_atoms, periodic)
    final = atoms.copy()
    final.calc = None
    final.set_constraint()
    snap = engine.snapshot()
    final.positions = snap["positions"]
    if periodic:
        final.cell = snap["cell"]
    atomic_write_extxyz(out / "final.extxyz", [final])
    files["final_extxyz"] = out / "final.extxyz"
    files["log"] = out / "log.csv"
    for p in plot_log(out / "log.csv", out):
        files[p.stem] = p
    files["checkpoint"] = out / "checkpoint.npz"
    return files
