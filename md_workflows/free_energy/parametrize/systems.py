"""OpenMM systems of a parameterised ligand: alone in vacuum, or in a cubic TIP3P box.

Units at this boundary are OpenMM's: nm, kJ/mol, amu (dalton), elementary charges.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import openmm
from openmm import app, unit

from ..periodic_box import BAROSTAT_MARGIN_NM, minimum_box_edge_nm
from .cache import RESIDUE_NAME, LigandParameters

__all__ = ["BAROSTAT_MARGIN_NM", "ligand_atom_indices", "minimum_box_edge_nm",
           "solvated_system", "vacuum_system"]


def _hydrogen_mass(hydrogen_mass_amu: Optional[float]) -> Optional[unit.Quantity]:
    """OpenMM's ``hydrogenMass`` argument (amu Quantity) or None for natural masses."""
    if hydrogen_mass_amu is None:
        return None
    if not hydrogen_mass_amu > 0:
        raise ValueError(f"hydrogen_mass_amu must be positive (e.g. 3.0 or 4.0), got "
                         f"{hydrogen_mass_amu!r}; pass None for natural masses")
    return float(hydrogen_mass_amu) * unit.amu


def _check_repartitioned_masses(topology: app.Topology, system: openmm.System,
                                hydrogen_mass_amu: Optional[float]) -> None:
    """Repartitioning must not leave a heavy atom lighter than its hydrogens (e.g. methane's
    carbon with 4 amu hydrogens keeps 0.05 amu)."""
    if hydrogen_mass_amu is None:
        return
    for atom in topology.atoms():
        if atom.element is None or atom.element.symbol == "H":
            continue
        m = system.getParticleMass(atom.index).value_in_unit(unit.amu)
        if 0 < m < hydrogen_mass_amu:
            raise ValueError(
                f"hydrogen_mass_amu={hydrogen_mass_amu} leaves atom {atom.name} of residue "
                f"{atom.residue.name} with {m:.3f} amu, lighter than its hydrogens; use a "
                f"smaller hydrogen mass (e.g. 3.0)"
            )


def vacuum_system(params: LigandParameters, constraints=app.HBonds,
                  hydrogen_mass_amu: Optional[float] = None
                  ) -> Tuple[app.Topology, openmm.System, unit.Quantity]:
    """The ligand alone in vacuum (no cutoff, no periodic box), from the prmtop.

    Parameters
    ----------
    params
        From :func:`parametrize_ligand`.
    constraints
        ``None``, ``app.HBonds``, ``app.AllBonds`` or ``app.HAngles``.
    hydrogen_mass_amu
        Hydrogen mass (amu) for hydrogen mass repartitioning, e.g. 3.0 or 4.0 (mass taken from
        the bonded heavy atom; total mass unchanged); ``None`` keeps natural masses.

    Returns
    -------
    topology, system, positions
        Topology from the prmtop (one residue ``MOL``), the System (CMMotionRemover included)
        and the tleap coordinates as a Quantity list of N Vec3 in nm.
    """
    prmtop = app.AmberPrmtopFile(str(params.prmtop))
    positions = app.AmberInpcrdFile(str(params.inpcrd)).getPositions()
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=constraints,
                                 hydrogenMass=_hydrogen_mass(hydrogen_mass_amu))
    _check_repartitioned_masses(prmtop.topology, system, hydrogen_mass_amu)
    return prmtop.topology, system, positions


def _check_box(edge_nm: float, ligand_diameter_nm: float, cutoff_nm: float,
               padding_nm: Optional[float]) -> None:
    """The fixed-box rule of :func:`minimum_box_edge_nm`; and the ligand must not see its own
    image within the cutoff (edge - diameter >= cutoff). All lengths in nm."""
    how = f"from padding_nm={padding_nm}" if padding_nm is not None else "(box_edge_nm)"
    if edge_nm < minimum_box_edge_nm(cutoff_nm, barostat=False):
        raise ValueError(
            f"the box edge {edge_nm:.3f} nm {how} is less than twice nonbonded_cutoff_nm="
            f"{cutoff_nm}; enlarge the box or shorten the cutoff"
        )
    if edge_nm - ligand_diameter_nm < cutoff_nm:
        raise ValueError(
            f"the ligand ({ligand_diameter_nm:.2f} nm across) would be within the {cutoff_nm} nm "
            f"cutoff of its own periodic image in a {edge_nm:.2f} nm box {how}; use a box edge "
            f"of at least {ligand_diameter_nm + cutoff_nm:.2f} nm or padding_nm >= {cutoff_nm}"
        )


def _box_arguments(box_edge_nm: Optional[float], padding_nm: Optional[float],
                   cutoff_nm: float) -> dict:
    """Keyword arguments of ``Modeller.addSolvent`` for a fixed edge or a padding (nm); checks
    the values before anything is read or solvated."""
    if not cutoff_nm > 0:
        raise ValueError(f"nonbonded_cutoff_nm must be positive, got {cutoff_nm!r}")
    if padding_nm is not None:
        if not padding_nm > 0:
            raise ValueError(f"padding_nm must be positive, got {padding_nm!r}")
        return dict(padding=padding_nm * unit.nanometer, boxShape="cube")
    if box_edge_nm is None:
        raise ValueError("give box_edge_nm (cubic box edge, nm) or padding_nm (nm), not neither")
    if not box_edge_nm >= minimum_box_edge_nm(cutoff_nm, barostat=False):
        raise ValueError(
            f"box_edge_nm={box_edge_nm} is less than twice nonbonded_cutoff_nm="
            f"{cutoff_nm} (PME minimum image); enlarge the box or shorten the cutoff"
        )
    return dict(boxSize=openmm.Vec3(box_edge_nm, box_edge_nm, box_edge_nm) * unit.nanometer)


