"""Molecular dynamics with an mlff model: ``mlff md`` and :func:`run_md`, the report loop.

:func:`run_md` loads the structure (:mod:`~mlff.md_workflows.structure`), drives an engine
(:mod:`~mlff.md_workflows.engines`: OpenMM or ASE) from report step to report step, and at each
one appends a frame and a log row, checks the ensemble spread and writes a checkpoint
(:mod:`~mlff.md_workflows.run_folder`); at the end it writes the trajectory, the final structure
and the plots (:mod:`~mlff.md_workflows.md_plots`).

Output folder (``out``)
    ``topology.pdb``, ``trajectory.dcd``, ``frames.bin``, ``cells.bin``, ``log.csv``,
    ``checkpoint.npz``, ``final.pdb``, ``final.extxyz`` (see :mod:`~mlff.md_workflows.run_folder`);
    ``traces.png``, ``uncertainty.png`` (the log as plots);
    ``uncertain_frames.extxyz``  frames above ``uq_warn`` (for ``mlff label``).
    ``resume=True`` continues from the checkpoint, truncating anything written after it, so no
    frame is lost or duplicated (OpenMM: the Context checkpoint, RNG included; ASE: positions,
    momenta, cell and the Langevin RNG state).

Units: input/output in K, bar, fs, eV, A; OpenMM units only inside the OpenMM engine.
Temperature is ``2 KE / (n_dof kB)``, ``n_dof = 3N - 3``: both engines remove the centre-of-mass
motion (ASE's NPT, which does not, uses ``3N``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from mlff.md_workflows.engines import Engine, Snapshot, make_engine
from mlff.md_workflows.md_config import (ENGINES, ENSEMBLES, LOG_COLUMNS, MD_RESUMABLE, MDConfig,
                                         MDResult)
from mlff.resume_check import check_resume_settings, run_settings, saved_settings
from mlff.md_workflows.md_plots import plot_log
from mlff.md_workflows.run_folder import RunFolder, read_frames, write_trajectory
from mlff.md_workflows.structure import load_structure
from mlff.md_workflows.uq import UncertaintyStop, UQMonitor, UQRecord
from mlff.units import AMU_PER_A3_TO_G_PER_CM3, FS_TO_NS, FS_TO_PS, KB_EV_PER_K, SECONDS_PER_DAY

#: What callers import from here (the records and output helpers live in their own modules).
__all__ = ["run_md", "log_row", "MDConfig", "MDResult", "ENGINES", "ENSEMBLES", "LOG_COLUMNS",
           "load_structure", "read_frames", "write_trajectory", "plot_log"]

log = logging.getLogger(__name__)

#: Shortest wall time (s) a rate is divided by.
_MIN_WALL_S = 1e-9


def log_row(step: int, cfg: MDConfig, snap: Snapshot, n_dof: int, total_mass_amu: float,
            uq: Optional[UQRecord]) -> Dict[str, object]:
    """The ``log.csv`` row (:data:`LOG_COLUMNS`) of ``snap`` at ``step``: time ps, energies eV,
    temperature K, volume A^3 and density g/cm^3 (periodic, else NaN), spread eV and eV/A."""
    nan = float("nan")
    volume = abs(float(np.linalg.det(snap.cell))) if snap.cell is not None else nan
    return {
        "step": step, "time_ps": step * cfg.timestep_fs * FS_TO_PS,
        "potential_eV": snap.potential, "kinetic_eV": snap.kinetic,
        "total_eV": snap.potential + snap.kinetic,
        "temperature_K": 2.0 * snap.kinetic / (n_dof * KB_EV_PER_K),
        "volume_A3": volume,
        "density_g_cm3": total_mass_amu / volume * AMU_PER_A3_TO_G_PER_CM3 if snap.cell is not None else nan,
        "energy_std_eV": uq.energy_std if uq else nan,
        "max_force_std_eV_A": uq.max_force_std if uq else nan,
        "max_force_std_atom": uq.max_atom if uq else "",
    }


def _ns_per_day(steps: int, cfg: MDConfig, wall_s: float) -> float:
    return steps * cfg.timestep_fs * FS_TO_NS / max(wall_s, _MIN_WALL_S) * SECONDS_PER_DAY


def run_md(cfg: MDConfig, resume: bool = False) -> MDResult:
    """Run (or resume) the MD described by ``cfg``; see the module docstring for the output.

    Raises:
        FileExistsError: ``cfg.out`` already holds a run and ``resume`` is False.
        FileNotFoundError: ``resume`` without a checkpoint in ``cfg.out``.
        OutputError: ``cfg.out`` cannot be written (checked before anything is built).
        RunLockedError: another process is running in ``cfg.out`` (:mod:`mlff.run_lock`).
        InputError: an empty or unreadable structure file.
        CheckpointError: ``resume`` from a damaged checkpoint.
        ValueError: bad options (UQ levels with a single model, npt without a cell, ...).
    """
    from mlff.atomic import check_writable
    from mlff.run_lock import run_lock

    check_writable(cfg.out, "MD output folder")
    # one run at a time in a folder; a run that fails before its first frame leaves no folder
    with run_lock(cfg.out, "mlff md"):
        return _run(cfg, resume)


def _run(cfg: MDConfig, resume: bool) -> MDResult:
    """:func:`run_md` once the output folder is known to be writable."""
    import mdtraj
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    atoms, topology = load_structure(cfg.structure)
    n_atoms = len(atoms)
    folder = RunFolder(out, n_atoms, bool(np.all(atoms.pbc)), cfg.write_extxyz)
    if resume and not folder.checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint {folder.checkpoint}; run without --resume first")
    if not resume and folder.holds_run():
        raise FileExistsError(f"{out} already holds a run; continue it with --resume or choose "
                              "another --out")
    settings = run_settings(cfg)
    inputs = {k: settings[k] for k in ("structure_sha256", "model_sha256")}
    if resume:  # read (and check) the checkpoint before the model is built
        arrays, meta = folder.load_checkpoint()
        if meta["n_atoms"] != n_atoms or meta["engine"] != cfg.engine:
            raise ValueError(f"checkpoint in {out} is for {meta['n_atoms']} atoms with engine "
                             f"{meta['engine']}; resume with the same structure and engine")
        old = saved_settings(MDConfig, meta.get("config", {}), meta.get("inputs", {}), settings)
        check_resume_settings(old, settings, MD_RESUMABLE, str(out))
    monitor = UQMonitor(cfg.uq_warn, cfg.uq_stop, out / "uncertain_frames.extxyz", atoms.numbers)
    engine: Engine = make_engine(cfg, atoms, topology, monitor)  # builds the model once
    if (cfg.uq_warn is not None or cfg.uq_stop is not None) and engine.num_members < 2:
        raise ValueError("uq_warn/uq_stop need an ensemble model (this model has one member); "
                         "train one with model.ensemble_size > 1 or drop the UQ options")
    total_mass = float(engine.masses.sum())

    n_frames = 0
    if resume:
        engine.restore(arrays, meta["step"])
        n_frames = int(meta["n_frames"])
        folder.truncate(n_frames, meta["step"])
        monitor.truncate_after(meta["step"])
    else:
        folder.start(monitor.frames_path)

    def record(stop: Optional[UncertaintyStop] = None) -> None:
        """Frame + log row + UQ check + checkpoint at the current step; then raise ``stop`` (an
        UncertaintyStop from inside ``engine.step``, or from this step's check)."""
        nonlocal n_frames
        step = engine.step_count
        uq = None if stop is None else stop.record
        if stop is None:
            try:
                uq = engine.uq()
            except UncertaintyStop as exc:
                stop, uq = exc, exc.record
        snap = engine.snapshot()
        folder.append_frame(snap.positions, snap.cell, atoms.numbers, step, snap.potential)
        n_frames += 1
        folder.append_row(log_row(step, cfg, snap, engine.n_dof, total_mass, uq))
        folder.save_checkpoint(engine.checkpoint(), {
            "step": step, "n_frames": n_frames, "n_atoms": n_atoms, "engine": cfg.engine,
            "config": asdict(cfg), "inputs": inputs})
        if stop is not None:
            raise stop

    stopped: Optional[str] = None
    t0 = time.time()
    start_step = engine.step_count
    bar = tqdm(total=cfg.steps, initial=start_step, unit="step", disable=not cfg.progress,
               desc=f"md {cfg.engine} {cfg.ensemble}")
    try:
        if not resume:
            # the step-0 frame: OpenMM never reports at step 0, so engine.uq() runs the UQ
            # reporter's check explicitly here
            record()
        while engine.step_count < cfg.steps:
            n = min(cfg.report_every - engine.step_count % cfg.report_every,
                    cfg.steps - engine.step_count)
            stop = None
            try:
                engine.step(n)  # OpenMM's UQ reporter fires (and may stop) at the report step
            except UncertaintyStop as exc:
                stop = exc
            record(stop)
            bar.update(n)
            wall = time.time() - t0
            bar.set_postfix(ns_day=f"{_ns_per_day(engine.step_count - start_step, cfg, wall):.3f}")
    except UncertaintyStop as exc:
        stopped = str(exc)
        log.warning(stopped)
    finally:
        bar.close()
    wall = time.time() - t0
    ns_day = _ns_per_day(engine.step_count - start_step, cfg, wall)

    final = atoms.copy()
    final.calc = None
    final.set_constraint()
    snap = engine.snapshot()
    final.positions = snap.positions
    if snap.cell is not None:
        final.cell = snap.cell
    files = folder.write_outputs(mdtraj.Topology.from_openmm(topology), final)
    for p in plot_log(folder.log, out):
        files[p.stem] = p
    files["checkpoint"] = folder.checkpoint
    if monitor.frames_path.exists():
        files["uncertain_frames"] = monitor.frames_path
    return MDResult(out, engine.step_count, n_frames, wall, ns_day, stopped, files)
