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

Writes benchmarks/results/newest_torch.json (records: ``works`` per torch and check,
``max_abs_difference`` per comparison, the speed row as ``ms_per_call``); model files, packages
and the sides' raw files in runs/newest_torch/ (``--report`` rebuilds the results from them).
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

from _common import record, write_results  # noqa: E402

VENV = HERE / ".torch-newest-venv"
VENV_PYTHON = VENV / "bin" / "python"
NAME = "newest_torch"
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
    p.add_argument("--report", action="store_true",
                   help="only rebuild the results and the table from the last run's files in runs/newest_torch/")
    args = p.parse_args()
    if args.report:
        tags = sorted({f.stem[len("checks_"):] for f in OUT.glob("checks_*.json")},
                      key=lambda t: tuple(int(x) for x in t.split(".")))
        records = summarise(tags[0], tags[-1], wall_s=None)
        write_results(NAME, records)
        table(records)
        return
    t0 = time.time()
    ensure_venv(args.torch)
    OUT.mkdir(parents=True, exist_ok=True)
    ref_tag = run_side(Path(sys.executable))["tag"]
    new_tag = run_side(VENV_PYTHON)["tag"]
    run_side(Path(sys.executable))  # now loads the newer torch's package too
    records = summarise(ref_tag, new_tag, round(time.time() - t0))
    write_results(NAME, records)
    table(records)


def summarise(ref_tag: str, new_tag: str, wall_s: int) -> list:
    """The result records (schema of benchmarks/results) from the sides' files in OUT: per torch
    and check, ``metric`` ``works`` (``ours`` 1 or 0, with the detail or the error); per
    comparison, ``max_abs_difference`` (``ours``, largest over the arrays, and each array's);
    the indicative speed row as ``ms_per_call`` against torch ``ref_tag``."""
    checks = {t: json.loads((OUT / f"checks_{t}.json").read_text()) for t in (ref_tag, new_tag)}
    ref = dict(np.load(OUT / f"outputs_{ref_tag}.npz"))
    new = dict(np.load(OUT / f"outputs_{new_tag}.npz"))
    common = dict(n_atoms=None, dtype="float32 and float64", threads=2, wall_s=wall_s)
    records = []
    for tag in (ref_tag, new_tag):
        vers = checks[tag]["versions"]
        for c in checks[tag]["checks"]:
            records.append(record(NAME, c["check"], metric="works", ours=float(c["ok"]), peer=None,
                                  peer_value=None, vers=vers, torch=tag, **common,
                                  **{k: v for k, v in c.items() if k not in ("check", "ok")}))
    diffs = {f"{new_tag} vs {ref_tag}: {kind}": compare(new, ref, kind, kind)
             for kind in ("eager", "ase", "script", "openmm_python")}
    for tag, outs in ((ref_tag, ref), (new_tag, new)):
        diffs[f"{tag}: own .pt2 vs eager"] = compare(outs, outs, "pt2_own/tensornet_small", "eager/tensornet_small")
        diffs[f"{tag}: other torch's .pt2 vs eager"] = compare(outs, outs, "pt2_cross/tensornet_small",
                                                              "eager/tensornet_small")
    for label, d in diffs.items():
        if d:
            records.append(record(NAME, label, metric="max_abs_difference", ours=max(d.values()), peer=None,
                                  peer_value=None, vers=checks[new_tag]["versions"], per_array=d, **common))
    speed = {t: next(c for c in checks[t]["checks"] if c["check"].startswith("eager speed")) for t in checks}
    if all(c["ok"] for c in speed.values()):
        records.append(record(NAME, "water box 192, default model", metric="ms_per_call",
                              ours=speed[new_tag]["detail"], peer=f"mlff on torch {ref_tag}",
                              peer_value=speed[ref_tag]["detail"], vers=checks[new_tag]["versions"],
                              **{**common, "n_atoms": 192, "dtype": "float32"}))
    return records


def table(records: list) -> None:
    """The markdown table of benchmarks/README.md."""
    works = [r for r in records if r["metric"] == "works"]
    tags = list(dict.fromkeys(r["torch"] for r in works))
    cell = {(r["torch"], r["system"]): r for r in works}
    print("| check | " + " | ".join(f"torch {t}" for t in tags) + " |")
    print("|---" * (len(tags) + 1) + "|")
    for name in dict.fromkeys(r["system"] for r in works):
        cells = []
        for t in tags:
            r = cell.get((t, name))
            if r is None:
                cells.append("-")
            elif r["ours"]:
                cells.append(f"ok ({r['detail']})" if r.get("detail") is not None else "ok")
            else:
                cells.append("fails: " + r["error"].splitlines()[-1][:160])
        print(f"| {name} | " + " | ".join(cells) + " |")
    for r in records:
        if r["metric"] == "max_abs_difference":
            print(f"- {r['system']}: largest |difference| {r['ours']:.2e} (over {len(r['per_array'])} arrays)")
        elif r["metric"] == "ms_per_call":
            print(f"- {r['system']}: {r['ours']} ms vs {r['peer_value']} ms ({r['peer']}, indicative)")


if __name__ == "__main__":
    main()
