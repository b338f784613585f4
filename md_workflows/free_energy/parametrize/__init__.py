"""Small-molecule parameters without OpenFF: GAFF2 (or GAFF 1.x) + AM1-BCC through AmberTools.

Pipeline (:func:`parametrize_ligand`, in ``pipeline.py``)
    SMILES -> RDKit (explicit hydrogens, ETKDG 3D with a fixed seed, MMFF optimisation, mol file;
    net charge = sum of formal charges), or a molecule file (mol/sdf/mol2 with hydrogens and 3D
    coordinates: that conformer is used as given) -> ``antechamber`` (atom types, AM1-BCC charges
    from ``sqm``; residue name ``MOL``) -> ``parmchk2`` (missing parameters, frcmod) -> ``tleap``
    (prmtop + inpcrd) -> parmed (an OpenMM ForceField XML with a residue template for ``MOL``).

The result is cached on disk (see :func:`default_cache_dir`), keyed by the sha256 of the
canonical SMILES, force field, charge method, conformer (seed, or the file's coordinates) and
:data:`FORMAT_VERSION`; a cache hit runs no AmberTools at all. Entries are built in a temporary
folder next to the cache and renamed into place, so an interrupted run never leaves a
half-written entry.

Builders
    :func:`vacuum_system` -- the ligand alone, no cutoff, from the prmtop.
    :func:`solvated_system` -- the ligand in a cubic TIP3P box (amber14/tip3p.xml + the ligand
    ffxml), PME, dispersion correction, no barostat.
    :func:`ligand_atom_indices` -- the atoms of the ``MOL`` residue (the alchemical region).
    :func:`minimum_box_edge_nm` -- the box-size rule (twice the cutoff, + 0.2 nm under a
    barostat).

Units at this boundary are OpenMM's: nm, kJ/mol, amu (dalton), elementary charges.

Modules: ``cache`` (entry layout, :class:`LigandParameters`, the on-disk cache), ``ambertools``
(finding and running the AmberTools programs), ``molecules`` (RDKit input, conformers,
dihedrals), ``ffxml`` (the OpenMM XML and its energy check), ``systems`` (OpenMM systems) and
``pipeline`` (:func:`parametrize_ligand`).
"""

from .ambertools import (AMBERTOOLS, CHARGE_METHODS, FORCEFIELDS, AmberToolsError,
                         find_ambertools_executable)
from .cache import (FORMAT_VERSION, RESIDUE_NAME, LigandParameters, cache_key,
                    default_cache_dir)
from .ffxml import ParametrizationError
from .molecules import (GAFF_ELEMENTS, MOLECULE_FILE_SUFFIXES, dihedral_matches,
                        ligand_rdkit_molecule, set_dihedrals, write_conformer_file)
from .pipeline import parametrize_ligand
from .systems import (BAROSTAT_MARGIN_NM, ligand_atom_indices, minimum_box_edge_nm,
                      solvated_system, vacuum_system)

__all__ = [
    "AMBERTOOLS", "BAROSTAT_MARGIN_NM", "CHARGE_METHODS", "FORCEFIELDS", "FORMAT_VERSION",
    "GAFF_ELEMENTS", "MOLECULE_FILE_SUFFIXES", "RESIDUE_NAME", "AmberToolsError",
    "LigandParameters", "ParametrizationError", "cache_key", "default_cache_dir",
    "dihedral_matches", "find_ambertools_executable", "ligand_atom_indices",
    "ligand_rdkit_molecule", "minimum_box_edge_nm", "parametrize_ligand", "set_dihedrals",
    "solvated_system", "vacuum_system", "write_conformer_file",
]
