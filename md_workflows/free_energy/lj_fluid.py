"""Lennard-Jones fluid for validating alchemical free energies: systems, short runs, Widom insertion.

A reduced-unit state point (N, rho*, T*, cutoff r_c in sigma) is mapped to real units with
argon-like parameters (sigma 0.34 nm, epsilon 0.997 kJ/mol, 39.948 amu) so that OpenMM can run
it. The excess chemical potential mu_ex of one extra LJ particle is then available three ways:

- alchemically: :func:`build_lj_system` adds the extra ("solute") particle, coupled to the fluid
  through a Beutler softcore LJ controlled by one global context parameter (``lambda_insert``);
  ``mu_ex = Delta G(lambda 0 -> 1) / epsilon + LJFluid.tail_correction_insert``;
- by Widom test-particle insertion on fluid frames, :func:`widom_insertion` (cut-off LJ plus the
  same analytic tail);
- from an equation of state (:mod:`mlff.md_workflows.free_energy.lj_eos`, Johnson, Zollweg &
  Gubbins 1993).

Conventions of the systems built here
    - Fluid-fluid: a ``NonbondedForce`` with ``CutoffPeriodic`` at r_c sigma, no switching
      function and **no** dispersion (long-range) correction, so the fluid's energy is the plain
      truncated (not shifted) LJ sum. For mu_ex this does not matter: in NVT the fluid's tail is
      a constant, and the inserted particle's tail is added analytically.
    - Solute-fluid: a ``CustomNonbondedForce`` restricted to the interaction group
      {solute} x {fluid}, same cutoff, no long-range correction, in its own force group
      (default 1), with the Beutler et al. (1994) softcore form below. The solute keeps zero
      charge and zero epsilon in the ``NonbondedForce``, so it meets the fluid only through the
      softcore force.
    - All energies, lengths, times and masses cross the OpenMM boundary in kJ/mol, nm, ps, amu;
      reduced quantities (rho*, T*, mu_ex in epsilon) stay on this side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np
import openmm
from openmm import unit

from mlff.units import PS_TO_FS

from .estimators import analyze
from .sampling import MOLAR_GAS_CONSTANT_KJ, SamplingSettings, prepare_leg, run_leg

#: Molar gas constant in kJ/(mol K): the sampler's (OpenMM's value), so that kT is T* epsilon.
MOLAR_GAS_CONSTANT_KJ_PER_MOL_K: float = MOLAR_GAS_CONSTANT_KJ

#: Default force group of the solute-fluid softcore force.
SOLUTE_FORCE_GROUP: int = 1

_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_NAMES = {"r", "x"}


@dataclass(frozen=True)
class LJFluid:
    """A Lennard-Jones state point in reduced units, mapped to real (argon-like) units.

    Parameters
    ----------
    n_particles
        Number of fluid particles N (the inserted solute, when built, is an extra particle).
    density
        Reduced number density rho* = N sigma^3 / V of the fluid.
    temperature
        Reduced temperature T* = k_B T / epsilon.
    cutoff
        Interaction cutoff r_c in units of sigma (truncated, not shifted).
    sigma_nm, epsilon_kj_mol, mass_amu
        The real-unit LJ parameters (defaults: argon-like).
    """

    n_particles: int
    density: float
    temperature: float
    cutoff: float = 3.0
    sigma_nm: float = 0.34
    epsilon_kj_mol: float = 0.997
    mass_amu: float = 39.948

    def __post_init__(self) -> None:
        if isinstance(self.n_particles, bool) or not isinstance(self.n_particles, (int, np.integer)) \
                or self.n_particles < 1:
            raise ValueError(f"LJFluid.n_particles must be an integer >= 1, got {self.n_particles!r}")
        for name in ("density", "temperature", "cutoff", "sigma_nm", "epsilon_kj_mol", "mass_amu"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
                raise ValueError(f"LJFluid.{name} must be a finite number > 0, got {value!r}")

    @property
    def temperature_kelvin(self) -> float:
        """T = T* epsilon / k_B in K."""
        return self.temperature * self.epsilon_kj_mol / MOLAR_GAS_CONSTANT_KJ_PER_MOL_K

    @property
    def kT_kj_mol(self) -> float:
        """k_B T = T* epsilon in kJ/mol."""
        return self.temperature * self.epsilon_kj_mol

    @property
    def box_edge(self) -> float:
        """Cubic box edge in sigma: (N / rho*)^(1/3)."""
        return (self.n_particles / self.density) ** (1.0 / 3.0)

    @property
    def box_edge_nm(self) -> float:
        """Cubic box edge in nm: (N / rho*)^(1/3) sigma."""
        return self.box_edge * self.sigma_nm

    @property
    def cutoff_nm(self) -> float:
        """The cutoff r_c sigma in nm."""
        return self.cutoff * self.sigma_nm

    @property
    def tau(self) -> float:
        """The LJ time unit sigma sqrt(m / epsilon) in ps (amu nm^2 ps^-2 = kJ/mol)."""
        return self.sigma_nm * math.sqrt(self.mass_amu / self.epsilon_kj_mol)

    @property
    def tail_correction_insert(self) -> float:
        """Tail (r > r_c) energy of one inserted particle in epsilon, for a uniform fluid (g = 1).

        (16/3) pi rho* [ (1/3) r_c^-9 - r_c^-3 ]; -0.496 at rho* 0.8, r_c 3. It is twice the
        per-particle tail of the fluid's energy, because the inserted particle owns all of its
        pairs.
        """
        rc = self.cutoff
        return 16.0 / 3.0 * math.pi * self.density * (rc**-9 / 3.0 - rc**-3)

    def check_box(self) -> None:
        """Raise ``ValueError`` unless the box edge is at least twice the cutoff (minimum image)."""
        if self.box_edge < 2.0 * self.cutoff:
            n_min = math.ceil(self.density * (2.0 * self.cutoff) ** 3)
            raise ValueError(
                f"box edge {self.box_edge:.3f} sigma (N={self.n_particles}, rho*={self.density}) is "
                f"smaller than twice the cutoff {self.cutoff} sigma; use n_particles >= {n_min} "
                "or a smaller cutoff")


def lattice_positions(n: int, box_edge: float) -> np.ndarray:
    """``n`` well-separated points in a cubic box of edge ``box_edge``; shape [n, 3], same unit.

    Sites of a simple-cubic and a face-centred-cubic lattice filling the box are built (the
    smallest of each with at least ``n`` sites) and the one with the larger nearest-neighbour
    distance is used; ``n`` of its sites, evenly spread through the site list, are returned
    (all of them when the count matches, e.g. 108, 256, 500 for fcc).
    """
    if n < 1:
        raise ValueError(f"need at least one particle, got n={n}")
    n_sc = math.ceil(round(n ** (1.0 / 3.0), 9))
    m_fcc = math.ceil(round((n / 4.0) ** (1.0 / 3.0), 9))
    nn_sc = box_edge / n_sc
    nn_fcc = box_edge / (m_fcc * math.sqrt(2.0))
    if nn_fcc >= nn_sc:
        cells = np.stack(np.meshgrid(*[np.arange(m_fcc)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
        basis = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
        sites = ((cells + basis[None]).reshape(-1, 3) + 0.25) * (box_edge / m_fcc)
    else:
        grid = np.stack(np.meshgrid(*[np.arange(n_sc)] * 3, indexing="ij"), -1).reshape(-1, 3)
        sites = (grid + 0.5) * (box_edge / n_sc)
    index = np.round(np.linspace(0, len(sites) - 1, n)).astype(int)
    return sites[index]


def build_lj_system(
    fluid: LJFluid,
    with_solute: bool = True,
    softcore_alpha: float = 0.5,
    parameter: str = "lambda_insert",
    force_group: int = SOLUTE_FORCE_GROUP,
) -> Tuple[openmm.System, np.ndarray, np.ndarray]:
    """An OpenMM System of the LJ fluid, optionally with one softcore-coupled solute particle.

    Parameters
    ----------
    fluid
        The state point; its box edge must be at least twice the cutoff.
    with_solute
        Add the inserted particle as index N (the last), interacting with the fluid through
        ``U = 4 eps lam [1 / (alpha (1 - lam) + (r/sigma)^6)^2 - 1 / (alpha (1 - lam) + (r/sigma)^6)]``
        for r < r_c sigma (no shift, no long-range correction; add
        ``fluid.tail_correction_insert`` to Delta G / epsilon yourself). lam is the global
        context parameter ``parameter`` (default value 1.0: fully coupled).
    softcore_alpha
        Beutler softcore alpha (>= 0; 0 gives plain LJ scaled by lam, singular at r = 0).
    parameter
        Name of the global context parameter (an identifier).
    force_group
        Force group (0..31, not 0) of the softcore force; the fluid's NonbondedForce is group 0.

    Returns
    -------
    system
        N (+1) particles of mass ``fluid.mass_amu``, cubic periodic box.
    positions_nm
        [N(+1), 3] float64 nm: lattice sites (see :func:`lattice_positions`) for all N(+1)
        particles, so the solute starts on a site of its own and no pair is closer than about one
        sigma at liquid densities: states at any lambda, lambda = 1 included, can start from it.
        Minimise and equilibrate before sampling (the lattice is not a liquid).
    box_vectors_nm
        [3, 3] float64 nm, rows are the box vectors (also the system's default box).
    """
    fluid.check_box()
    if not softcore_alpha >= 0 or not math.isfinite(softcore_alpha):
        raise ValueError(f"softcore_alpha must be a finite number >= 0, got {softcore_alpha!r}")
    if not isinstance(parameter, str) or not _PARAMETER_NAME.match(parameter) \
            or parameter in _RESERVED_NAMES:
        raise ValueError(f"parameter must be an identifier other than {sorted(_RESERVED_NAMES)}, "
                         f"got {parameter!r}")
    if not 1 <= int(force_group) <= 31:
        raise ValueError(f"force_group must be in 1..31 (0 holds the fluid), got {force_group}")

    n = fluid.n_particles
    n_total = n + 1 if with_solute else n
    edge = fluid.box_edge_nm
    box = np.eye(3) * edge

    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box))
    for _ in range(n_total):
        system.addParticle(fluid.mass_amu)

    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(fluid.cutoff_nm)
    nonbonded.setUseSwitchingFunction(False)
    nonbonded.setUseDispersionCorrection(False)
    for _ in range(n):
        nonbonded.addParticle(0.0, fluid.sigma_nm, fluid.epsilon_kj_mol)
    if with_solute:
        nonbonded.addParticle(0.0, fluid.sigma_nm, 0.0)
    nonbonded.setForceGroup(0)
    system.addForce(nonbonded)

    if with_solute:
        expression = (
            f"4.0*{fluid.epsilon_kj_mol:.17g}*{parameter}*(1.0/x^2 - 1.0/x);"
            f"x = {softcore_alpha:.17g}*(1.0-{parameter}) + (r/{fluid.sigma_nm:.17g})^6"
        )
        softcore = openmm.CustomNonbondedForce(expression)
        softcore.addGlobalParameter(parameter, 1.0)
        softcore.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        softcore.setCutoffDistance(fluid.cutoff_nm)
        softcore.setUseSwitchingFunction(False)
        softcore.setUseLongRangeCorrection(False)
        for _ in range(n_total):
            softcore.addParticle([])
        softcore.addInteractionGroup([n], list(range(n)))
        softcore.setForceGroup(int(force_group))
        system.addForce(softcore)

    positions = lattice_positions(n_total, edge)
    return system, positions, box


def simulate_fluid(
    fluid: LJFluid,
    n_frames: int,
    steps_per_frame: int,
    equilibration_steps: int,
    timestep_tau: float = 0.005,
    friction_per_tau: float = 1.0,
    platform: str = "CPU",
    threads: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Langevin NVT frames of the pure fluid (no solute) at the state point.

    Minimises the lattice, draws velocities at T, runs ``equilibration_steps`` steps of
    ``LangevinMiddleIntegrator`` (time step ``timestep_tau`` tau, friction
    ``friction_per_tau`` / tau), then records one frame every ``steps_per_frame`` steps.

    Returns
    -------
    positions_nm
        [n_frames, N, 3] float64 nm (unwrapped; :func:`widom_insertion` applies minimum image).
    """
    if n_frames < 1 or steps_per_frame < 1 or equilibration_steps < 0:
        raise ValueError("need n_frames >= 1, steps_per_frame >= 1 and equilibration_steps >= 0, "
                         f"got {n_frames}, {steps_per_frame}, {equilibration_steps}")
    system, positions, _ = build_lj_system(fluid, with_solute=False)
    integrator = openmm.LangevinMiddleIntegrator(
        fluid.temperature_kelvin, friction_per_tau / fluid.tau, timestep_tau * fluid.tau)
    integrator.setRandomNumberSeed(int(seed))
    from ..openmm_platform import platform_and_properties

    context = openmm.Context(system, integrator, *platform_and_properties(platform, threads))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 200)
    context.setVelocitiesToTemperature(fluid.temperature_kelvin, int(seed) + 1)
    if equilibration_steps:
        integrator.step(int(equilibration_steps))
    frames = np.empty((n_frames, fluid.n_particles, 3))
    for k in range(n_frames):
        integrator.step(int(steps_per_frame))
        state = context.getState(getPositions=True)
        frames[k] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return frames


