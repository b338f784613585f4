"""Independent-window alchemical sampling with OpenMM: checkpointed, resumable, parallel.

A leg is an ``openmm.System`` whose alchemical state is set through global context parameters
(``lambda_electrostatics``, ``lambda_sterics`` for openmmtools' alchemical factory, or any
parameter of a custom force), and a list of K states, each a dict of those parameters.
Window k is sampled with Langevin dynamics at state k (plus a Monte Carlo barostat when a
pressure is given); every ``sample_every_ps`` the reduced potential of the current
configuration is evaluated at all K states (for MBAR/BAR/EXP; :mod:`.window_energies`) and dU/dlambda_p: analytic
(``State.getEnergyParameterDerivatives``) for a leg prepared with ``analytic_derivatives``, whose
forces declare them (the ML/MM correction), else by central finite differences in each TI
parameter (openmmtools' alchemical forces declare none). An alchemical-transfer leg (``atm``,
:mod:`.rbfe`) evaluates its ATMForce once per sample and gets every state from that.

An ML/MM leg stores the plain MM System and the recipe of its ML part (``ml``, see
:mod:`.ml_interpolation`); each window applies it after reading the System, because a System
holding a TorchForce cannot be read back from XML. ``save_atoms`` keeps those atoms' positions
(and the box) of every sample, for reweighting to other models (ensemble members) later.

Layout of ``out_dir`` (written by :func:`prepare_leg`, read by every worker, so with a Dask
cluster it must be on a file system the workers share)::

    system.xml  start.npz  leg.json            inputs: serialised System (with its box), start
                                               positions, states and settings
    window_000/samples.npz                     u_kln [K, n], dudl [n, P], time_ps [n],
                                               positions_nm [n, A, 3] and box_nm [n, 3, 3]
                                               with save_atoms, context checkpoint --
                                               written atomically
    window_000/progress.json                   samples done / total, for the progress bars

A killed window resumes from its last ``samples.npz``: the samples and the integrator state in
it were written together, so none is lost or duplicated, and with the same platform the
continuation is bit-identical (OpenMM context checkpoints include the random-number state).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mlff.atomic import atomic_savez, atomic_write_bytes
from mlff.errors import MLFFError
from mlff.units import FS_TO_PS

from .sampling_settings import MOLAR_GAS_CONSTANT_KJ, LegSamples, SamplingSettings  # noqa: F401 (re-exported)
from .window_energies import window_energy_function

try:  # progress bars are optional in worker processes
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

FORMAT_VERSION = 1


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
                box_vectors_nm=None, ml: dict | None = None, analytic_derivatives: bool = False,
                save_atoms: list[int] | None = None, atm: dict | None = None) -> Path:
    """Write a leg's inputs to ``out_dir`` (idempotent for identical inputs).

    Args:
        system: openmm.System with the alchemical global parameters.
        positions_nm: [N, 3] start positions (nm; plain array or OpenMM Quantity).
        states: K dicts of global parameter values, first = the physical end state.
        ti_parameters: parameters to differentiate for TI (default: all state parameters).
        box_vectors_nm: [3, 3] periodic box (nm), required for periodic systems.
        ml: an ML/MM recipe (:func:`.ml_interpolation.model_spec`) applied to ``system`` in
            every window; its parameter ``lambda_ml`` may then appear in the states.
        analytic_derivatives: dU/dlambda from the forces' declared parameter derivatives.
        save_atoms: particle indices whose positions are stored with every sample.
        atm: an alchemical-transfer leg (``{"states": [ATMState dicts], "soft": SoftCore
            dict}``, :mod:`.rbfe`): every state's energy and dU/ds from the ATMForce's (u0, u1)
            (:class:`.window_energies.ATMEnergies`); ``ti_parameters`` then names the path
            coordinate (``["s"]``).

    Raises if ``out_dir`` already holds a different leg, rather than mixing samples.
    """
    import openmm
    from openmm import unit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ti_parameters = list(states[0]) if ti_parameters is None else list(ti_parameters)
    _check_states(states, ti_parameters if atm is None else [])
    names = {system.getForce(i).getGlobalParameterName(j)
             for i in range(system.getNumForces())
             if hasattr(system.getForce(i), "getNumGlobalParameters")
             for j in range(system.getForce(i).getNumGlobalParameters())}
    if ml is not None:  # what attach_ml adds (building the model just to list them costs seconds)
        from .ml_interpolation import ML_PARAMETERS

        names |= set(ML_PARAMETERS)
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
    if ml is not None:
        leg["ml"] = ml
    if analytic_derivatives:
        leg["analytic_derivatives"] = True
    if save_atoms is not None:
        leg["save_atoms"] = [int(a) for a in save_atoms]
    if atm is not None:
        leg["atm"] = atm
    system_xml = openmm.XmlSerializer.serialize(system)
    previous = out / "leg.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        def key(d):  # threads change speed, not samples: a resume may use other threads;
            # a longer production extends every window from its checkpoint (checked below);
            # saved frames do not change samples (a leg keeps what its samples have)
            return {**{k: v for k, v in d.items() if k != "save_atoms"},
                    "settings": {**d["settings"], "threads": None, "production_ps": None}}

        same = (key(old) == key(json.loads(json.dumps(leg)))
                and (out / "system.xml").read_text() == system_xml)
        has_samples = any(out.glob("window_*/samples.npz"))
        if not same and has_samples:
            raise ValueError(f"{out} already holds samples of a different leg (other system, "
                             "states or settings): use a new output directory or delete it")
        if has_samples:
            leg.pop("save_atoms", None)
            if old.get("save_atoms") is not None:
                leg["save_atoms"] = old["save_atoms"]
        if has_samples and settings.production_ps < old["settings"]["production_ps"]:
            raise ValueError(f"{out} was sampled for {old['settings']['production_ps']} ps per "
                             f"window; production_ps={settings.production_ps} would drop samples: "
                             "keep it or make it longer (windows are extended from their checkpoints)")
    atomic_write_bytes(out / "system.xml", system_xml.encode())
    atomic_savez(out / "start.npz", positions_nm=pos)  # velocities are drawn per window (seeded)
    atomic_write_bytes(out / "leg.json", json.dumps(leg, indent=1).encode())
    return out


def _platform(settings: SamplingSettings):
    """(Platform, properties) of the settings (see :mod:`mlff.md_workflows.openmm_platform`:
    on the CPU this pins the PME kernel's and the ATMForce inner contexts' threads too)."""
    from ..openmm_platform import platform_and_properties

    return platform_and_properties(settings.platform, settings.threads, precision="mixed")


def thermostatted_context(system, settings: SamplingSettings, seed: int):
    """A Context of ``system`` with the settings' LangevinMiddle integrator (seeded) and, for a
    periodic System with a pressure, a Monte Carlo barostat (added to ``system``)."""
    import openmm
    from openmm import unit

    if settings.pressure_bar is not None and system.usesPeriodicBoundaryConditions():
        barostat = openmm.MonteCarloBarostat(settings.pressure_bar * unit.bar, settings.temperature_K * unit.kelvin,
                                             settings.barostat_every_steps)
        barostat.setRandomNumberSeed(seed)  # its default (0) draws a new seed every run
        system.addForce(barostat)
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_K * unit.kelvin,
                                                 settings.friction_per_ps / unit.picosecond,
                                                 settings.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    platform, props = _platform(settings)
    return openmm.Context(system, integrator, platform, props), integrator


class SimulationUnstableError(MLFFError, RuntimeError):
    """A window's simulation produced non-finite positions or energies (timestep too long for
    the potential, or a potential with a hole)."""


def run_window(out_dir: str | Path, k: int, progress: bool = False) -> Path:
    """Sample window ``k`` of the leg in ``out_dir`` to completion (resuming if possible).

    Returns the path of the window's samples.npz. An ML/MM leg's model runs on the window's
    ``threads`` torch threads (the caller's setting is restored afterwards).
    """
    leg = json.loads((Path(out_dir) / "leg.json").read_text())
    if leg.get("ml") is None:
        return _sample_window(out_dir, leg, k, progress)
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(leg["settings"]["threads"]))  # the window's share, as OpenMM's
    try:
        return _sample_window(out_dir, leg, k, progress)
    finally:
        torch.set_num_threads(previous)


def _sample_window(out_dir: str | Path, leg: dict, k: int, progress: bool) -> Path:
    import openmm
    from openmm import unit

    out = Path(out_dir)
    settings = SamplingSettings(**leg["settings"])
    states = leg["states"]
    ti_parameters = leg["ti_parameters"]
    kdir = out / f"window_{k:03d}"
    kdir.mkdir(exist_ok=True)
    samples_path = kdir / "samples.npz"
    n_total = settings.n_samples
    kT = settings.kT_kj_mol

    system = openmm.XmlSerializer.deserialize((out / "system.xml").read_text())
    if leg.get("ml") is not None:
        from .ml_interpolation import attach_ml

        attach_ml(system, leg["ml"])
    save_atoms = leg.get("save_atoms")
    seed = (settings.seed * 1000003 + 7919 * (k + 1)) % 2_000_000_000 + 1
    context, integrator = thermostatted_context(system, settings, seed)
    current = {name: float(v) for name, v in states[k].items()}
    for name, value in current.items():
        context.setParameter(name, value)
    energies = window_energy_function(leg, system, k, kT, settings.fd_step)

    u_rows, d_rows, t_rows, x_rows, b_rows = [], [], [], [], []
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
        if save_atoms is not None:
            x_rows = list(data["positions_nm"][:n_done])
            b_rows = list(data["box_nm"][:n_done])
    if not resumed:
        context.setPositions(np.load(out / "start.npz")["positions_nm"])  # box: the system's default
        if settings.minimize:
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
        context.setVelocitiesToTemperature(settings.temperature_K * unit.kelvin, seed)
        if settings.equilibration_steps:
            integrator.step(settings.equilibration_steps)
        _check_stable(context, k, current, settings, "equilibration")

    def save(n_done: int) -> None:
        state_xml = openmm.XmlSerializer.serialize(
            context.getState(getPositions=True, getVelocities=True, getParameters=True))
        atomic_savez(
            samples_path,
            u_kln=np.array(u_rows, dtype=float).reshape(n_done, len(states)).T,
            dudl=np.array(d_rows, dtype=float).reshape(n_done, len(ti_parameters)),
            time_ps=np.array(t_rows, dtype=float),
            **({} if save_atoms is None else {
                "positions_nm": np.array(x_rows, dtype=float).reshape(n_done, len(save_atoms), 3),
                "box_nm": np.array(b_rows, dtype=float).reshape(n_done, 3, 3)}),
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
        _check_stable(context, k, current, settings, f"sample {n_done + 1}")
        u, d = energies(context)
        u_rows.append(u)
        d_rows.append(d)
        if save_atoms is not None:
            frame = context.getState(getPositions=True)
            x_rows.append(frame.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[save_atoms])
            b_rows.append(frame.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
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


def _check_stable(context, k: int, state: dict, settings: SamplingSettings, when: str) -> None:
    """Raise :class:`SimulationUnstableError` when the window's positions or energy are no
    longer finite, before anything of it is saved (a blown-up window used to record NaN samples
    to the end and fail only in the analysis)."""
    from openmm import unit

    s = context.getState(getPositions=True, getEnergy=True)
    energy = s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if np.isfinite(energy) and np.all(np.isfinite(s.getPositions(asNumpy=True)._value)):
        return
    where = ", ".join(f"{name}={value:g}" for name, value in state.items())
    raise SimulationUnstableError(
        f"window {k} ({where}) blew up during {when}: positions or energy are not finite at a "
        f"{settings.timestep_fs:g} fs timestep. Use a smaller timestep for this leg (for the "
        f"ML/MM corrections: ml_timestep_fs, e.g. 2.0) or check the model on this molecule "
        f"(mlff md on the solute in vacuum shows where it fails)")


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
    u, d, t, x, b, missing = [], [], [], [], [], []
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
        if "positions_nm" in data.files:
            x.append(data["positions_nm"][:n])
            b.append(data["box_nm"][:n])
    if missing:
        raise RuntimeError(f"windows {missing} of {out} are not finished: run the leg again "
                           "(it resumes where each window stopped)")
    frames = len(x) == len(u)
    return LegSamples(leg["states"], leg["ti_parameters"], u, d, t, settings.temperature_K,
                      x if frames else None, b if frames else None)
