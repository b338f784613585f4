"""The OpenMM ForceField XML of a ligand, written from tleap's prmtop through parmed, and the
check that it reproduces the prmtop's energies (kJ/mol) force by force."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import openmm
from openmm import app, unit

from mlff.errors import ExternalToolError
from mlff.units import FS_TO_PS

from .cache import RESIDUE_NAME

# prmtop and ffxml must give the same energy (kJ/mol) on the built conformer, per force.
_FFXML_ENERGY_TOL = 1e-4

# GAFF's 1-4 scaling (as amber14's): electrostatics divided by 1.2, Lennard-Jones by 2.0.
_GAFF_SCEE, _GAFF_SCNB = 1.2, 2.0


class ParametrizationError(ExternalToolError):
    """The prmtop could not be turned into an OpenMM ForceField XML that reproduces it (a
    parmed/OpenMM conversion problem); the message names the fix."""


def _improper_key(d) -> Optional[Tuple[str, str, str, str]]:
    """Atom types of a prmtop improper (a parmed Dihedral) in tleap's order, central atom
    third. tleap stores an improper reversed when an index would be 0 in a position it flags by
    sign, so the central atom (the one bonded to the other three) can also be second. None if
    there is no centre."""
    atoms = (d.atom1, d.atom2, d.atom3, d.atom4)

    def is_centre(a) -> bool:
        return all(o in a.bond_partners for o in atoms if o is not a)

    if is_centre(atoms[2]):
        return tuple(a.type for a in atoms)
    if is_centre(atoms[1]):
        return tuple(a.type for a in reversed(atoms))
    return None


def write_ffxml(prmtop: Path, inpcrd: Path, ffxml: Path) -> None:
    """OpenMM ForceField XML (+ residue template ``MOL``) at ``ffxml`` from the prmtop, via
    parmed.

    parmed lists every permutation of each improper; OpenMM would then pick an atom order that
    can differ from tleap's, which changes the energy of non-planar centres. Keep only the
    orders tleap used and let OpenMM's ``amber`` improper ordering reproduce them. Raises
    :class:`ParametrizationError` when the prmtop holds more than one residue.
    """
    import parmed

    struct = parmed.load_file(str(prmtop), str(inpcrd))
    if len(struct.residues) != 1:
        raise ParametrizationError(
            f"expected one residue in {prmtop}, found {len(struct.residues)}; the ligand "
            f"must be one molecule (residue {RESIDUE_NAME}): parametrize one molecule at a "
            f"time, and delete the cache entry {prmtop.parent} if it was edited by hand")
    pset = parmed.openmm.OpenMMParameterSet.from_structure(struct)
    keys = [_improper_key(d) for d in struct.dihedrals if d.improper]
    if None not in keys:  # otherwise keep parmed's permutations; the energy check will judge
        used = set(keys)
        for key in list(pset.improper_periodic_types):
            if key not in used:
                del pset.improper_periodic_types[key]
    pset.residues[RESIDUE_NAME] = parmed.modeller.ResidueTemplate.from_residue(struct.residues[0])
    # Written even for molecules without 1-4 pairs (methane), where parmed would otherwise
    # write 1.0 and clash with amber14/tip3p.xml.
    pset.default_scee, pset.default_scnb = _GAFF_SCEE, _GAFF_SCNB
    pset.write(str(ffxml), improper_dihedrals_ordering="amber")


def _energies_by_force(system: openmm.System, positions: unit.Quantity) -> Dict[str, float]:
    """Potential energy (kJ/mol) of each force class at ``positions`` (N Vec3, nm), on the
    Reference platform."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))  # a copy
    names = []
    for i, force in enumerate(system.getForces()):
        force.setForceGroup(i)
        names.append(type(force).__name__)
    ctx = openmm.Context(system, openmm.VerletIntegrator(1.0 * FS_TO_PS),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    out: Dict[str, float] = {}
    for i, name in enumerate(names):
        e = ctx.getState(getEnergy=True, groups={i}).getPotentialEnergy()
        out[name] = out.get(name, 0.0) + e.value_in_unit(unit.kilojoule_per_mole)
    del ctx
    return out


def check_ffxml_matches_prmtop(prmtop: Path, inpcrd: Path, ffxml: Path) -> None:
    """Gas-phase energies from the prmtop and from the ffxml must agree, force by force, within
    1e-4 kJ/mol; else :class:`ParametrizationError`."""
    top = app.AmberPrmtopFile(str(prmtop))
    pos = app.AmberInpcrdFile(str(inpcrd)).getPositions()
    kw = dict(nonbondedMethod=app.NoCutoff, constraints=None, removeCMMotion=False)
    e_top = _energies_by_force(top.createSystem(**kw), pos)
    e_xml = _energies_by_force(app.ForceField(str(ffxml)).createSystem(top.topology, **kw), pos)
    # A force may be missing on one side when it contributes nothing (methane: no torsions).
    if any(abs(e_top.get(k, 0.0) - e_xml.get(k, 0.0)) > _FFXML_ENERGY_TOL
           for k in set(e_top) | set(e_xml)):
        raise ParametrizationError(
            f"the OpenMM XML written from {prmtop.name} does not reproduce its energies "
            f"(kJ/mol, prmtop vs xml): {e_top} vs {e_xml}. This is a parmed/OpenMM conversion "
            f"problem for this molecule: try the other force field (forcefield='gaff' or "
            f"'gaff2') or another conformer, and report it with the SMILES"
        )