def insertion_energies(
    points_nm: np.ndarray, positions_nm: np.ndarray, box_edge_nm: float, fluid: LJFluid
) -> np.ndarray:
    """LJ energy of a test particle at each point with the fluid, in epsilon (cut off, no tail).

    Parameters
    ----------
    points_nm
        [M, 3] nm test-particle positions.
    positions_nm
        [N, 3] nm fluid positions (any image; minimum image is applied).
    box_edge_nm
        Cubic box edge in nm, at least twice ``fluid.cutoff_nm``.

    Returns
    -------
    [M] float64, sum over fluid particles within r_c of 4 (r^-12 - r^-6) (r in sigma); ``inf`` for
    an exact overlap.
    """
    points = np.asarray(points_nm, dtype=np.float64) / fluid.sigma_nm
    pos = np.asarray(positions_nm, dtype=np.float64) / fluid.sigma_nm
    edge = float(box_edge_nm) / fluid.sigma_nm
    if points.ndim != 2 or points.shape[1] != 3 or pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"expected points [M, 3] and positions [N, 3], got {points.shape} "
                         f"and {pos.shape}")
    if edge < 2.0 * fluid.cutoff:
        raise ValueError(f"box edge {box_edge_nm} nm is smaller than twice the cutoff "
                         f"{fluid.cutoff_nm} nm: minimum image would miss neighbours")
    rc2 = fluid.cutoff**2
    out = np.empty(len(points))
    chunk = max(1, 2_000_000 // max(1, len(pos)))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for start in range(0, len(points), chunk):
            d = points[start:start + chunk, None, :] - pos[None, :, :]  # [m, N, 3]
            d -= edge * np.round(d / edge)
            r2 = np.einsum("mnk,mnk->mn", d, d)
            inv6 = np.where(r2 < rc2, 1.0 / (r2 * r2 * r2), 0.0)
            out[start:start + chunk] = 4.0 * np.sum(inv6 * (inv6 - 1.0), axis=1)
    return out


def widom_insertion(
    positions_nm: np.ndarray,
    box_edge_nm: float,
    fluid: LJFluid,
    n_insertions: int = 1000,
    rng: Union[np.random.Generator, int, None] = None,
    n_blocks: int = 5,
) -> Tuple[float, float]:
    """Excess chemical potential by Widom test-particle insertion, in epsilon.

    For each frame in order, ``n_insertions`` points are drawn as
    ``rng.random((n_insertions, 3)) * box_edge_nm``; with dU from :func:`insertion_energies`,
    ``mu_ex = -T* ln < exp(-dU / T*) > + fluid.tail_correction_insert``.

    Parameters
    ----------
    positions_nm
        [F, N, 3] (or a single frame [N, 3]) nm fluid configurations.
    box_edge_nm
        Cubic box edge in nm.
    fluid
        The state point (T*, rho* for the tail, cutoff, sigma).
    n_insertions
        Test insertions per frame.
    rng
        A ``numpy.random.Generator``, a seed, or None (fresh entropy).
    n_blocks
        Frames are split into this many contiguous blocks (at most F); the standard error is
        that of the block means of exp(-dU/T*), propagated through the logarithm.

    Returns
    -------
    (mu_ex, standard_error) in epsilon; the error is ``nan`` with a single frame.
    """
    frames = np.asarray(positions_nm, dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[2] != 3 or frames.shape[0] < 1:
        raise ValueError(f"positions_nm must be [F, N, 3] or [N, 3] nm, got shape {frames.shape}")
    if not np.all(np.isfinite(frames)):
        raise ValueError("positions_nm contains NaN or inf")
    if n_insertions < 1 or n_blocks < 1:
        raise ValueError(f"n_insertions and n_blocks must be >= 1, got {n_insertions}, {n_blocks}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    t = fluid.temperature
    weights = np.empty(len(frames))  # mean Boltzmann factor per frame
    for k, frame in enumerate(frames):
        points = rng.random((n_insertions, 3)) * box_edge_nm
        du = insertion_energies(points, frame, box_edge_nm, fluid)
        weights[k] = np.mean(np.exp(-du / t))
    mean_w = float(np.mean(weights))
    if not mean_w > 0:
        raise RuntimeError("no test insertion found room (all Boltzmann factors are 0): the fluid "
                           "is too dense for Widom insertion; use more insertions or an "
                           "alchemical route (build_lj_system)")
    mu = -t * math.log(mean_w) + fluid.tail_correction_insert
    nb = min(int(n_blocks), len(frames))
    if nb < 2:
        return mu, float("nan")
    block_means = np.array([np.mean(b) for b in np.array_split(weights, nb)])
    se_w = float(np.std(block_means, ddof=1) / math.sqrt(nb))
    return mu, t * se_w / mean_w


def alchemical_insertion(fluid: LJFluid, out_dir, lambdas=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                         equilibration_tau: float = 25.0, production_tau: float = 370.0,
                         sample_every_tau: float = 0.5, timestep_tau: float = 0.005,
                         friction_per_tau: float = 1.0, platform: str = "CPU", threads: int = 1,
                         workers: int = 1, seed: int = 0, progress: bool = False) -> dict:
    """mu_ex of one LJ particle by alchemical insertion (lambda 0 -> 1) with the sampler and
    estimators used for hydration free energies: every estimator's value in epsilon, tail
    correction included, plus the smallest neighbour overlap. Resumes from ``out_dir``.
    """
    system, positions, box = build_lj_system(fluid)
    settings = SamplingSettings(
        temperature_K=fluid.temperature_kelvin, timestep_fs=timestep_tau * fluid.tau * PS_TO_FS,
        friction_per_ps=friction_per_tau / fluid.tau, equilibration_ps=equilibration_tau * fluid.tau,
        production_ps=production_tau * fluid.tau, sample_every_ps=sample_every_tau * fluid.tau,
        platform=platform, threads=threads, seed=seed, checkpoint_every_samples=50)
    states = [{"lambda_insert": float(x)} for x in lambdas]
    leg = run_leg(prepare_leg(out_dir, system, positions, states, settings, ["lambda_insert"], box),
                  workers=workers, progress=progress, label="LJ insertion")
    res = analyze(leg.u_kln, leg.dudl, leg.lambdas)
    # dG in kT -> epsilon: multiply by T* (kT = T* epsilon)
    out = {name: {"mu_ex": e.value * fluid.temperature + fluid.tail_correction_insert,
                  "err": e.error * fluid.temperature}
           for name, e in res.estimates.items()}
    out["min_neighbour_overlap"] = res.min_neighbour_overlap
    out["decorrelated_samples"] = [int(n) for n in res.n_k]
    return out
