"""The parametrisation pipeline: validate the input, then return the cached entry or build it
(RDKit mol file -> antechamber/parmchk2/tleap -> ffxml, checked against the prmtop)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional

import openmm

from mlff.atomic import atomic_write_text

from .ambertools import CHARGE_METHODS, FORCEFIELDS, build_amber_files, tool_paths
from .cache import (FFXML, FORMAT_VERSION, FRCMOD, INPCRD, METADATA, MOL, MOL2, PRMTOP,
                    RESIDUE_NAME, LigandParameters, cache_key, cached_or_built, default_cache_dir)
from .ffxml import check_ffxml_matches_prmtop, write_ffxml
from .molecules import (_conformer_digest, _molecule_from_file, _molecule_from_smiles,
                        _write_3d_molfile)

if TYPE_CHECKING:
    from rdkit import Chem

#: Files copied from the scratch folder into a cache entry (metadata.json is written after).
_PRODUCTS = (MOL, MOL2, FRCMOD, PRMTOP, INPCRD, FFXML, "tleap.in",
             "antechamber.log", "parmchk2.log", "tleap.log")


def _build_entry(mol: "Chem.Mol", canonical: str, forcefield: str, charge_method: str,
                 seed: int, net_charge: int, staging: Path,
                 conformer: Optional[str] = None) -> None:
    """Run the pipeline in a scratch folder and copy the products into ``staging``.

    ``conformer`` None: ``mol`` has no hydrogens and a conformer is generated from ``seed``;
    else ``mol`` is a molecule file's (hydrogens, 3D) and ``conformer`` its digest.
    """
    from rdkit import Chem

    with tempfile.TemporaryDirectory(prefix="mlff-ligand-") as tmp:
        work = Path(tmp)
        if conformer is None:
            _write_3d_molfile(mol, work / MOL, seed)
        else:
            Chem.MolToMolFile(mol, str(work / MOL))
        build_amber_files(work, forcefield, charge_method, net_charge)
        write_ffxml(work / PRMTOP, work / INPCRD, work / FFXML)
        check_ffxml_matches_prmtop(work / PRMTOP, work / INPCRD, work / FFXML)
        for f in _PRODUCTS:
            shutil.copy2(work / f, staging / f)
    meta = {
        "format_version": FORMAT_VERSION, "smiles": canonical, "forcefield": forcefield,
        "charge_method": charge_method, "seed": None if conformer else seed,
        "conformer": conformer or f"RDKit ETKDGv3 seed {seed} + MMFF94",
        "net_charge": net_charge, "residue_name": RESIDUE_NAME, "tools": tool_paths(),
        "versions": {"openmm": openmm.__version__, **_versions()},
    }
    # Written last: an entry without metadata.json is never used.
    atomic_write_text(staging / METADATA, json.dumps(meta, indent=2) + "\n")


def _versions() -> Dict[str, str]:
    import parmed
    import rdkit

    return {"rdkit": rdkit.__version__, "parmed": str(parmed.__version__)}


def _validate_choice(value: str, valid: Dict[str, object], what: str) -> str:
    if not isinstance(value, str) or value.lower() not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value.lower()


def parametrize_ligand(smiles: Optional[str] = None, name: Optional[str] = None,
                       forcefield: str = "gaff2", charge_method: str = "bcc",
                       cache_dir: Optional[Path] = None, seed: int = 0,
                       molecule_file: Optional[str | Path] = None) -> LigandParameters:
    """GAFF2/GAFF parameters with AM1-BCC charges for one molecule (cached).

    Give exactly one of ``smiles`` and ``molecule_file``.

    Parameters
    ----------
    smiles
        One connected, closed-shell molecule; hydrogens are added. The net charge is the sum
        of the formal charges, e.g. ``CC(=O)[O-]`` is -1.
    molecule_file
        A .mol, .sdf (first record) or .mol2 file with explicit hydrogens and 3D coordinates.
        Its conformer is used as given, for the charges and as the start of the simulations;
        the atom order is kept. ``seed`` is then unused.
    name
        A label for people, stored in the result (default: the canonical SMILES). It is not
        part of the cache key.
    forcefield
        ``gaff2`` (default) or ``gaff`` (GAFF 1.x, the FreeSolv choice).
    charge_method
        ``bcc``: AM1-BCC from one conformer (conformer-dependent at the 0.01 e level), sqm
        optimising it first; ``bcc-fixed``: the same at the given geometry without sqm's
        optimisation (for hosts and other molecules of 100+ atoms, where it takes hours).
    cache_dir
        Folder of the ligand cache; default :func:`default_cache_dir`.
    seed
        Non-negative RDKit ETKDG seed for the conformer the charges are computed on.

    Returns
    -------
    LigandParameters
        Paths into the cache entry (prmtop, inpcrd, ffxml, mol2, frcmod) and the metadata.

    Raises
    ------
    ValueError
        Invalid SMILES or molecule file, both or neither given, unsupported elements,
        radicals, several fragments, unknown force field or charge method, bad seed.
    AmberToolsError
        AmberTools missing or failing (the message quotes the program's output).
    ParametrizationError
        The OpenMM XML written from the prmtop does not reproduce its energies.
    """
    forcefield = _validate_choice(forcefield, FORCEFIELDS, "forcefield")
    charge_method = _validate_choice(charge_method, CHARGE_METHODS, "charge_method")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    from rdkit import Chem

    if (smiles is None) == (molecule_file is None):
        raise ValueError("give exactly one of smiles (e.g. 'CCO') and molecule_file (a .mol, "
                         ".sdf or .mol2 with hydrogens and 3D coordinates)")
    if molecule_file is not None:
        mol = _molecule_from_file(Path(molecule_file))
        conformer: Optional[str] = _conformer_digest(mol)
        canonical = Chem.MolToSmiles(Chem.RemoveHs(mol))
    else:
        mol = _molecule_from_smiles(smiles)
        conformer = None
        canonical = Chem.MolToSmiles(mol)
    net_charge = Chem.GetFormalCharge(mol)
    label = canonical if name is None else str(name)

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(canonical, forcefield, charge_method, seed, conformer)
    return cached_or_built(root, key, label, lambda staging: _build_entry(
        mol, canonical, forcefield, charge_method, seed, net_charge, staging, conformer))
