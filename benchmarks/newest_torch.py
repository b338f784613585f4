"""What works on the newest torch this machine's pip can install, measured in a separate venv.

mlff pins ``torch>=2.9,<2.10`` because openmm-torch 1.5 links against torch 2.9. TorchScript is
deprecated upstream from torch 2.11, and a user on a newer torch needs to know which routes still
run. This script makes ``benchmarks/.torch-newest-venv`` (torch ``--torch``, default 2.14.1 (the
newest release the machine's pip constraints allow; the index also lists 2.15.0), mlff installed
editable with ``--no-deps``, openmm but no openmm-torch: its wheel is built against torch 2.9),
then runs ``_newest_torch_side.py`` in the project venv (torch 2.9.1, the reference), in the new
venv, and in the project venv again (so each side loads the other's .pt2 package). Each check
(model files, eager numbers, ASE MD, TorchScript, OpenMM PythonForce and TorchForce routes,
training, ``mlff export --aot``, .pt2 packages across versions) is recorded as ok or with its
error, and every number the newer torch gives is compared with torch 2.9.1's.

Writes benchmarks/results/newest_torch.json; model files and packages in runs/newest_torch/.
Not a timing benchmark (the one speed row is indicative): do not run it while timing something.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import RESULTS, machine  # noqa: E402

VENV = HERE / ".torch-newest-venv"
VENV_PYTHON = VENV / "bin" / "python"
OUT = ROOT / "runs" / "newest_torch"
SIDE = HERE / "_newest_torch_side.py"
#: the newest torch the machine's pip constraints (/etc/xdg/pip/constraints.txt) allow
TORCH = "2.14.1"
#: mlff's dependencies that the checks need, minus torch's pin and openmm-torch (built for 2.9)
DEPS = ["e3nn>=0.6,<0.7", "ase>=3.29", "vesin>=0.6", "vesin-torch>=0.6", "tad-dftd3>=0.7,<0.8",
        "openmm>=8.6", "numpy", "scipy", "pyyaml", "tqdm", "matplotlib"]


def _venv_torch() -> str | None:
    if not VENV_PYTHON.exists():
        return None
    res = subprocess.run([str(VENV_PYTHON), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                         capture_output=True, text=True)
    return res.stdout.strip().split("+")[0] if res.returncode == 0 else None


def ensure_venv(torch_version: str) -> None:
    """Make the venv with ``torch==torch_version`` and mlff (editable, no dependencies); does
    nothing when it already has that torch."""
    if _venv_torch() == torch_version:
        return
    if not VENV_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet"]
    print(f"installing torch {torch_version} into {VENV} (several GB)", file=sys.stderr)
    subprocess.run([*pip, f"torch=={torch_version}", *DEPS], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)


def run_side(python: Path) -> dict:
    res = subprocess.run([str(python), str(SIDE), str(OUT)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "HOME": str(Path.home())})
    if res.returncode != 0:
        raise RuntimeError(f"{python} {SIDE.name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(a: dict, b: dict, prefix_a: str, prefix_b: str) -> dict:
    """Largest absolute difference per key between ``a[prefix_a/...]`` and ``b[prefix_b/...]``."""
    out = {}
    for key in a:
        if not key.startswith(prefix_a + "/"):
            continue
        other = prefix_b + key[len(prefix_a):]
        if other in b:
            out[key[len(prefix_a) + 1:]] = float(np.max(np.abs(a[key] - b[other])))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", default=TORCH, help="torch version for the separate venv")
    args = p.parse_args()
    t0 = time.time()
    ensure_venv(args.torch)
    OUT.mkdir(parents=True, exist_ok=True)
    ref_tag = run_side(Path(sys.executable))["tag"]
    new_tag = run_side(VENV_PYTHON)["tag"]
    run_side(Path(sys.executable))  # now loads the newer torch's package too
    checks = {t: json.loads((OUT / f"checks_{t}.json").read_text()) for t in (ref_tag, new_tag)}
    ref = dict(np.load(OUT / f"outputs_{ref_tag}.npz"))
    new = dict(np.load(OUT / f"outputs_{new_tag}.npz"))
    diffs = {
        f"{new_tag} vs {ref_tag}: {kind}": compare(new, ref, kind, kind)
        for kind in ("eager", "ase", "script", "openmm_python")
    }
    for tag, outs in ((ref_tag, ref), (new_tag, new)):
        diffs[f"{tag}: own .pt2 vs eager"] = compare(outs, outs, "pt2_own/tensornet_small", "eager/tensornet_small")
        diffs[f"{tag}: other torch's .pt2 vs eager"] = compare(outs, outs, "pt2_cross/tensornet_small",
                                                              "eager/tensornet_small")
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "reference_torch": ref_tag,
              "newest_torch": new_tag, "sides": checks,
              "max_abs_difference": diffs, "wall_s": round(time.time() - t0)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "newest_torch.json.partial"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(RESULTS / "newest_torch.json")
    table(result)


def table(result: dict) -> None:
    """The markdown table of benchmarks/README.md."""
    ref, new = result["reference_torch"], result["newest_torch"]
    by = {t: {c["check"]: c for c in result["sides"][t]["checks"]} for t in (ref, new)}
    print(f"| check | torch {ref} | torch {new} |")
    print("|---|---|---|")
    for name in by[ref]:
        cells = []
        for t in (ref, new):
            c = by[t].get(name)
            if c is None:
                cells.append("-")
            elif c["ok"]:
                cells.append(f"ok ({c['detail']})" if c.get("detail") is not None else "ok")
            else:
                cells.append("fails: " + c["error"].splitlines()[-1][:160])
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    for label, d in result["max_abs_difference"].items():
        if d:
            print(f"- {label}: largest |difference| {max(d.values()):.2e} (over {len(d)} arrays)")


if __name__ == "__main__":
    main()
