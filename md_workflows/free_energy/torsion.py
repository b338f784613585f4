"""Conformers that do not interconvert within the sampling: the gas-phase free energy between
torsion basins, and the hydration free energy of the conformer mixture.

Alchemical legs started in one conformer of a molecule with a high torsion barrier (a
carboxylic acid's O=C-O-H) stay there; each then gives the hydration free energy of that
conformer alone, ``dG_hyd[c]``. The molecule's hydration free energy counts every conformer
with its weight in each phase:

    dG_hyd = -kT ln( sum_c exp(-(G_gas[c] + dG_hyd[c]) / kT) / sum_c exp(-G_gas[c] / kT) )

where ``G_gas[c]`` is the gas-phase free energy of conformer basin c (:func:`mix_conformers`).
:func:`torsion_basin_free_energies` computes ``G_gas`` by umbrella sampling along the dihedral
(harmonic restraints on a grid of centres, Langevin dynamics, MBAR with pymbar); in the gas
phase of a small molecule that is seconds to minutes on the Reference platform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import numpy as np

from mlff.units import FS_TO_PS, KJ_PER_KCAL

from .sampling import MOLAR_GAS_CONSTANT_KJ


@dataclass
class TorsionResult:
    """Gas-phase free energies of torsion basins (kcal/mol, relative to the first basin),
    their bootstrap errors, and the potential of mean force on a grid (degrees, kcal/mol)."""

    basin_free_energy_kcal_mol: Dict[str, float]
    basin_error_kcal_mol: Dict[str, float]
    pmf_angle_deg: np.ndarray
    pmf_kcal_mol: np.ndarray
    samples_per_window: int
    centres_deg: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def _dihedral(p: np.ndarray) -> float:
    """Dihedral angle (radians, -pi..pi) of four points ``[4, 3]``."""
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0.dot(b1) * b1, b2 - b2.dot(b1) * b1
    return math.atan2(np.cross(b1, v).dot(w), v.dot(w))


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2.0 * np.pi) - np.pi


def torsion_basin_free_energies(
    system, positions_nm, atoms: Sequence[int], basins: Dict[str, Tuple[float, float]],
    temperature_K: float = 298.15, windows: int = 24, force_constant_kj_mol_rad2: float = 150.0,
    equilibration_steps: int = 2000, samples_per_window: int = 300, steps_per_sample: int = 20,
    timestep_fs: float = 1.0, friction_per_ps: float = 5.0, platform: str = "Reference",
    seed: int = 0, bootstrap: int = 50,
) -> TorsionResult:
    """Free energies of dihedral basins of a (gas-phase) system by umbrella sampling + MBAR.

    Args:
        system: openmm.System (not modified; a copy gets the restraint).
        positions_nm: ``[N, 3]`` start positions (nm).
        atoms: the four atom indices of the dihedral.
        basins: name -> (centre, half width) in degrees; a sample belongs to the first basin
            whose arc holds it. The first basin is the reference (free energy 0).
        windows: restraint centres spread evenly over 360 degrees.
        force_constant_kj_mol_rad2: harmonic restraint ``k/2 (dphi)^2`` (periodic distance).
        samples_per_window, steps_per_sample: the dihedral is recorded every
            ``steps_per_sample`` steps after ``equilibration_steps``.
        bootstrap: resamples (within each window) for the errors.

    Returns a :class:`TorsionResult`. Raises ValueError for bad atoms or basins, and when a
    basin holds no weight (widen it or add windows).
    """
    import openmm
    import pymbar

    if len(atoms) != 4 or len(set(atoms)) != 4:
        raise ValueError(f"a dihedral needs four distinct atoms, got {list(atoms)}")
    if not basins:
        raise ValueError("give at least one basin: {name: (centre_deg, half_width_deg)}")
    for name, (_, half) in basins.items():
        if not 0 < half <= 180:
            raise ValueError(f"basin {name!r}: half width must be in (0, 180] degrees, got {half}")
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    restraint = openmm.CustomTorsionForce(
        "0.5*k_torsion*dp^2; dp = min(d, 6.283185307179586 - d); d = abs(theta - theta0)")
    restraint.addGlobalParameter("k_torsion", 0.0)
    restraint.addGlobalParameter("theta0", 0.0)
    restraint.addTorsion(*[int(a) for a in atoms], [])
    system.addForce(restraint)
    kt = MOLAR_GAS_CONSTANT_KJ * temperature_K
    integrator = openmm.LangevinMiddleIntegrator(temperature_K, friction_per_ps, timestep_fs * FS_TO_PS)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    pos = np.asarray(positions_nm.value_in_unit(openmm.unit.nanometer)
                     if hasattr(positions_nm, "value_in_unit") else positions_nm, dtype=float)
    context.setPositions(pos)
    context.setParameter("k_torsion", force_constant_kj_mol_rad2)
    centres = np.linspace(-np.pi, np.pi, windows, endpoint=False)
    idx = [int(a) for a in atoms]
    samples = np.zeros((windows, samples_per_window))
    for w, centre in enumerate(centres):
        context.setParameter("theta0", float(centre))
        context.setVelocitiesToTemperature(temperature_K, seed + 7 * w)
        integrator.step(equilibration_steps)
        for s in range(samples_per_window):
            integrator.step(steps_per_sample)
            xyz = context.getState(getPositions=True).getPositions(asNumpy=True)._value
            samples[w, s] = _dihedral(np.asarray(xyz)[idx])

    def basin_of(theta: np.ndarray) -> np.ndarray:
        label = np.full(theta.shape, -1)
        for b, (centre, half) in reversed(list(enumerate(basins.values()))):
            d = np.abs(_wrap(theta - math.radians(centre)))
            label[d <= math.radians(half)] = b
        return label

    def analyse(theta_kn: np.ndarray):
        flat = theta_kn.reshape(-1)
        d = np.abs(_wrap(flat[None, :] - centres[:, None]))
        u_kn = 0.5 * force_constant_kj_mol_rad2 * d ** 2 / kt
        n_k = np.full(windows, theta_kn.shape[1])
        mbar = pymbar.MBAR(u_kn, n_k)
        log_w = -pymbar.utils.logsumexp(mbar.f_k[:, None] - u_kn, b=n_k[:, None], axis=0)
        weights = np.exp(log_w - log_w.max())
        weights /= weights.sum()
        labels = basin_of(flat)
        prob = np.array([weights[labels == b].sum() for b in range(len(basins))])
        return prob, flat, weights

    prob, flat, weights = analyse(samples)
    empty = [name for name, p in zip(basins, prob) if p <= 0]
    if empty:
        raise ValueError(f"basins {empty} hold no sampled weight: widen them or add windows")
    g = -kt * np.log(prob / prob[0]) / KJ_PER_KCAL
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(bootstrap):
        pick = rng.integers(0, samples_per_window, size=samples.shape)
        p_b, _, _ = analyse(np.take_along_axis(samples, pick, axis=1))
        if np.all(p_b > 0):
            boot.append(-kt * np.log(p_b / p_b[0]) / KJ_PER_KCAL)
    err = np.std(boot, axis=0) if boot else np.full(len(basins), np.nan)
    edges = np.linspace(-np.pi, np.pi, 37)
    hist, _ = np.histogram(flat, bins=edges, weights=weights)
    with np.errstate(divide="ignore"):
        pmf = -kt * np.log(hist / hist.max()) / KJ_PER_KCAL
    return TorsionResult(
        basin_free_energy_kcal_mol={n: float(v) for n, v in zip(basins, g)},
        basin_error_kcal_mol={n: float(v) for n, v in zip(basins, err)},
        pmf_angle_deg=np.degrees(0.5 * (edges[1:] + edges[:-1])), pmf_kcal_mol=pmf,
        samples_per_window=samples_per_window, centres_deg=np.degrees(centres))


def mix_conformers(dg_hyd_kcal_mol: Dict[str, float], g_gas_kcal_mol: Dict[str, float],
                   temperature_K: float = 298.15,
                   dg_hyd_err: Dict[str, float] | None = None,
                   g_gas_err: Dict[str, float] | None = None) -> Tuple[float, float]:
    """Hydration free energy of a conformer mixture from per-conformer (trapped) values.

    ``dG = -kT ln( sum_c exp(-(G_gas[c] + dG_hyd[c]) / kT) / sum_c exp(-G_gas[c] / kT) )``,
    kcal/mol; the conformers' gas-phase free energies ``G_gas`` may have any common offset.
    Returns (value, error), the error propagated linearly from the inputs' errors (0 if none).
    """
    names = list(dg_hyd_kcal_mol)
    if set(names) != set(g_gas_kcal_mol):
        raise ValueError(f"conformers differ: {sorted(names)} vs {sorted(g_gas_kcal_mol)}")
    kt = MOLAR_GAS_CONSTANT_KJ * temperature_K / KJ_PER_KCAL

    from scipy.special import logsumexp

    def value(h: np.ndarray, g: np.ndarray) -> float:
        return float(-kt * (logsumexp(-(g + h) / kt) - logsumexp(-g / kt)))

    h = np.array([dg_hyd_kcal_mol[n] for n in names], dtype=float)
    g = np.array([g_gas_kcal_mol[n] for n in names], dtype=float)
    v = value(h, g)
    var = 0.0
    for errs, which in ((dg_hyd_err, "h"), (g_gas_err, "g")):
        if not errs:
            continue
        for i, n in enumerate(names):
            step = np.zeros(len(names))
            step[i] = 1e-6
            d = (value(h + step, g) - value(h - step, g)) if which == "h" else (
                value(h, g + step) - value(h, g - step))
            var += (d / 2e-6 * errs.get(n, 0.0)) ** 2
    return v, math.sqrt(var)
