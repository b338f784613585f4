"""The on-disk ligand cache: one folder per input, keyed by a sha256 of everything that
determines its contents.

An entry is built in a hidden staging folder next to the cache and renamed into place (one
directory rename), so an interrupted run never leaves a half-written entry; ``metadata.json`` is
written last, and an entry without it (or with another :data:`FORMAT_VERSION`) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

#: Bump when the contents or layout of a cache entry change; old entries are then ignored.
FORMAT_VERSION = 1

#: Residue name of the ligand in the prmtop, the ffxml template and every system.
RESIDUE_NAME = "MOL"

# Files of a cache entry (all inside LigandParameters.directory).
MOL = "ligand.mol"
MOL2 = "ligand.mol2"
FRCMOD = "ligand.frcmod"
PRMTOP = "ligand.prmtop"
INPCRD = "ligand.inpcrd"
FFXML = "ligand.xml"
METADATA = "metadata.json"
ENTRY_FILES = (MOL, MOL2, FRCMOD, PRMTOP, INPCRD, FFXML, METADATA)


@dataclass(frozen=True)
class LigandParameters:
    """A parameterised small molecule: one cache entry.

    name: a label for people (default: the canonical SMILES). smiles: canonical SMILES.
    forcefield: ``gaff2`` or ``gaff`` (GAFF 1.x, as in FreeSolv). charge_method: ``bcc``
    (AM1-BCC). net_charge: elementary charges (sum of formal charges). residue_name: ``MOL``.
    directory: the cache entry (mol, mol2, frcmod, prmtop, inpcrd, ffxml, tool logs, metadata).
    prmtop, inpcrd: Amber topology and coordinates (Angstrom in the file). ffxml: OpenMM
    ForceField XML with atom types, parameters and a residue template for ``residue_name``.
    """

    name: str
    smiles: str
    forcefield: str
    charge_method: str
    net_charge: int
    residue_name: str
    directory: Path
    prmtop: Path
    inpcrd: Path
    ffxml: Path

    @property
    def mol2(self) -> Path:
        """antechamber's mol2: atom names, GAFF atom types, partial charges (e)."""
        return self.directory / MOL2

    @property
    def frcmod(self) -> Path:
        """parmchk2's frcmod: parameters missing from the GAFF parameter file."""
        return self.directory / FRCMOD


def default_cache_dir() -> Path:
    """The ligand cache: ``$MLFF_CACHE_DIR/ligands`` if ``MLFF_CACHE_DIR`` is set (the mlff cache
    root), else ``~/.cache/mlff/ligands``."""
    root = os.environ.get("MLFF_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "ligands"
    return Path.home() / ".cache" / "mlff" / "ligands"


def cache_key(canonical_smiles: str, forcefield: str, charge_method: str, seed: int,
              conformer: Optional[str] = None) -> str:
    """sha256 hex digest of everything that determines a cache entry's contents.

    ``conformer``: a digest of user-given coordinates (molecule-file input); None when the
    conformer is generated from ``seed``.
    """
    fields = {"smiles": canonical_smiles, "forcefield": forcefield,
              "charge_method": charge_method, "seed": seed, "format_version": FORMAT_VERSION}
    if conformer is not None:
        fields["conformer"] = conformer
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def entry_is_complete(entry: Path) -> bool:
    """True when ``entry`` holds every file of an entry and metadata of this format version."""
    if not all((entry / f).is_file() for f in ENTRY_FILES):
        return False
    try:
        meta = json.loads((entry / METADATA).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format_version") == FORMAT_VERSION


def params_from_entry(entry: Path, name: str) -> LigandParameters:
    """The :class:`LigandParameters` of a complete entry, labelled ``name``."""
    meta = json.loads((entry / METADATA).read_text())
    return LigandParameters(
        name=name, smiles=meta["smiles"], forcefield=meta["forcefield"],
        charge_method=meta["charge_method"], net_charge=int(meta["net_charge"]),
        residue_name=meta["residue_name"], directory=entry, prmtop=entry / PRMTOP,
        inpcrd=entry / INPCRD, ffxml=entry / FFXML,
    )


def cached_or_built(root: Path, key: str, name: str,
                    build: Callable[[Path], None]) -> LigandParameters:
    """The entry for ``key`` under ``root``: used as is when complete, else built.

    ``build(staging)`` writes every file of :data:`ENTRY_FILES` (``metadata.json`` last) into an
    empty hidden staging folder; the folder is then renamed into place. When another process
    finishes the same entry meanwhile, its entry is used; the staging folder is always removed.
    """
    entry = root / key[:32]
    if entry_is_complete(entry):
        return params_from_entry(entry, name)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:32]}.tmp-", dir=root))
    try:
        build(staging)
        if entry_is_complete(entry):  # another process finished it meanwhile: use theirs
            return params_from_entry(entry, name)
        if entry.exists():  # an incomplete or outdated entry: move it aside, then replace
            stale = Path(tempfile.mkdtemp(prefix=f".{key[:32]}.stale-", dir=root))
            try:
                os.replace(entry, stale / "entry")
            except FileNotFoundError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:
            # Another process finished the same entry first: use theirs.
            if not entry_is_complete(entry):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return params_from_entry(entry, name)
