"""Turn an OpenMM System with two ligands into an alchemical-transfer (ATM) System.

:func:`add_atm_force` moves every force whose energy changes when the ligands are displaced
(the nonbonded ones: ligand-environment interactions) into one ``ATMForce``, which evaluates
them at the system's coordinates (u0) and with each ligand atom displaced by its vector (u1),
and leaves in the System the forces that a rigid displacement of a whole ligand does not
change: its bonded terms, and ML forces (TorchForce / PythonForce) on the ligands' atoms (the
mechanical-embedding ML ligand of QuantumBind-RBFE: ligand intramolecular energy from the model,
its interactions with the environment from the MM nonbonded force inside the ATMForce).

A bonded term that joins atoms with different displacements (a covalent ligand, a restraint
added earlier) would change on displacement: it is refused, as is any force type not listed
here, with an error that names it. Restraints belong after this call (they act on the real
coordinates, see :mod:`.restraints`).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Tuple

import numpy as np

from .schedule import ATMState, SoftCore

#: force types that hold the interactions between a ligand and its environment
MOVED_FORCES = frozenset({"NonbondedForce", "CustomNonbondedForce", "GBSAOBCForce", "CustomGBForce",
                          "AmoebaMultipoleForce", "AmoebaVdwForce", "HippoNonbondedForce"})
#: bonded force types with a fixed number of atoms per term -> that number
_ARITY = {"HarmonicBondForce": 2, "CustomBondForce": 2, "HarmonicAngleForce": 3, "CustomAngleForce": 3,
          "PeriodicTorsionForce": 4, "RBTorsionForce": 4, "CustomTorsionForce": 4}
#: bonded force types: unchanged by a rigid displacement when no term spans two displacements
BONDED_FORCES = frozenset(_ARITY) | {"CMAPTorsionForce", "CustomCompoundBondForce"}
#: forces that depend on no ligand displacement: kept as they are
KEPT_FORCES = frozenset({"CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat",
                         "MonteCarloMembraneBarostat", "MonteCarloFlexibleBarostat", "TorchForce", "PythonForce"})


def _bonded_terms(force) -> Iterable[Tuple[int, ...]]:
    """The particle tuples of every term of a bonded force."""
    name = type(force).__name__
    if name == "CMAPTorsionForce":
        for k in range(force.getNumTorsions()):
            yield tuple(force.getTorsionParameters(k)[1:9])
    elif name == "CustomCompoundBondForce":
        for k in range(force.getNumBonds()):
            yield tuple(force.getBondParameters(k)[0])
    else:
        arity = _ARITY[name]
        kind = {2: "Bond", 3: "Angle", 4: "Torsion"}[arity]
        get = getattr(force, f"get{kind}Parameters")
        for k in range(getattr(force, f"getNum{kind}s")()):
            yield tuple(get(k)[:arity])


def _displacement_rows(n_particles: int, displacements: Mapping[int, Sequence[float]]) -> np.ndarray:
    rows = np.zeros((n_particles, 3))
    for index, vector in displacements.items():
        if not 0 <= int(index) < n_particles:
            raise ValueError(f"ATM: displaced atom {index} is not in the system ({n_particles} particles)")
        rows[int(index)] = np.asarray(vector, dtype=float)
    return rows


def add_atm_force(system, displacements: Mapping[int, Sequence[float]], state: ATMState | None = None,
                  soft: SoftCore = SoftCore(), force_group: int = 1) -> int:
    """Move ``system``'s ligand-environment forces into a new ATMForce; returns its index.

    Args:
        system: an ``openmm.System`` (changed in place).
        displacements: atom index -> displacement vector (nm) that ``u1`` applies to it: the
            bound ligand's atoms get +d (site -> solvent), the solvent ligand's -d.
        state: the ATMForce's default parameters (default: leg 1, lambda 0).
        soft: the soft-core parameters. force_group: the ATMForce's force group.

    Raises:
        ValueError: a force type this module does not know, a bonded term that spans atoms
            with different displacements, or a displaced atom outside the system.
    """
    import openmm

    disp = _displacement_rows(system.getNumParticles(), displacements)
    state = state or ATMState(0.0, 0.0)
    moved = []
    for k in range(system.getNumForces()):
        force = system.getForce(k)
        name = _type_name(force)
        if name in MOVED_FORCES:
            moved.append(k)
        elif name in BONDED_FORCES:
            for term in _bonded_terms(force):
                if len({tuple(disp[i]) for i in term}) > 1:
                    raise ValueError(f"ATM: a {name} term joins atoms {list(term)} that are displaced "
                                     "differently (a covalent ligand or a restraint added before the "
                                     "ATMForce); add restraints after add_atm_force")
        elif name == "ATMForce":
            raise ValueError("ATM: the system already has an ATMForce")
        elif name not in KEPT_FORCES:
            raise ValueError(f"ATM: force {name} is not known to be unchanged by a ligand displacement; "
                             f"move it into the ATMForce yourself or remove it (known: "
                             f"{sorted(MOVED_FORCES | BONDED_FORCES | KEPT_FORCES)})")
    if not moved:
        raise ValueError("ATM: the system has no nonbonded force to displace (nothing couples the "
                         "ligands to their environment)")
    atm = openmm.ATMForce(state.lambda1, state.lambda2, state.alpha, state.uh, state.w0, soft.umax,
                          soft.ubcore, soft.acore, float(state.direction))
    for k in moved:
        atm.addForce(openmm.XmlSerializer.clone(system.getForce(k)))
    for k in reversed(moved):
        system.removeForce(k)
    for row in disp:
        atm.addParticle(openmm.Vec3(*row))
    atm.setForceGroup(force_group)
    return system.addForce(atm)


def _type_name(force) -> str:
    """The force's class; a plugin force (openmm-torch's TorchForce) comes back from
    ``System.getForce`` as a plain ``Force``, whose name still says what it is."""
    name = type(force).__name__
    return force.getName() if name == "Force" else name


def set_state(context, state: ATMState) -> None:
    """Set an ATM state's parameters in ``context``."""
    for name, value in state.parameters().items():
        context.setParameter(name, value)


def perturbation_energies(atm, context) -> Tuple[float, float]:
    """``(u0, u1)`` (kJ/mol) of the context's current coordinates (evaluates the energy)."""
    context.getState(getEnergy=True, groups={atm.getForceGroup()})
    u1, u0, _ = atm.getPerturbationEnergy(context)
    return _kj(u0), _kj(u1)


def _kj(quantity) -> float:
    import openmm.unit as unit

    return float(quantity.value_in_unit(unit.kilojoule_per_mole)) if unit.is_quantity(quantity) else float(quantity)
