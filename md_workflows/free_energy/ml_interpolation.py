"""The ML/MM end-state correction's Hamiltonian: an MM System whose solute turns from MM to ML.

    U(lambda) = U_MM(everything else) + (1 - lambda) U_MM(solute intra) + lambda (U_ML(solute) - c)

``U_MM(solute intra)`` is every MM term among the solute's atoms only: its bonds, angles and
torsions, and its intramolecular Coulomb and Lennard-Jones pairs (1-4 pairs with their scaled
parameters). The solute's interactions with the water stay MM at every lambda (mechanical
embedding). ``c`` is a constant (kJ/mol, the same in water and in vacuum, so it cancels from a
hydration free energy) that keeps U_ML - U_MM near zero: the model's energy includes its atomic
reference energies, thousands of kJ/mol.

dU/dlambda = U_ML - c - U_MM(solute intra) is analytic: OpenMM's energy-parameter derivative of
the global parameter :data:`LAMBDA_ML` (``State.getEnergyParameterDerivatives``), never a finite
difference. Route ``torch``: a lambda-scaled TorchForce (from the OpenMM adapter) declares U_ML
and a CustomCVForce holding the solute's MM terms declares the rest. Route ``python`` (and any
plain OpenMM force standing in for the model, as in the exact tests): one CustomCVForce holds
the ML force and the MM terms.

Positions, energies: nm, kJ/mol (OpenMM units).

The recipe travels as a JSON-able *spec* (:func:`model_spec`, :func:`force_spec`) and is applied
by :func:`attach_ml` to the plain MM System in each sampling process, because a System holding a
TorchForce cannot be read back from XML with the openmm-torch 1.5 wheels.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import openmm

from mlff.atomic import file_sha256
from mlff.units import COULOMB_KJ_NM_PER_MOL_E2

#: the global parameter that turns the solute from MM (0) into ML (1)
LAMBDA_ML = "lambda_ml"
#: the constant c of the module docstring, a global parameter (kJ/mol)
OFFSET = "ml_offset"
#: the global parameters :func:`attach_ml` adds to a System
ML_PARAMETERS = (LAMBDA_ML, OFFSET)
_MOVED_BONDED = {"HarmonicBondForce": 2, "HarmonicAngleForce": 3, "PeriodicTorsionForce": 4,
                 "RBTorsionForce": 4}
_IGNORED = {"CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat",
            "MonteCarloFlexibleBarostat", "AndersenThermostat"}


def model_spec(model: str, solute: Sequence[int], numbers: Sequence[int], route: str = "torch",
               device: str = "cpu", dtype: str | None = None, offset_kj_mol: float = 0.0) -> dict:
    """The spec of an mlff model on the solute atoms (``numbers``: their atomic numbers).

    ``model``: ``"default"`` or a model file; stored as an absolute path with its SHA-256.
    """
    from mlff.io import model_path

    path = Path(model_path(model)).resolve()
    if route not in ("torch", "python"):
        raise ValueError(f"route must be 'torch' or 'python', got {route!r}")
    if len(numbers) != len(solute):
        raise ValueError(f"{len(numbers)} atomic numbers for {len(solute)} solute atoms")
    return {"kind": "mlff", "model": str(path), "sha256": file_sha256(path), "route": route,
            "device": device, "dtype": dtype, "atoms": [int(a) for a in solute],
            "numbers": [int(z) for z in numbers], "offset_kj_mol": float(offset_kj_mol)}


def force_spec(force: openmm.Force, solute: Sequence[int], offset_kj_mol: float = 0.0) -> dict:
    """The spec of a plain OpenMM force standing in for the model (it must survive XML, so not
    a TorchForce): for tests with analytic answers."""
    return {"kind": "force", "force_xml": openmm.XmlSerializer.serialize(force),
            "atoms": [int(a) for a in solute], "offset_kj_mol": float(offset_kj_mol)}


def split_solute_intramolecular(system: openmm.System, solute: Sequence[int]) -> list[openmm.Force]:
    """Take the solute's intramolecular MM energy out of ``system`` (in place) into new forces.

    Bonded terms among solute atoms only are copied out and zeroed in place; every solute pair
    of the NonbondedForce becomes a term of a non-periodic CustomBondForce (plain Coulomb and
    Lennard-Jones, the pair's exception parameters where it has one, the force's cutoff and
    switching function on the Lennard-Jones part) and a zero exception in the NonbondedForce.
    With PME the exception removes the pair exactly (direct and reciprocal parts), so the sum
    of the returned forces and the modified System is the original energy to round-off.

    Raises:
        ValueError: a force type touching the solute that is not handled here, reaction-field
            or LJPME nonbonded methods, parameter offsets on solute particles.
    """
    inside = set(int(a) for a in solute)
    moved: list[openmm.Force] = []
    for force in system.getForces():
        name = type(force).__name__
        if name in _MOVED_BONDED:
            out = _move_bonded(force, inside, _MOVED_BONDED[name])
            if out is not None:
                moved.append(out)
        elif name == "NonbondedForce":
            moved.append(_move_nonbonded(force, sorted(inside)))
        elif name not in _IGNORED and _touches(force, inside):
            raise ValueError(f"{name} acts on solute atoms and the ML/MM split does not handle "
                             "it: build the MM System with standard bonded forces and one "
                             "NonbondedForce")
    return moved


def _touches(force: openmm.Force, inside: set[int]) -> bool:
    if hasattr(force, "getNumBonds") and hasattr(force, "getBondParameters"):
        for i in range(force.getNumBonds()):
            atoms = force.getBondParameters(i)[0]
            if any(int(a) in inside for a in atoms):
                return True
        return False
    return True


def _move_bonded(force: openmm.Force, inside: set[int], n_atoms: int) -> openmm.Force | None:
    """Copy the terms whose atoms are all solute atoms into a new force of the same type and
    zero them in ``force``; None when there are none."""
    kind = type(force)
    if n_atoms == 2:
        get, set_, add, n = force.getBondParameters, force.setBondParameters, "addBond", force.getNumBonds()
    elif n_atoms == 3:
        get, set_, add, n = force.getAngleParameters, force.setAngleParameters, "addAngle", force.getNumAngles()
    else:
        get, set_, add, n = force.getTorsionParameters, force.setTorsionParameters, "addTorsion", force.getNumTorsions()
    out = kind()
    found = False
    for i in range(n):
        params = list(get(i))
        atoms, values = params[:n_atoms], params[n_atoms:]
        if not all(int(a) in inside for a in atoms):
            continue
        found = True
        getattr(out, add)(*atoms, *values)
        set_(i, *atoms, *_zeroed(kind.__name__, values))
    return out if found else None


def _zeroed(name: str, values: list) -> list:
    """Term parameters with the energy scale set to zero."""
    if name == "HarmonicBondForce" or name == "HarmonicAngleForce":
        return [values[0], 0.0]
    if name == "PeriodicTorsionForce":
        return [values[0], values[1], 0.0]
    return [0.0] * 6  # RBTorsionForce: c0..c5


def _move_nonbonded(nb: openmm.NonbondedForce, solute: list[int]) -> openmm.CustomBondForce:
    method = nb.getNonbondedMethod()
    if method in (openmm.NonbondedForce.CutoffPeriodic, openmm.NonbondedForce.CutoffNonPeriodic,
                  openmm.NonbondedForce.LJPME):
        raise ValueError("the ML/MM split needs NoCutoff, PME or Ewald electrostatics with "
                         "plain Lennard-Jones (reaction-field and LJPME change the pair "
                         "energies it moves out)")
    for i in range(nb.getNumParticleParameterOffsets()):
        if nb.getParticleParameterOffset(i)[1] in solute:
            raise ValueError("the solute has NonbondedForce parameter offsets (an alchemical "
                             "System?): split the plain MM System")
    exceptions = {}
    for i in range(nb.getNumExceptions()):
        a, b, qq, sig, eps = nb.getExceptionParameters(i)
        exceptions[(min(a, b), max(a, b))] = (qq, sig, eps)
    lj = "4*epsilon*((sigma/r)^12 - (sigma/r)^6)"
    if method != openmm.NonbondedForce.NoCutoff:
        rc = nb.getCutoffDistance().value_in_unit(openmm.unit.nanometer)
        lj = f"step({rc} - r)*sw*{lj}"
        if nb.getUseSwitchingFunction():
            rs = nb.getSwitchingDistance().value_in_unit(openmm.unit.nanometer)
            x = f"((r - {rs})/({rc} - {rs}))"
            sw = f"select(step(r - {rs}), 1 - 10*{x}^3 + 15*{x}^4 - 6*{x}^5, 1)"
        else:
            sw = "1"
        lj = lj.replace("sw*", "") if sw == "1" else f"{lj}; sw = {sw}"
    out = openmm.CustomBondForce(f"{COULOMB_KJ_NM_PER_MOL_E2}*chargeProd/r + {lj}")
    for p in ("chargeProd", "sigma", "epsilon"):
        out.addPerBondParameter(p)
    for a, b in itertools.combinations(solute, 2):
        if (a, b) in exceptions:
            qq, sig, eps = exceptions[(a, b)]
        else:
            qa, sa, ea = nb.getParticleParameters(a)
            qb, sb, eb = nb.getParticleParameters(b)
            qq, sig, eps = qa * qb, 0.5 * (sa + sb), (ea * eb).sqrt()
        qq, sig, eps = (float(qq.value_in_unit(openmm.unit.elementary_charge ** 2)),
                        float(sig.value_in_unit(openmm.unit.nanometer)),
                        float(eps.value_in_unit(openmm.unit.kilojoule_per_mole)))
        if qq != 0.0 or eps != 0.0:
            out.addBond(a, b, [qq, sig, eps])
        nb.addException(a, b, 0.0, 1.0, 0.0, replace=True)
    return out


def attach_ml(system: openmm.System, spec: dict[str, Any]):
    """Turn a plain MM System (in place) into the interpolated System of the module docstring.

    :data:`LAMBDA_ML` defaults to 1 (the ML end state) in every force that reads it (OpenMM
    refuses different defaults); set another value on the Context.

    Returns the adapter's :class:`~mlff.calculators.openmm.MLSystem` for an mlff model (same
    model instance as the force), else None.

    A spec with ``groups`` (:func:`fixed_ml_spec`: ML ligands of an ATM leg, whose MM
    intramolecular terms were removed when the leg was prepared) adds one plain ML force per
    group instead, no interpolation, and returns the first group's MLSystem.
    """
    if spec.get("groups") is not None:
        return _attach_fixed_ml(system, spec)
    solute = spec["atoms"]
    intra = split_solute_intramolecular(system, solute)
    names = [f"mm{i}" for i in range(len(intra))]
    mm = " + ".join(names) if names else "0"
    ml_in_cv = not (spec["kind"] == "mlff" and spec["route"] == "torch")
    ml = None
    if spec["kind"] == "mlff":
        from mlff.calculators.openmm import build_ml_force, build_ml_system

        numbers = np.zeros(system.getNumParticles(), dtype=int)
        numbers[solute] = spec["numbers"]
        _check_model_unchanged(spec)
        common = dict(atoms=solute, periodic=False, route=spec["route"], device=spec["device"],
                      dtype=spec["dtype"])
        # the ML region is one molecule, never periodic: its images are beyond the cutoff
        if ml_in_cv:
            ml = build_ml_force(spec["model"], numbers.tolist(), **common)
        else:
            ml = build_ml_system(spec["model"], numbers.tolist(), system, lambda_name=LAMBDA_ML,
                                 **common)
        ml_force = ml.force if ml_in_cv else None
    else:
        ml_force = openmm.XmlSerializer.deserialize(spec["force_xml"])
    if ml_in_cv:
        expression = f"{LAMBDA_ML}*(ml - {OFFSET}) + (1 - {LAMBDA_ML})*({mm})"
    else:
        expression = f"(1 - {LAMBDA_ML})*({mm}) - {LAMBDA_ML}*{OFFSET}"
    cv = openmm.CustomCVForce(expression)
    cv.addGlobalParameter(LAMBDA_ML, 1.0)  # the TorchForce's default too
    cv.addGlobalParameter(OFFSET, float(spec["offset_kj_mol"]))
    cv.addEnergyParameterDerivative(LAMBDA_ML)
    if ml_in_cv:
        cv.addCollectiveVariable("ml", ml_force)
    for name, force in zip(names, intra):
        cv.addCollectiveVariable(name, force)
    system.addForce(cv)
    return ml


def fixed_ml_spec(model: str, groups: Sequence[Sequence[int]], numbers: Sequence[Sequence[int]], route: str = "torch",
                  device: str = "cpu", dtype: str | None = None) -> dict:
    """The spec of a model that replaces each group's MM intramolecular energy outright (one
    force per group, so that separate molecules never interact through the model); the caller
    removes those MM terms (:func:`split_solute_intramolecular`) before the System is saved."""
    flat = [int(a) for g in groups for a in g]
    spec = model_spec(model, flat, [int(z) for zs in numbers for z in zs], route, device, dtype)
    spec["groups"] = [[int(a) for a in g] for g in groups]
    return spec


def _check_model_unchanged(spec: dict[str, Any]) -> None:
    """The model file is the one the leg was prepared with (its SHA-256)."""
    if file_sha256(spec["model"]) != spec["sha256"]:
        raise ValueError(f"model file {spec['model']} changed since this leg was prepared "
                         "(SHA-256 differs): use the same file or a new output directory")


def _attach_fixed_ml(system: openmm.System, spec: dict[str, Any]):
    from mlff.calculators.openmm import build_ml_system

    _check_model_unchanged(spec)
    by_atom = dict(zip(spec["atoms"], spec["numbers"]))
    first = None
    for group in spec["groups"]:
        numbers = np.zeros(system.getNumParticles(), dtype=int)
        numbers[group] = [by_atom[a] for a in group]
        ml = build_ml_system(spec["model"], numbers.tolist(), system, atoms=group, periodic=False,
                             route=spec["route"], device=spec["device"], dtype=spec["dtype"])
        first = first or ml
    return first


def interpolated_system(mm_system: openmm.System, spec: dict[str, Any]):
    """A copy of ``mm_system`` with :func:`attach_ml` applied; returns (System, MLSystem|None)."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(mm_system))
    return system, attach_ml(system, spec)


def ml_minus_mm(mm_system: openmm.System, spec: dict[str, Any], positions_nm: np.ndarray,
                platform: str = "Reference") -> float:
    """U_ML - U_MM(solute intra) (kJ/mol, with the spec's offset subtracted) at one geometry:
    the analytic dU/dlambda. With ``offset_kj_mol = 0`` on a vacuum geometry this is the
    offset that centres the correction."""
    system, _ = interpolated_system(mm_system, spec)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName(platform))
    context.setPositions(np.asarray(positions_nm))
    state = context.getState(getParameterDerivatives=True)
    return float(state.getEnergyParameterDerivatives()[LAMBDA_ML])
