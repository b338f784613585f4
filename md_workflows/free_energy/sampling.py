"""Independent-window alchemical sampling with OpenMM: checkpointed, resumable, parallel.

A leg is an ``openmm.System`` whose alchemical state is set through global context parameters
(``lambda_electrostatics``, ``lambda_sterics`` for openmmtools' alchemical factory, or any
parameter of a custom force), and a list of K states, each a dict of those parameters.
Window k is sampled with Langevin dynamics at state k (plus a Monte Carlo barostat when a
pressure is given); every ``sample_every_ps`` the reduced potential of the current
configuration is evaluated at all K states (for MBAR/BAR/EXP) and dU/dlambda_p by central
finite differences in each TI parameter (OpenMM only gives analytic parameter derivatives for
forces that declare them, and openmmtools' alchemical forces do not).

Layout of ``out_dir`` (written by :func:`prepare_leg`, read by every worker, so with a Dask
cluster it must be on a file system the workers share)::

    system.xml  start.npz  leg.json            inputs: serialised System (with its box), start
                                               positions, states and settings
    window_000/samples.npz                     u_kln [K, n], dudl [n, P], time_ps [n],
                                               context checkpoint -- written atomically
    window_000/progress.json                   samples done / total, for the progress bars

A killed window resumes from its last ``samples.npz``: the samples and the integrator state in
it were written together, so none is lost or duplicated, and with the same platform the
continuation is bit-identical (OpenMM context checkpoints include the random-number state).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from openmm.unit import MOLAR_GAS_CONSTANT_R, kelvin, kilojoule_per_mole

from mlff.atomic import atomic_savez, atomic_write_bytes
from mlff.units import FS_TO_PS, PS_TO_FS

try:  # progress bars are optional in worker processes
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

#: kJ/(mol K), OpenMM's value, so reduced potentials use the kT its thermostats use
MOLAR_GAS_CONSTANT_KJ: float = MOLAR_GAS_CONSTANT_R.value_in_unit(kilojoule_per_mole / kelvin)
FORMAT_VERSION = 1


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

    @property
    def lambdas(self) -> np.ndarray:
        """[K, P] values of the TI parameters per window."""
        return np.array([[s[p] for p in self.ti_parameters] for s in self.states], dtype=float)


def _check_states(states: list[dict[str, float]], ti_parameters: list[str]) -> None:
    if len(states) < 2:
        raise ValueError(f"an alchemical leg needs at least two states, got {len(states)}")
    keys = set(states[0])
    for k, s in enumerate(states):
        if set(s) != keys:
            raise ValueError(f"state {k} sets {sorted(s)} but state 0 sets {sorted(keys)}: "
                             "every state must set the same parameters")
    missing = [p for p in ti_parameters if p not in keys]
    if missing:
        raise ValueError(f"TI parameters {missing} are not set by the states ({sorted(keys)})")


def prepare_leg(out_dir: str | Path, system, positions_nm, states: list[dict[str, float]],
                settings: SamplingSettings, ti_parameters: list[str] | None = None,
                box_vectors_nm=None) -> Path:
    """Write a leg's inputs to ``out_dir`` (idempotent for identical inputs).

    Args:
        system: openmm.System with the alchemical global parameters.
        positions_nm: [N, 3] start positions (nm; plain array or OpenMM Quantity).
        states: K dicts of global parameter values, first = the physical end state.
        ti_parameters: parameters to differentiate for TI (default: all state parameters).
        box_vectors_nm: [3, 3] periodic box (nm), required for periodic systems.

    Raises if ``out_dir`` already holds a different leg, rather than mixing samples.
    """
    import openmm
    from openmm import unit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ti_parameters = list(states[0]) if ti_parameters is None else list(ti_parameters)
    _check_states(states, ti_parameters)
    names = {system.getForce(i).getGlobalParameterName(j)
             for i in range(system.getNumForces())
             if hasattr(system.getForce(i), "getNumGlobalParameters")
             for j in range(system.getForce(i).getNumGlobalParameters())}
    unknown = sorted(set(states[0]) - names)
    if unknown:
        raise ValueError(f"states set {unknown}, which no force of the system defines "
                         f"(global parameters: {sorted(names)})")
    pos = np.asarray(positions_nm.value_in_unit(unit.nanometer)
                     if hasattr(positions_nm, "value_in_unit") else positions_nm, dtype=float)
    if pos.shape != (system.getNumParticles(), 3):
        raise ValueError(f"positions have shape {pos.shape}; the system has "
                         f"{system.getNumParticles()} particles")
    if box_vectors_nm is not None and system.usesPeriodicBoundaryConditions():
        # the box travels as the system's default box (in system.xml)
        box = np.asarray(box_vectors_nm.value_in_unit(unit.nanometer)
                         if hasattr(box_vectors_nm, "value_in_unit") else box_vectors_nm, dtype=float)
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    leg = {"format": FORMAT_VERSION, "states": [dict(s) for s in states],
           "ti_parameters": ti_parameters, "settings": asdict(settings)}
    system_xml = openmm.XmlSerializer.serialize(system)
    previous = out / "leg.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        def key(d):  # threads change speed, not samples: a resume may use other threads;
            # a longer production extends every window from its checkpoint (checked below)
            return {**d, "settings": {**d["settings"], "threads": None, "production_ps": None}}

        same = (key(old) == key(json.loads(json.dumps(leg)))
                and (out / "system.xml").read_text() == system_xml)
        has_samples = any(out.glob("window_*/samples.npz"))
        if not same and has_samples:
            raise ValueError(f"{out} already holds samples of a different leg (other system, "
                             "states or settings): use a new output directory or delete it")
        if has_samples and settings.production_ps < old["settings"]["production_ps"]:
            raise ValueError(f"{out} was sampled for {old['settings']['production_ps']} ps per "
                             f"window; production_ps={settings.production_ps} would drop samples: "
                             "keep it or make it longer (windows are extended from their checkpoints)")
    atomic_write_bytes(out / "system.xml", system_xml.encode())
    atomic_savez(out / "start.npz", positions_nm=pos)  # velocities are drawn per window (seeded)
    atomic_write_bytes(out / "leg.json", json.dumps(leg, indent=1).encode())
    return out


def _platform(settings: SamplingSettings):
    import openmm

    platform = openmm.Platform.getPlatformByName(settings.platform)
    props = {}
    if settings.platform == "CPU":
        props["Threads"] = str(settings.threads)
    if settings.platform in ("CUDA", "OpenCL"):
        props["Precision"] = "mixed"
    return platform, props


def _reduced_energies(context, states, kT, current: dict[str, float],
                      ti_parameters: list[str], fd_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Reduced potential at every state [K] and finite-difference dU/dlambda / kT [P]."""
    import openmm

    def energy(params: dict[str, float]) -> float:
        for name, value in params.items():
            context.setParameter(name, value)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            openmm.unit.kilojoule_per_mole)

    u = np.array([energy(s) for s in states]) / kT
    dudl = np.zeros(len(ti_parameters))
    for j, p in enumerate(ti_parameters):
        lo = max(0.0, current[p] - fd_step)
        hi = min(1.0, current[p] + fd_step)
        e_hi = energy({**current, p: hi})
        e_lo = energy({**current, p: lo})
        dudl[j] = (e_hi - e_lo) / (hi - lo) / kT
    for name, value in current.items():  # back to the sampled state
        context.setParameter(name, value)
    return u, dudl


