"""mlff's Ewald / PME sums against torch-pme (issue 18): the Coulomb energy and forces of fixed
point charges in rock salt and in TIP3P-charged water boxes, each side with the same splitting
(alpha from r_cut 5 A and accuracy 1e-6, the long-range block's rule), the same real-space
pairs and the same mesh (the block's B-spline order 6 and grid), float64, 2 threads; both
sides' errors against mlff's exact Ewald reference (accuracy 1e-10, up to 2,000 atoms) and their time per
energy + forces call, alternating in one process (benchmarks/_torchpme_side.py).

torch-pme is a peer and lives in its own venv, ``benchmarks/.torchpme-venv``, made here: a
``.pth`` file adds the project venv's site-packages (torch 2.9.1 and mlff, not installed
twice) and ``pip install --no-deps torch-pme==0.5.0`` (pure Python; needs only torch).
Results: results/longrange_vs_torchpme.json (one record per system; ``speedup`` > 1: ours
faster); a rerun skips finished systems (``--force`` remeasures).

Usage: python benchmarks/longrange_vs_torchpme.py [--systems nacl:512 water:1536 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import site
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402

NAME = "longrange_vs_torchpme"
TORCHPME = "0.5.0"
VENV = HERE / ".torchpme-venv"
VENV_PYTHON = VENV / "bin" / "python"
SIDE = HERE / "_torchpme_side.py"
SYSTEMS = ("nacl:512", "nacl:4096", "water:1536", "water:12288")


def _venv_torchpme() -> str | None:
    if not VENV_PYTHON.exists():
        return None
    res = subprocess.run([str(VENV_PYTHON), "-c", "import importlib.metadata as m; print(m.version('torch-pme'))"],
                         capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_venv() -> None:
    """Make the peer venv (idempotent): the project venv's packages through a .pth file,
    torch-pme on top of them."""
    if _venv_torchpme() == TORCHPME:
        return
    if not VENV_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    ours = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
    theirs = subprocess.run([str(VENV_PYTHON), "-c", "import site; print(site.getsitepackages()[0])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    # an import line, so that the project venv's own .pth files (the editable mlff) run too
    Path(theirs, "_mlff_project_venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--no-deps", f"torch-pme=={TORCHPME}"],
                   check=True)


def run_side(kind: str, n_atoms: int, threads: int, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    res = subprocess.run([str(VENV_PYTHON), str(SIDE), kind, str(n_atoms), str(threads), str(repeats)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{SIDE.name} {kind} {n_atoms} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", nargs="*", default=list(SYSTEMS), help="KIND:N_ATOMS, KIND nacl or water")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--force", action="store_true", help="remeasure what the results file has")
    args = p.parse_args()
    ensure_venv()
    path = RESULTS / f"{NAME}.json"
    done = {r["system"] for r in json.loads(path.read_text())} if path.exists() and not args.force else set()
    vers = versions("torch", "mlff")
    vers["torch-pme"] = TORCHPME
    for spec in args.systems:
        kind, n = spec.split(":")
        system = f"{kind}_{n}"
        if system in done:
            continue
        out = run_side(kind, int(n), args.threads, args.repeats)
        common = {k: v for k, v in out.items() if not k.startswith("torchpme") and k not in ("n_atoms", "ours_ms", "system")}
        for variant, label in (("torchpme_matched", "same split and order, 2^k grid"), ("torchpme_tuned", "its tuner")):
            rec = record(NAME, system, out["n_atoms"], "ms_per_call", out["ours_ms"], f"torch-pme {TORCHPME} ({label})",
                         out[f"{variant}_ms"], dtype="float64", threads=args.threads, vers=vers, **common,
                         peer_setup=out[variant], peer_energy_error_eV=out.get(f"{variant}_energy_error_eV"),
                         peer_force_error_eV_A=out.get(f"{variant}_force_error_eV_A"))
            write_results(NAME, [rec], keep_previous_by=("system", "peer"))
            errors = (f"energy error {out['ours_energy_error_eV']:.1e} / {out[f'{variant}_energy_error_eV']:.1e} eV, "
                      f"force error {out['ours_force_error_eV_A']:.1e} / {out[f'{variant}_force_error_eV_A']:.1e} eV/A"
                      if "energy_ref_eV" in out else
                      f"ours - matched: energy {out['ours_vs_matched_energy_eV']:.1e} eV, "
                      f"forces {out['ours_vs_matched_force_eV_A']:.1e} eV/A")
            print(f"{system} vs torch-pme ({label}): ours {out['ours_ms']:.1f} ms, torch-pme {out[f'{variant}_ms']:.1f} ms "
                  f"({rec['speedup']:.2f}x); {errors}; grids {out['mesh']} / {out[variant]['mesh']}")

if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
