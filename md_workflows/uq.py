"""Uncertainty-aware MD: watch the ensemble's disagreement while a simulation runs.

The measure, each report step (units eV and Angstrom):

``max_force_std``
    the largest per-atom force standard deviation, where the per-atom value is the norm of the
    per-component standard deviations over the ensemble members,
    ``sqrt(sum_c std(F_ic)^2)`` (eV/A), times the model's recalibration factor ``std_scale``;
``energy_std``
    the standard deviation of the members' total energies (eV).

:class:`UQMonitor` is engine independent: ``--uq-warn X`` logs a warning and appends the frame
to an extxyz file (ready for ``mlff label`` and then ``mlff train`` with ``init_from``: the
active-learning loop); ``--uq-stop Y`` raises :class:`UncertaintyStop`, naming the step and the
atoms above ``Y``, which the MD driver turns into a clean stop.

:class:`UQReporter` is the OpenMM side: a reporter registered with the Simulation
(``simulation.reporters.append(reporter)``) that, at each report step, evaluates the *same* model
instance the ML force runs (:meth:`mlff.calculators.openmm.MLSystem.evaluate` of the
:class:`~mlff.calculators.openmm.MLSystem` from
:func:`mlff.calculators.openmm.build_ml_system`, either route), so no second copy of the model
is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import openmm
    import openmm.app

    from mlff.calculators.openmm import MLSystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UQRecord:
    """Ensemble spread at one report step.

    Attributes:
        step: MD step. time_ps: simulated time (ps).
        energy_std: eV. max_force_std: eV/A (per-atom norm, see the module docstring).
        max_atom: index of the atom with the largest force std.
        atoms_over_warn / atoms_over_stop: indices of atoms above the warn / stop levels.
    """

    step: int
    time_ps: float
    energy_std: float
    max_force_std: float
    max_atom: int
    atoms_over_warn: List[int] = field(default_factory=list)
    atoms_over_stop: List[int] = field(default_factory=list)


class UncertaintyStop(RuntimeError):
    """The ensemble disagrees beyond the stop level; the run was stopped at ``record.step``."""

    def __init__(self, record: UQRecord, stop: float) -> None:
        self.record = record
        atoms = ", ".join(str(a) for a in record.atoms_over_stop[:20])
        super().__init__(
            f"uncertainty stop at step {record.step} ({record.time_ps:.4f} ps): max per-atom force "
            f"std {record.max_force_std:.3f} eV/A > {stop} eV/A on atom(s) {atoms}; the model is "
            "outside its training data here: label the saved frames (mlff label) and fine-tune "
            "(mlff train with init_from), or lower the temperature / time step"
        )


def per_atom_force_std(forces_std: np.ndarray) -> np.ndarray:
    """``[N, 3]`` per-component force std (eV/A) -> ``[N]`` per-atom norm (eV/A)."""
    f = np.asarray(forces_std, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"forces_std must have shape [N, 3], got {f.shape}")
    return np.sqrt((f * f).sum(axis=1))


class UQMonitor:
    """Check ensemble spreads against warn/stop levels; save uncertain frames.

    Args:
        warn: warn level for the max per-atom force std (eV/A), or None.
        stop: stop level (eV/A), or None.
        frames_path: extxyz file that frames above ``warn`` are appended to (None: not saved).
        numbers: ``[N]`` atomic numbers (for the saved frames).
    """

    def __init__(
        self,
        warn: Optional[float] = None,
        stop: Optional[float] = None,
        frames_path: Optional[Path] = None,
        numbers: Optional[Sequence[int]] = None,
    ) -> None:
        for name, v in (("uq_warn", warn), ("uq_stop", stop)):
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be a positive force std in eV/A, got {v}")
        if warn is not None and stop is not None and stop < warn:
            raise ValueError(f"uq_stop ({stop}) must not be below uq_warn ({warn})")
        self.warn, self.stop = warn, stop
        self.frames_path = None if frames_path is None else Path(frames_path)
        self.numbers = None if numbers is None else np.asarray(numbers, dtype=int)

    def check(
        self,
        step: int,
        time_ps: float,
        energy_std: float,
        forces_std: np.ndarray,
        positions: Optional[np.ndarray] = None,
        cell: Optional[np.ndarray] = None,
    ) -> UQRecord:
        """Record one report step.

        Args:
            energy_std: eV. forces_std: ``[N, 3]`` eV/A. positions: ``[N, 3]`` A (for the saved
            frame). cell: ``[3, 3]`` A rows, or None (non-periodic).

        Raises:
            UncertaintyStop: the max per-atom force std exceeds ``stop`` (after the frame is saved).
        """
        per_atom = per_atom_force_std(forces_std)
        k = int(np.argmax(per_atom))
        over_warn = [] if self.warn is None else np.flatnonzero(per_atom > self.warn).tolist()
        over_stop = [] if self.stop is None else np.flatnonzero(per_atom > self.stop).tolist()
        record = UQRecord(int(step), float(time_ps), float(energy_std), float(per_atom[k]), k,
                          over_warn, over_stop)
        if over_warn:
            log.warning("step %d: max per-atom force std %.3f eV/A above the warn level %.3g on "
                        "atom(s) %s", step, record.max_force_std, self.warn, over_warn[:20])
            if self.frames_path is not None and positions is not None:
                self._save(record, per_atom, positions, cell)
        if over_stop:
            raise UncertaintyStop(record, float(self.stop))
        return record

    def _save(self, record: UQRecord, per_atom: np.ndarray, positions: np.ndarray,
              cell: Optional[np.ndarray]) -> None:
        import ase.io
        from ase import Atoms

        if self.numbers is None:
            raise ValueError("UQMonitor needs `numbers` to save frames")
        atoms = Atoms(numbers=self.numbers, positions=np.asarray(positions, dtype=np.float64),
                      cell=None if cell is None else cell, pbc=cell is not None)
        atoms.info.update(step=record.step, time_ps=record.time_ps,
                          energy_std=record.energy_std, max_force_std=record.max_force_std)
        atoms.arrays["force_std"] = per_atom.copy()
        self.frames_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.frames_path, "a") as f:
            ase.io.write(f, atoms, format="extxyz")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """Drop saved frames with a step after ``step`` (used on resume; keeps the file exact)."""
        import ase.io

        from mlff.atomic import atomic_write_extxyz

        if self.frames_path is None or not self.frames_path.exists():
            return
        frames = ase.io.read(self.frames_path, ":", format="extxyz")
        keep = [a for a in frames if int(a.info.get("step", -1)) <= step]
        if len(keep) != len(frames):
            atomic_write_extxyz(self.frames_path, keep)


class UQReporter:
    """OpenMM reporter: the ensemble spread of the ML force's own model at every report step.

    Register it with ``simulation.reporters.append(reporter)``; OpenMM then calls
    :meth:`report` every ``interval`` steps (at steps that are multiples of ``interval``) from
    inside ``Simulation.step``. OpenMM never reports at step 0: call :meth:`report_now` for a
    step off the interval.

    Args:
        ml: the :class:`~mlff.calculators.openmm.MLSystem` whose force the Simulation runs (its
            :meth:`~mlff.calculators.openmm.MLSystem.evaluate` gives the spread, either route).
        monitor: the :class:`UQMonitor` (levels and frame file).
        interval: report interval in steps.
        timestep_ps: MD time step (ps), for the recorded time.

    After a report, :attr:`last` is its :class:`UQRecord` and :attr:`state` the OpenMM State it
    evaluated (positions unwrapped, energies). :meth:`report` raises :class:`UncertaintyStop`
    (out of ``Simulation.step``) above the stop level, after setting both.
    """

    def __init__(self, ml: "MLSystem", monitor: UQMonitor, interval: int, timestep_ps: float) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be a positive number of steps, got {interval}")
        self.ml = ml
        self.monitor = monitor
        self.interval = int(interval)
        self.timestep_ps = float(timestep_ps)
        self.last: Optional[UQRecord] = None
        self.state: Optional["openmm.State"] = None

    def describeNextReport(self, simulation: "openmm.app.Simulation") -> dict:  # noqa: N802 - OpenMM's API
        """Steps to the next multiple of ``interval``; positions (unwrapped) and energies."""
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": False, "include": ["positions", "energy"]}

    def evaluate(self, state: "openmm.State") -> tuple:
        """``(energy_std eV, forces_std [N, 3] eV/A, positions [N, 3] A, cell [3, 3] A or None)``
        of an OpenMM State holding positions (and box vectors when periodic)."""
        import openmm.unit as u

        from mlff.units import KJ_PER_MOL_PER_NM_TO_EV_PER_A, KJ_PER_MOL_TO_EV, NM_TO_ANGSTROM

        out = self.ml.evaluate(state)
        e_std = float(out["energy_std"]) * KJ_PER_MOL_TO_EV
        f_std = np.asarray(out["forces_std"], dtype=np.float64) * KJ_PER_MOL_PER_NM_TO_EV_PER_A
        pos = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * NM_TO_ANGSTROM
        cell = None
        if self.ml.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
            cell = np.asarray(box) * NM_TO_ANGSTROM
        return e_std, f_std, pos, cell

    def report(self, simulation: "openmm.app.Simulation", state: "openmm.State") -> None:
        """Evaluate and check ``state`` at the simulation's current step.

        Raises:
            UncertaintyStop: above the stop level (:attr:`last` and :attr:`state` are set).
        """
        step = int(simulation.currentStep)
        e_std, f_std, pos, cell = self.evaluate(state)
        self.state = state
        try:
            self.last = self.monitor.check(step, step * self.timestep_ps, e_std, f_std, pos, cell)
        except UncertaintyStop as stop:
            self.last = stop.record
            raise

    def report_now(self, simulation: "openmm.app.Simulation") -> UQRecord:
        """:meth:`report` on the current State, for steps OpenMM does not report (step 0, a
        last step off the interval). Returns :attr:`last`; raises as :meth:`report`."""
        state = simulation.context.getState(getPositions=True, getEnergy=True)
        self.report(simulation, state)
        return self.last