def solvated_system(params: LigandParameters, box_edge_nm: Optional[float] = 2.5,
                    padding_nm: Optional[float] = None, nonbonded_cutoff_nm: float = 0.9,
                    constraints=app.HBonds, hydrogen_mass_amu: Optional[float] = None,
                    rigid_water: bool = True, ewald_tolerance: float = 5e-4,
                    neutralize: bool = True
                    ) -> Tuple[app.Topology, openmm.System, unit.Quantity]:
    """The ligand in a cubic box of TIP3P water: PME, dispersion correction, no barostat.

    Force field: ``amber14/tip3p.xml`` (water and Joung-Cheatham ions) + ``params.ffxml``.
    The box is checked as a fixed box (edge >= 2 cutoff, see :func:`minimum_box_edge_nm`); to
    run it under a barostat, use an edge of at least ``minimum_box_edge_nm(cutoff)``.

    Parameters
    ----------
    params
        From :func:`parametrize_ligand`.
    box_edge_nm
        Edge of the cubic box (nm). Ignored when ``padding_nm`` is given.
    padding_nm
        Instead of a fixed box (OpenMM's padding): edge = max(ligand diameter + padding,
        2 * padding) in nm, so no ligand atom comes closer than ``padding_nm`` to an atom of
        its periodic image.
    nonbonded_cutoff_nm
        Real-space cutoff (nm) for PME and Lennard-Jones; at most half the box edge.
    constraints
        ``None``, ``app.HBonds``, ``app.AllBonds`` or ``app.HAngles``.
    hydrogen_mass_amu
        Hydrogen mass (amu) for hydrogen mass repartitioning, e.g. 3.0 or 4.0; rigid waters are
        left alone. ``None`` keeps natural masses.
    rigid_water
        Rigid TIP3P (SETTLE) regardless of ``constraints``.
    ewald_tolerance
        PME error tolerance (relative force error).
    neutralize
        Add Na+ or Cl- counterions so the box is neutral (only for charged ligands).

    Returns
    -------
    topology, system, positions
        Topology (residue ``MOL``, waters ``HOH``, ions ``NA``/``CL``) with periodic box
        vectors, the System (also carrying the box) and positions as a Quantity in nm.
    """
    box_kw = _box_arguments(box_edge_nm, padding_nm, nonbonded_cutoff_nm)
    prmtop = app.AmberPrmtopFile(str(params.prmtop))
    ligand_positions = app.AmberInpcrdFile(str(params.inpcrd)).getPositions()
    lig = np.array(ligand_positions.value_in_unit(unit.nanometer))  # [n_ligand, 3] nm
    diameter = float(np.max(np.linalg.norm(lig[:, None] - lig[None], axis=-1)))

    forcefield = app.ForceField("amber14/tip3p.xml", str(params.ffxml))
    modeller = app.Modeller(prmtop.topology, ligand_positions)
    if padding_nm is None:  # fail before solvating
        _check_box(box_edge_nm, diameter, nonbonded_cutoff_nm, padding_nm)
    modeller.addSolvent(forcefield, model="tip3p", neutralize=neutralize, **box_kw)
    lengths = np.array(modeller.topology.getUnitCellDimensions().value_in_unit(unit.nanometer))
    _check_box(float(lengths.min()), diameter, nonbonded_cutoff_nm, padding_nm)

    # Waters fill a box centred on the ligand; shift everything so the ligand sits at the box
    # centre and the coordinates lie in [0, L] (nicer for viewers; energies are unchanged).
    xyz = np.array(modeller.getPositions().value_in_unit(unit.nanometer))  # [n_atoms, 3] nm
    xyz += lengths / 2 - (lig.max(axis=0) + lig.min(axis=0)) / 2
    positions = unit.Quantity([openmm.Vec3(*map(float, r)) for r in xyz], unit.nanometer)

    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.PME,
        nonbondedCutoff=nonbonded_cutoff_nm * unit.nanometer, constraints=constraints,
        rigidWater=rigid_water, ewaldErrorTolerance=ewald_tolerance,
        hydrogenMass=_hydrogen_mass(hydrogen_mass_amu), useDispersionCorrection=True,
    )
    _check_repartitioned_masses(modeller.topology, system, hydrogen_mass_amu)
    return modeller.topology, system, positions


def ligand_atom_indices(topology: app.Topology, residue_name: str = RESIDUE_NAME) -> List[int]:
    """Indices (0-based, topology order) of the atoms of the one residue named ``residue_name``.

    Raises ValueError if there is no such residue or more than one (ambiguous alchemical region).
    """
    residues = [r for r in topology.residues() if r.name == residue_name]
    if len(residues) != 1:
        names = sorted({r.name for r in topology.residues()})
        raise ValueError(
            f"expected exactly one residue named {residue_name!r}, found {len(residues)}; "
            f"residue names present: {', '.join(names)}"
        )
    return [a.index for a in residues[0].atoms()]