def run_window(out_dir: str | Path, k: int, progress: bool = False) -> Path:
    """Sample window ``k`` of the leg in ``out_dir`` to completion (resuming if possible).

    Returns the path of the window's samples.npz.
    """
    import openmm
    from openmm import unit

    out = Path(out_dir)
    leg = json.loads((out / "leg.json").read_text())
    settings = SamplingSettings(**leg["settings"])
    states = leg["states"]
    ti_parameters = leg["ti_parameters"]
    kdir = out / f"window_{k:03d}"
    kdir.mkdir(exist_ok=True)
    samples_path = kdir / "samples.npz"
    n_total = settings.n_samples
    kT = settings.kT_kj_mol

    system = openmm.XmlSerializer.deserialize((out / "system.xml").read_text())
    if settings.pressure_bar is not None and system.usesPeriodicBoundaryConditions():
        system.addForce(openmm.MonteCarloBarostat(settings.pressure_bar * unit.bar,
                                                  settings.temperature_K * unit.kelvin,
                                                  settings.barostat_every_steps))
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_K * unit.kelvin,
                                                 settings.friction_per_ps / unit.picosecond,
                                                 settings.timestep_fs * unit.femtosecond)
    seed = (settings.seed * 1000003 + 7919 * (k + 1)) % 2_000_000_000 + 1
    integrator.setRandomNumberSeed(seed)
    platform, props = _platform(settings)
    context = openmm.Context(system, integrator, platform, props)
    current = {name: float(v) for name, v in states[k].items()}
    for name, value in current.items():
        context.setParameter(name, value)

    u_rows, d_rows, t_rows = [], [], []
    resumed = False
    if samples_path.exists():
        data = np.load(samples_path)
        if int(data["done_samples"]) >= n_total:
            return samples_path
        try:
            context.loadCheckpoint(data["checkpoint"].tobytes())
            resumed = True
        except Exception:  # another platform or OpenMM build: fall back to the saved state
            context.setState(openmm.XmlSerializer.deserialize(str(data["state_xml"])))
            resumed = True
        n_done = int(data["done_samples"])
        u_rows = list(data["u_kln"].T[:n_done])
        d_rows = list(data["dudl"][:n_done])
        t_rows = list(data["time_ps"][:n_done])
    if not resumed:
        context.setPositions(np.load(out / "start.npz")["positions_nm"])  # box: the system's default
        if settings.minimize:
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
        context.setVelocitiesToTemperature(settings.temperature_K * unit.kelvin, seed)
        if settings.equilibration_steps:
            integrator.step(settings.equilibration_steps)

    def save(n_done: int) -> None:
        state_xml = openmm.XmlSerializer.serialize(
            context.getState(getPositions=True, getVelocities=True, getParameters=True))
        atomic_savez(
            samples_path,
            u_kln=np.array(u_rows, dtype=float).reshape(n_done, len(states)).T,
            dudl=np.array(d_rows, dtype=float).reshape(n_done, len(ti_parameters)),
            time_ps=np.array(t_rows, dtype=float),
            done_samples=np.int64(n_done), total_samples=np.int64(n_total),
            checkpoint=np.frombuffer(context.createCheckpoint(), dtype=np.uint8),
            state_xml=np.array(state_xml))

    def report(n_done: int) -> None:
        atomic_write_bytes(kdir / "progress.json",
                            json.dumps({"done": n_done, "total": n_total}).encode())

    bar = (tqdm(total=n_total, initial=len(u_rows), desc=f"window {k}", leave=False)
           if progress and tqdm is not None else None)
    if not resumed:
        save(0)
    n_done = len(u_rows)
    report(n_done)
    while n_done < n_total:
        integrator.step(settings.steps_per_sample)
        u, d = _reduced_energies(context, states, kT, current, ti_parameters, settings.fd_step)
        u_rows.append(u)
        d_rows.append(d)
        t_rows.append((n_done + 1) * settings.steps_per_sample * settings.timestep_fs * FS_TO_PS)
        n_done += 1
        if n_done % settings.checkpoint_every_samples == 0 or n_done == n_total:
            save(n_done)
            report(n_done)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return samples_path


