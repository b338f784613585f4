"""The solvated receptor + two ligands system of a relative ATM run (host-guest or small
receptors parametrised like ligands: GAFF2/AM1-BCC through :mod:`..parametrize`; proteins from
a prepared PDB with an OpenMM force field, :mod:`.receptor`).

Every molecule's OpenMM ForceField XML is written by the ligand pipeline with the same residue
name (``MOL``) and GAFF's atom type names, so several of them cannot be loaded together: each
copy here gets its own residue name and its types (and the classes its parameters refer to)
a per-molecule prefix, which keeps every molecule's parameters exactly as they were. Ligand A
is placed in the site (its given pose), ligand B in the same site pose shifted by the
displacement ``d`` into the solvent; then TIP3P fills the box.

Units: nm (OpenMM).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

#: residue names of the three molecules in the complex
RESIDUES = {"receptor": "REC", "ligand_a": "LGA", "ligand_b": "LGB"}
_TYPE_ATTRIBUTES = {"type", "class"} | {f"{k}{i}" for k in ("type", "class") for i in range(1, 5)}


def prefixed_ffxml(source: Path, target: Path, residue: str, prefix: str) -> Path:
    """Copy a one-residue ForceField XML with its residue renamed and every atom type and class
    prefixed (``ca`` -> ``LGA-ca``); empty (wildcard) classes stay empty."""
    tree = ET.parse(str(source))
    root = tree.getroot()
    residues = root.findall("./Residues/Residue")
    if len(residues) != 1:
        raise ValueError(f"{source}: expected one residue template, found {len(residues)}")
    residues[0].set("name", residue)
    for element in root.iter():
        if element.tag == "Type" and "name" in element.attrib:
            element.set("name", prefix + element.get("name"))
        for attribute in _TYPE_ATTRIBUTES & set(element.attrib):
            if element.get(attribute):
                element.set(attribute, prefix + element.get(attribute))
    target.parent.mkdir(parents=True, exist_ok=True)
    tree.write(str(target))
    return target


@dataclass
class ATMComplex:
    """The complex: topology, System (no ATMForce yet), positions (nm, [N, 3]), the atom
    indices of each molecule, the displacement (nm) and the ForceField files used."""

    topology: object
    system: object
    positions_nm: np.ndarray
    atoms: Dict[str, List[int]]
    displacement_nm: np.ndarray
    ffxml: List[Path]


def _molecule(params, positions_nm=None):
    """(topology, positions nm) of one parametrised molecule (its own conformer by default)."""
    import openmm.app as app
    from openmm import unit

    topology = app.AmberPrmtopFile(str(params.prmtop)).topology
    if positions_nm is None:
        positions_nm = np.array(app.AmberInpcrdFile(str(params.inpcrd)).getPositions().value_in_unit(unit.nanometer))
    positions_nm = np.asarray(positions_nm, dtype=float)
    if positions_nm.shape != (topology.getNumAtoms(), 3):
        raise ValueError(f"{params.name}: {positions_nm.shape[0]} positions for {topology.getNumAtoms()} atoms")
    return topology, positions_nm


def build_complex(receptor, ligand_a, ligand_b, displacement_nm: Sequence[float], work_dir: Path,
                  receptor_nm=None, pose_a_nm=None, pose_b_nm=None, padding_nm: float = 1.0,
                  nonbonded_cutoff_nm: float = 0.9, hydrogen_mass_amu: float | None = None,
                  constraints="HBonds") -> ATMComplex:
    """Receptor, ligand A in the site and ligand B at its site pose + ``displacement_nm``, in
    TIP3P (PME, dispersion correction).

    Args:
        receptor, ligand_a, ligand_b: :class:`..parametrize.cache.LigandParameters` (from
            :func:`..parametrize.pipeline.parametrize_ligand`, e.g. with ``molecule_file=`` to
            keep a docked pose and its atom order); the receptor may instead be a
            :class:`.receptor.ProteinReceptor` (its residues keep their names and templates).
        displacement_nm: the ATM displacement d (nm), long enough to put B well into the
            solvent (about 2-3 nm beyond the receptor).
        receptor_nm, pose_a_nm, pose_b_nm: coordinates (nm) to use instead of each molecule's
            own conformer: the receptor, and both ligands posed in the site.
        work_dir: where the prefixed ForceField files go.
        padding_nm: solvent padding around the solutes (OpenMM's Modeller).
        hydrogen_mass_amu: hydrogen mass repartitioning (e.g. 4.0 for 4 fs with HBonds).
    """
    import openmm.app as app
    from openmm import unit

    from .receptor import ProteinReceptor, template_hint

    d = np.asarray(displacement_nm, dtype=float).reshape(3)
    work_dir = Path(work_dir)
    files, parts, protein_ff = [], [], []
    for key, params, coords in (("receptor", receptor, receptor_nm), ("ligand_a", ligand_a, pose_a_nm),
                                ("ligand_b", ligand_b, pose_b_nm)):
        if isinstance(params, ProteinReceptor):
            topology, xyz = params.topology_positions()
            if coords is not None:
                xyz = np.asarray(coords, dtype=float)
            protein_ff = list(params.forcefield)
            parts.append((key, topology, xyz))
            continue
        residue = RESIDUES[key]
        files.append(prefixed_ffxml(Path(params.ffxml), work_dir / f"{residue}.xml", residue, f"{residue}-"))
        topology, xyz = _molecule(params, coords)
        for r in topology.residues():
            r.name = residue
        parts.append((key, topology, xyz + (d if key == "ligand_b" else 0.0)))
    modeller = app.Modeller(app.Topology(), [] * unit.nanometer)
    atoms: Dict[str, List[int]] = {}
    for key, topology, xyz in parts:
        start = modeller.topology.getNumAtoms()
        modeller.add(topology, xyz * unit.nanometer)
        atoms[key] = list(range(start, start + topology.getNumAtoms()))
    forcefield = app.ForceField(*protein_ff, "amber14/tip3p.xml", *[str(f) for f in files])
    constraint = {"None": None, "HBonds": app.HBonds, "AllBonds": app.AllBonds}[str(constraints)]
    try:
        modeller.addSolvent(forcefield, model="tip3p", padding=padding_nm * unit.nanometer, neutralize=True)
        system = forcefield.createSystem(
            modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=nonbonded_cutoff_nm * unit.nanometer,
            constraints=constraint, rigidWater=True, useDispersionCorrection=True,
            hydrogenMass=None if hydrogen_mass_amu is None else hydrogen_mass_amu * unit.amu)
    except ValueError as exc:
        if isinstance(receptor, ProteinReceptor) and "template" in str(exc):
            raise template_hint(exc, receptor) from exc
        raise
    positions = np.array(modeller.getPositions().value_in_unit(unit.nanometer))
    _check_box(system, positions, atoms, d, nonbonded_cutoff_nm)
    return ATMComplex(modeller.topology, system, positions, atoms, d, files)


def _check_box(system, positions: np.ndarray, atoms: Dict[str, List[int]], d: np.ndarray, cutoff_nm: float) -> None:
    """The displaced ligand must stay beyond the cutoff of the receptor and of its periodic images."""
    box = np.array([[v.x, v.y, v.z] for v in system.getDefaultPeriodicBoxVectors()])
    receptor = positions[atoms["receptor"]]
    ligand_b = positions[atoms["ligand_b"]]
    lengths = np.diag(box)
    delta = ligand_b[:, None, :] - receptor[None, :, :]
    delta -= lengths * np.round(delta / lengths)
    closest = float(np.sqrt((delta ** 2).sum(-1)).min())
    if closest < cutoff_nm:
        raise ValueError(f"ATM: ligand B displaced by {d.tolist()} nm comes within {closest:.2f} nm of the "
                         f"receptor (periodic images included); use a longer displacement or more padding "
                         f"than the {cutoff_nm} nm cutoff")


def site_atoms(positions_nm: np.ndarray, receptor: Sequence[int], ligand: Sequence[int],
               radius_nm: float = 0.6) -> List[int]:
    """Receptor atoms within ``radius_nm`` of the ligand's centroid: the site's reference group
    for :func:`.restraints.add_centroid_restraint` (at least three)."""
    centre = positions_nm[list(ligand)].mean(axis=0)
    chosen = [int(i) for i in receptor if np.linalg.norm(positions_nm[i] - centre) < radius_nm]
    if len(chosen) < 3:
        raise ValueError(f"only {len(chosen)} receptor atoms within {radius_nm} nm of the ligand: "
                         "is the ligand in the site? pass a larger radius")
    return chosen


def displacement_map(atoms: Dict[str, List[int]], d: np.ndarray) -> Dict[int, Tuple[float, float, float]]:
    """The ATMForce displacements: +d for ligand A (site -> solvent), -d for ligand B."""
    out = {i: tuple(d) for i in atoms["ligand_a"]}
    out.update({i: tuple(-d) for i in atoms["ligand_b"]})
    return out
