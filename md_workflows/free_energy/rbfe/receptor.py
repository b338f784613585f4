"""A protein (or any residue-template) receptor of an RBFE run: a prepared PDB parametrised by
an OpenMM force field (amber14 by default), next to GAFF2 ligands.

The PDB must be prepared as for any OpenMM simulation: hydrogens present, termini capped or
charged, no missing atoms, non-standard residues covered by the force field files (PDBFixer
or ``Modeller.addHydrogens`` do this). Waters and ions in the file are dropped: the complex
is solvated and neutralised again around receptor and ligands.

Units: nm (OpenMM).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

#: the protein force field when the config names none
DEFAULT_PROTEIN_FORCEFIELD = ("amber14-all.xml",)
#: residue names taken for solvent and dropped from the PDB
SOLVENT_RESIDUES = {"HOH", "WAT", "TIP3", "SOL", "NA", "CL", "K", "Na+", "Cl-", "K+"}


@dataclass(frozen=True)
class ProteinReceptor:
    """A receptor read from a PDB and parametrised by ``forcefield`` (OpenMM ForceField files)."""

    pdb: Path
    forcefield: Tuple[str, ...] = DEFAULT_PROTEIN_FORCEFIELD

    @property
    def name(self) -> str:
        return self.pdb.stem

    def topology_positions(self) -> Tuple[object, np.ndarray]:
        """(OpenMM Topology, positions nm [N, 3]) of the receptor without solvent."""
        import openmm.app as app
        from openmm import unit

        if not self.pdb.exists():
            raise FileNotFoundError(f"receptor pdb {self.pdb} does not exist")
        try:
            pdb = app.PDBFile(str(self.pdb))
        except Exception as exc:  # OpenMM raises plain exceptions for unreadable files
            raise ValueError(f"receptor pdb {self.pdb} could not be read: {exc}") from exc
        modeller = app.Modeller(pdb.topology, pdb.positions)
        solvent = [r for r in modeller.topology.residues() if r.name in SOLVENT_RESIDUES]
        if solvent:
            modeller.delete(solvent)
        if modeller.topology.getNumAtoms() == 0:
            raise ValueError(f"receptor pdb {self.pdb} holds no atoms besides solvent")
        return modeller.topology, np.array(modeller.getPositions().value_in_unit(unit.nanometer))

    def coordinates(self) -> Tuple[np.ndarray, List[int]]:
        """(positions nm [N, 3], atomic numbers [N])."""
        topology, xyz = self.topology_positions()
        return xyz, [a.element.atomic_number for a in topology.atoms()]


def protein_receptor(spec: dict) -> ProteinReceptor:
    """The receptor of a config's ``receptor: {pdb: ..., forcefield: ...}`` entry."""
    # RBFEConfig has made ``forcefield`` a list of file names
    return ProteinReceptor(Path(spec["pdb"]), tuple(spec.get("forcefield") or DEFAULT_PROTEIN_FORCEFIELD))


def template_hint(exc: Exception, receptor: ProteinReceptor) -> ValueError:
    """OpenMM's "No template found for residue ..." with what to do about it."""
    return ValueError(f"{exc} (receptor {receptor.pdb} with {list(receptor.forcefield)}): prepare the PDB "
                      "(hydrogens, capped or charged termini, no missing atoms; PDBFixer or "
                      "Modeller.addHydrogens) or add force field files for its non-standard residues")
