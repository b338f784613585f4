"""Molecule input for the parametrisation: RDKit molecules from SMILES or molecule files, their
checks (one closed-shell molecule of GAFF elements), conformers and dihedral edits.

Coordinates in RDKit and in mol files are in Angstrom; :func:`set_dihedrals` takes and returns
nm (OpenMM's unit). RDKit is imported inside the functions, so importing this module needs none.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from mlff.atomic import atomic_write_text
from mlff.units import NM_TO_ANGSTROM

from .cache import MOL, LigandParameters

if TYPE_CHECKING:
    from rdkit import Chem

#: Elements GAFF/GAFF2 have atom types for.
GAFF_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")

#: Molecule-file suffixes RDKit reads with their coordinates and explicit hydrogens.
MOLECULE_FILE_SUFFIXES = (".mol", ".sdf", ".mol2")


def _molecule_from_smiles(smiles: str) -> "Chem.Mol":
    """RDKit molecule (no hydrogens yet) from ``smiles``, with clear errors for bad input."""
    from rdkit import Chem, rdBase

    if not isinstance(smiles, str) or not smiles.strip():
        raise ValueError(f"invalid SMILES {smiles!r}: give a non-empty SMILES string, e.g. 'CCO'")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None:
        raise ValueError(
            f"invalid SMILES {smiles!r}: RDKit could not parse it; check the syntax (brackets, "
            f"ring closures, valences), e.g. 'CCO' for ethanol"
        )
    if mol.GetNumAtoms() == 0:
        raise ValueError(f"invalid SMILES {smiles!r}: it has no atoms")
    _check_chemistry(mol, f"SMILES {smiles!r}")
    return mol


def _check_chemistry(mol: "Chem.Mol", what: str) -> None:
    """One connected, closed-shell molecule of GAFF elements, or a ValueError naming ``what``."""
    from rdkit import Chem

    n_frag = len(Chem.GetMolFrags(mol))
    if n_frag != 1:
        raise ValueError(
            f"{what} has {n_frag} disconnected fragments; parametrize one molecule "
            f"at a time (counterions are added by solvated_system)"
        )
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms()} - set(GAFF_ELEMENTS))
    if bad:
        raise ValueError(
            f"{what} contains element(s) {', '.join(bad)} that GAFF has no atom types "
            f"for; supported elements: {', '.join(GAFF_ELEMENTS)}"
        )
    radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    if radicals:
        raise ValueError(
            f"{what} has {radicals} unpaired electron(s); AM1-BCC needs a closed-shell "
            f"molecule: add the missing hydrogens or formal charges"
        )


def _molecule_from_file(path: Path) -> "Chem.Mol":
    """RDKit molecule with explicit hydrogens and one 3D conformer, read from ``path``.

    The conformer is used as given (charges are computed on it and the simulations start from
    it), which is how to pick one, e.g. the anti or syn carboxylic acid. Raises ValueError for a
    missing or unreadable file, an unknown suffix, 2D coordinates or missing hydrogens.
    """
    from rdkit import Chem, rdBase

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in MOLECULE_FILE_SUFFIXES:
        raise ValueError(f"molecule file {path} has suffix {path.suffix!r}; give one of "
                         f"{', '.join(MOLECULE_FILE_SUFFIXES)} (or a SMILES instead)")
    if not path.is_file():
        raise ValueError(f"molecule file {path} does not exist")
    with rdBase.BlockLogs():
        if suffix == ".mol2":
            mol = Chem.MolFromMol2File(str(path), removeHs=False)
        else:
            supplier = Chem.SDMolSupplier(str(path), removeHs=False)
            mol = next(iter(supplier), None) if len(supplier) else None
    if mol is None:
        raise ValueError(f"RDKit could not read a molecule from {path}: check the file format "
                         "(bond orders, valences, charges)")
    what = f"molecule file {path}"
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        raise ValueError(f"{what} has no 3D coordinates; give a 3D conformer (or a SMILES, "
                         "from which one is generated)")
    xyz = mol.GetConformer().GetPositions()  # [n_atoms, 3] Angstrom
    if np.ptp(xyz, axis=0).max() == 0.0 and mol.GetNumAtoms() > 1:
        raise ValueError(f"{what} has all atoms at one point; give real 3D coordinates")
    missing = sum(a.GetNumImplicitHs() for a in mol.GetAtoms())
    if missing:
        raise ValueError(f"{what} lacks {missing} hydrogen atom(s); write the file with "
                         "explicit hydrogens at their 3D positions (e.g. RDKit Chem.AddHs("
                         "mol, addCoords=True)) or give a SMILES")
    _check_chemistry(mol, what)
    return mol


def dihedral_matches(mol: "Chem.Mol", smarts: str) -> List[Tuple[int, int, int, int]]:
    """Atom-index quadruples of ``mol`` matched by a SMARTS with atoms mapped 1 to 4
    (``[O:1]=[C:2]-[O:3]-[H:4]``), in map order. Raises ValueError for an invalid SMARTS, one
    without four mapped atoms, or no match."""
    from rdkit import Chem

    query = Chem.MolFromSmarts(smarts)
    if query is None:
        raise ValueError(f"invalid SMARTS {smarts!r} in dihedrals")
    order = sorted((a.GetAtomMapNum(), a.GetIdx()) for a in query.GetAtoms() if a.GetAtomMapNum())
    if [m for m, _ in order] != [1, 2, 3, 4]:
        raise ValueError(f"dihedral SMARTS {smarts!r} must map atoms 1 to 4, e.g. "
                         "'[O:1]=[C:2]-[O:3]-[H:4]'")
    matches = mol.GetSubstructMatches(query, uniquify=False)
    if not matches:
        raise ValueError(f"dihedral SMARTS {smarts!r} matches nothing in "
                         f"{Chem.MolToSmiles(Chem.RemoveHs(mol))!r}")
    return [tuple(match[i] for _, i in order) for match in matches]


def ligand_rdkit_molecule(params: LigandParameters) -> "Chem.Mol":
    """The RDKit molecule (hydrogens, 3D) that the parameters were built from; its atom order
    is the order of the ligand's atoms in the prmtop, the ffxml template and every system."""
    from rdkit import Chem

    mol = Chem.MolFromMolFile(str(params.directory / MOL), removeHs=False)
    if mol is None:
        raise ValueError(f"RDKit cannot read {params.directory / MOL}; rebuild the cache entry")
    return mol


