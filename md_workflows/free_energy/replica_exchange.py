"""Hamiltonian replica exchange over the alchemical states, through openmmtools.multistate.

The other sampling method next to independent windows (sampling.py): K replicas, one per
state, each propagated with Langevin dynamics for ``sample_every_ps`` between exchange
attempts (all-pairs Gibbs swaps, openmmtools' default); openmmtools stores every iteration's
reduced potentials at all states in ``OUT/hrex.nc`` and checkpoints positions into
``OUT/hrex_checkpoint.nc`` every ``checkpoint_every_samples`` iterations. A killed run resumes
from the last checkpoint with ``ReplicaExchangeSampler.from_storage`` (openmmtools rewrites the
iterations after that checkpoint: none is lost or counted twice); ``OUT/hrex.done`` marks a
finished run, which is then only read.

The samples are regrouped by the state they were drawn from, giving the same ``u_kln`` layout
as independent windows, so the same estimators apply (MBAR, BAR, EXP). openmmtools computes no
dU/dlambda, so TI is not reported for replica exchange. Replicas run in one process (exchanges
need all of them): use ``threads`` for parallelism on one machine.

Only openmmtools alchemical systems (``lambda_electrostatics``, ``lambda_sterics``: the
hydration legs) are supported, since openmmtools states are built from AlchemicalState.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from mlff.atomic import atomic_write_text

from .sampling import LegSamples, SamplingSettings, _platform

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


def _imports():
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from openmmtools import alchemy, cache, mcmc, multistate
        from openmmtools import states as ostates
    logging.getLogger("openmmtools").setLevel(logging.ERROR)
    return alchemy, cache, mcmc, multistate, ostates


def run_hrex_leg(out_dir: str | Path, system, positions_nm, states: list[dict[str, float]],
                 settings: SamplingSettings, box_vectors_nm=None, progress: bool = True,
                 label: str = "") -> LegSamples:
    """Run (or resume) Hamiltonian replica exchange and return the samples grouped by state.

    Args:
        system: openmmtools alchemical system (see alchemical.alchemical_system).
        positions_nm: [N, 3] start positions in nm (array or Quantity).
        states: K dicts of ``lambda_electrostatics`` / ``lambda_sterics``.
        settings: the same settings as independent windows; equilibration_ps is discarded
            from the start of the replica-exchange run (after a minimisation).
    """
    from openmm import unit

    alchemy, cache, mcmc, multistate, ostates = _imports()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = out / "hrex.nc"
    spec = {"states": states, "settings": {k: v for k, v in vars(settings).items() if k != "threads"}}
    spec_path = out / "hrex.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(json.dumps(spec)):
        raise ValueError(f"{out} holds a replica-exchange run with other states or settings: "
                         "use a new output directory or delete it")
    done_marker = out / "hrex.done"
    if done_marker.exists():  # finished: from_storage would redo the iterations after the
        return load_hrex(out, states, settings)  # last checkpoint, so do not reopen it
    atomic_write_text(spec_path, json.dumps(spec, indent=1))
    allowed = {"lambda_electrostatics", "lambda_sterics"}
    if not set(states[0]) <= allowed:
        raise ValueError(f"replica exchange supports openmmtools alchemical states "
                         f"({sorted(allowed)}), got {sorted(states[0])}: use independent windows")

    platform, props = _platform(settings)
    cache.global_context_cache = cache.ContextCache(platform=platform, platform_properties=props)

    equil_iterations = int(round(settings.equilibration_ps / settings.sample_every_ps))
    n_iterations = equil_iterations + settings.n_samples

    if storage.exists():
        reporter = multistate.MultiStateReporter(str(storage), open_mode="a")
        sampler = multistate.ReplicaExchangeSampler.from_storage(reporter)
    else:
        pressure = (settings.pressure_bar * unit.bar
                    if settings.pressure_bar is not None and system.usesPeriodicBoundaryConditions() else None)
        base = ostates.ThermodynamicState(system, temperature=settings.temperature_K * unit.kelvin,
                                          pressure=pressure)
        compound = ostates.CompoundThermodynamicState(base, [alchemy.AlchemicalState.from_system(system)])
        thermo_states = []
        for s in states:
            ts = copy.deepcopy(compound)
            for name, value in s.items():
                setattr(ts, name, float(value))
            thermo_states.append(ts)
        pos = positions_nm if hasattr(positions_nm, "value_in_unit") else np.asarray(positions_nm) * unit.nanometer
        box = None
        if system.usesPeriodicBoundaryConditions():
            box = (box_vectors_nm if box_vectors_nm is not None
                   else np.array([[v.x, v.y, v.z] for v in (b.value_in_unit(unit.nanometer)
                                  for b in system.getDefaultPeriodicBoxVectors())]))
            box = np.asarray(box) * unit.nanometer
        sampler_state = ostates.SamplerState(pos, box_vectors=box)
        move = mcmc.LangevinDynamicsMove(timestep=settings.timestep_fs * unit.femtosecond,
                                         collision_rate=settings.friction_per_ps / unit.picosecond,
                                         n_steps=settings.steps_per_sample, reassign_velocities=False,
                                         n_restart_attempts=4)
        sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move, number_of_iterations=n_iterations,
                                                    online_analysis_interval=None)
        reporter = multistate.MultiStateReporter(str(storage),
                                                 checkpoint_interval=settings.checkpoint_every_samples)
        sampler.create(thermodynamic_states=thermo_states, sampler_states=[sampler_state],
                       storage=reporter)
        if settings.minimize:
            sampler.minimize()
    bar = (tqdm(total=n_iterations, initial=sampler.iteration, desc=f"{label} replica exchange")
           if progress and tqdm is not None else None)
    while sampler.iteration < n_iterations:
        with contextlib.redirect_stdout(io.StringIO()):  # openmmtools prints citations on stdout
            sampler.run(n_iterations=min(settings.checkpoint_every_samples, n_iterations - sampler.iteration))
        if bar is not None:
            bar.n = sampler.iteration
            bar.refresh()
    if bar is not None:
        bar.close()
    del sampler
    reporter.close()
    atomic_write_text(done_marker, f"{n_iterations}\n")
    return load_hrex(out, states, settings)


def load_hrex(out_dir: str | Path, states: list[dict[str, float]], settings: SamplingSettings) -> LegSamples:
    """Regroup a finished run's reduced potentials by sampled state (equilibration dropped)."""
    _, _, _, multistate, _ = _imports()
    reporter = multistate.MultiStateReporter(str(Path(out_dir) / "hrex.nc"), open_mode="r")
    try:
        energies, _, _ = reporter.read_energies()          # [T+1, replicas, states]
        replica_state = np.asarray(reporter.read_replica_thermodynamic_states())  # [T+1, replicas]
    finally:
        reporter.close()
    equil = int(round(settings.equilibration_ps / settings.sample_every_ps))
    energies, replica_state = energies[1 + equil:], replica_state[1 + equil:]
    k = len(states)
    u_kln, times = [], []
    for s in range(k):
        it, rep = np.nonzero(replica_state == s)   # one replica per state per iteration
        order = np.argsort(it)
        u_kln.append(energies[it[order], rep[order], :].T)
        times.append((it[order] + 1) * settings.sample_every_ps)
    dudl = [np.zeros((u.shape[1], 0)) for u in u_kln]
    return LegSamples(states, [], u_kln, dudl, times, settings.temperature_K)


def acceptance_matrix(out_dir: str | Path) -> np.ndarray:
    """Fraction of iterations in which state i went to state j (the mixing of the run)."""
    _, _, _, multistate, _ = _imports()
    reporter = multistate.MultiStateReporter(str(Path(out_dir) / "hrex.nc"), open_mode="r")
    try:
        rs = np.asarray(reporter.read_replica_thermodynamic_states())
    finally:
        reporter.close()
    k = rs.shape[1]
    t = np.zeros((k, k))
    for a, b in zip(rs[:-1], rs[1:]):
        for r in range(k):
            t[a[r], b[r]] += 1
    return t / np.maximum(t.sum(axis=1, keepdims=True), 1)