def _window_done(out: Path, k: int, n_total: int) -> bool:
    p = out / f"window_{k:03d}" / "progress.json"
    try:
        return json.loads(p.read_text())["done"] >= n_total and (p.parent / "samples.npz").exists()
    except (OSError, ValueError, KeyError):
        return False


def _watch(out: Path, futures: dict, n_total: int, label: str, progress: bool) -> None:
    """Per-window progress bars in this process, fed by the workers' progress files."""
    bars = {}
    if progress and tqdm is not None:
        bars = {k: tqdm(total=n_total, desc=f"{label} window {k:2d}", position=i, leave=True)
                for i, k in enumerate(sorted(futures))}
    pending = dict(futures)
    while pending:
        for k, fut in list(pending.items()):
            if k in bars:
                try:
                    done = json.loads((out / f"window_{k:03d}" / "progress.json").read_text())["done"]
                    bars[k].n = done
                    bars[k].refresh()
                except (OSError, ValueError, KeyError):
                    pass
            if fut.done():
                fut.result()  # re-raise a worker's error here
                if k in bars:
                    bars[k].n = n_total
                    bars[k].refresh()
                del pending[k]
        if pending:
            time.sleep(1.0)
    for b in bars.values():
        b.close()


def run_leg(out_dir: str | Path, workers: int = 1, scheduler: str | None = None,
            progress: bool = True, label: str = "") -> LegSamples:
    """Sample every unfinished window of a prepared leg and load the samples.

    Args:
        workers: windows sampled at once in separate processes on this machine (1: in this
            process, one after another). Each worker uses ``settings.threads`` threads.
        scheduler: address of a dask.distributed scheduler (``tcp://host:8786``); the windows
            then run as tasks on that cluster (``out_dir`` must be on a shared file system).
    """
    out = Path(out_dir)
    leg = json.loads((out / "leg.json").read_text())
    k_states = len(leg["states"])
    n_total = SamplingSettings(**leg["settings"]).n_samples
    todo = [k for k in range(k_states) if not _window_done(out, k, n_total)]
    if todo:
        if scheduler is not None:
            try:
                from distributed import Client
            except ImportError as exc:  # pragma: no cover
                raise ImportError("--scheduler needs dask.distributed: pip install distributed") from exc
            with Client(scheduler) as client:
                futures = {k: client.submit(run_window, str(out), k, pure=False) for k in todo}
                _watch(out, futures, n_total, label, progress)
        elif workers <= 1:
            for k in (tqdm(todo, desc=f"{label} windows", disable=not progress)
                      if tqdm is not None else todo):
                run_window(out, k, progress=progress)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {k: pool.submit(run_window, str(out), k) for k in todo}
                _watch(out, futures, n_total, label, progress)
    return load_leg(out)


def load_leg(out_dir: str | Path) -> LegSamples:
    """Read a finished leg's samples (raises naming the windows that are not finished)."""
    out = Path(out_dir)
    leg = json.loads((out / "leg.json").read_text())
    settings = SamplingSettings(**leg["settings"])
    u, d, t, missing = [], [], [], []
    for k in range(len(leg["states"])):
        p = out / f"window_{k:03d}" / "samples.npz"
        if not p.exists():
            missing.append(k)
            continue
        data = np.load(p)
        n = int(data["done_samples"])
        if n < settings.n_samples:
            missing.append(k)
            continue
        u.append(data["u_kln"][:, :n])
        d.append(data["dudl"][:n])
        t.append(data["time_ps"][:n])
    if missing:
        raise RuntimeError(f"windows {missing} of {out} are not finished: run the leg again "
                           "(it resumes where each window stopped)")
    return LegSamples(leg["states"], leg["ti_parameters"], u, d, t, settings.temperature_K)