def set_dihedrals(params: LigandParameters, positions_nm: np.ndarray,
                  dihedrals: Dict[str, float]) -> np.ndarray:
    """Ligand positions with the torsions matched by each SMARTS set to the given degrees.

    ``positions_nm``: ``[n_ligand_atoms, 3]`` in the parameters' atom order. The side of the
    bond that holds atom 4 is rotated rigidly (RDKit SetDihedralDeg); nothing is minimised, so a
    start conformer can differ from the one the charges were computed on (e.g. syn acetic acid
    with anti charges). Returns a new ``[n, 3]`` array (nm).
    """
    from rdkit.Chem import rdMolTransforms
    from rdkit.Geometry import Point3D

    mol = ligand_rdkit_molecule(params)
    pos = np.array(positions_nm, dtype=float)
    if pos.shape != (mol.GetNumAtoms(), 3):
        raise ValueError(f"positions have shape {pos.shape}; the ligand has "
                         f"{mol.GetNumAtoms()} atoms")
    conf = mol.GetConformer()
    for i, xyz in enumerate(pos * NM_TO_ANGSTROM):
        conf.SetAtomPosition(i, Point3D(*xyz))
    for smarts, angle in dihedrals.items():
        for atoms in dihedral_matches(mol, smarts):
            rdMolTransforms.SetDihedralDeg(conf, *atoms, float(angle))
    return conf.GetPositions() / NM_TO_ANGSTROM


def _embed(mol: "Chem.Mol", seed: int, what: str, random_coords_fallback: bool = False) -> None:
    """ETKDGv3 3D coordinates for ``mol`` (with hydrogens) from ``seed``, in place; ValueError
    naming ``what`` when RDKit cannot embed it (after random start coordinates, if asked)."""
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) >= 0:
        return
    if random_coords_fallback:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) >= 0:
            return
    raise ValueError(f"RDKit could not generate 3D coordinates for {what} with seed {seed}; "
                     "try another seed")


def write_conformer_file(smiles: str, path: str | Path,
                         dihedrals: Optional[Dict[str, float]] = None, seed: int = 0) -> Path:
    """Write a 3D conformer of ``smiles`` (with hydrogens) as an MDL mol file (Angstrom) for
    ``parametrize_ligand(molecule_file=...)``.

    ``dihedrals`` maps a SMARTS with four mapped atoms (``[O:1]=[C:2]-[O:3]-[H:4]``) to the
    angle (degrees) that every match is set to and held at during the MMFF94 optimisation,
    e.g. ``{"[O:1]=[C:2]-[O:3]-[H:4]": 180.0}`` for an anti carboxylic acid. ETKDGv3 with
    ``seed`` gives the rest. Raises ValueError when a SMARTS is invalid, has not four mapped
    atoms or matches nothing. The file is written atomically.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Chem import rdMolTransforms

    mol = Chem.AddHs(_molecule_from_smiles(smiles))
    _embed(mol, seed, repr(smiles))
    torsions = []
    for smarts, angle in (dihedrals or {}).items():
        for atoms in dihedral_matches(mol, smarts):
            rdMolTransforms.SetDihedralDeg(mol.GetConformer(), *atoms, float(angle))
            torsions.append((atoms, float(angle)))
    props = AllChem.MMFFGetMoleculeProperties(mol)
    if props is None:
        raise ValueError(f"MMFF94 has no parameters for {smiles!r}; give a molecule file instead")
    ff = AllChem.MMFFGetMoleculeForceField(mol, props)
    for atoms, angle in torsions:
        ff.MMFFAddTorsionConstraint(*atoms, False, angle, angle, 1.0e4)
    ff.Minimize(maxIts=5000)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, Chem.MolToMolBlock(mol))
    return path


def _conformer_digest(mol: "Chem.Mol") -> str:
    """sha256 of the element sequence and coordinates (1e-4 Angstrom) of ``mol``."""
    xyz = np.round(mol.GetConformer().GetPositions(), 4) + 0.0  # + 0.0: no negative zeros
    payload = json.dumps({"elements": [a.GetSymbol() for a in mol.GetAtoms()],
                          "xyz": xyz.tolist()})
    return hashlib.sha256(payload.encode()).hexdigest()


def _write_3d_molfile(mol: "Chem.Mol", path: Path, seed: int) -> None:
    """Add hydrogens, embed with ETKDGv3 (``seed``), optimise with MMFF94 (UFF if MMFF lacks
    parameters) and write an MDL mol file (Angstrom)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    molh = Chem.AddHs(mol)
    _embed(molh, seed, repr(Chem.MolToSmiles(mol)), random_coords_fallback=True)
    if AllChem.MMFFHasAllMoleculeParams(molh):
        AllChem.MMFFOptimizeMolecule(molh, maxIters=2000)
    elif AllChem.UFFHasAllMoleculeParams(molh):
        AllChem.UFFOptimizeMolecule(molh, maxIters=2000)
    Chem.MolToMolFile(molh, str(path))
