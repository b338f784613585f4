"""This tree against an earlier revision of mlff, same run, same machine: OpenMM MD through
openmm-ml (benchmarks/openmm_md.py's worker, TorchForce and PythonForce routes) and the demo
(`mlff demo`, OpenMM TorchForce NVT with HMR and the uncertainty monitor).

A refactor must not make the user's path slower: this measures the ratio. The revision is
unpacked with ``git archive`` into benchmarks/.baseline-REV/ and run with that folder first on
PYTHONPATH (its own module names), in the project's virtual environment. The two trees run
``--repeats`` times each, alternating which goes first, and the median is kept.

Usage: python benchmarks/vs_baseline.py --rev 4e7203b [--repeats 3] [--demo-steps 1500]
Writes benchmarks/results/vs_baseline.json.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import benchmark_lock, record, versions, write_results  # noqa: E402
from openmm_md import run_route, write_models, write_systems  # noqa: E402


def unpack(rev: str) -> Path:
    """The tree of ``rev`` in benchmarks/.baseline-<sha>/ (reused when already there)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = HERE / f".baseline-{sha}"
    if not (tree / "mlff" / "__init__.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def demo_seconds(cmd: list, env: dict, out: Path, steps: int) -> float:
    """Wall time of the MD part of one demo run (the 'N steps ... in S s' line)."""
    res = subprocess.run([*cmd, "demo", "--steps", str(steps), "--out", str(out), "--no-progress"],
                         env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} demo failed:\n{res.stderr[-3000:]}")
    match = re.search(r"(\d+) steps, (\d+) frames in ([\d.]+) s", res.stdout)
    if not match:
        raise RuntimeError(f"no timing line in the demo output:\n{res.stdout[-2000:]}")
    return float(match.group(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the baseline revision (e.g. the commit before a refactor)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-small", type=int, default=40)
    parser.add_argument("--steps-large", type=int, default=3)
    parser.add_argument("--water-atoms", type=int, default=1536)
    parser.add_argument("--demo-steps", type=int, default=1500, help="0 skips the demo")
    parser.add_argument("--systems", nargs="*", default=None,
                        help="OpenMM MD systems to run (default all: alanine_dipeptide_vacuum water_box)")
    parser.add_argument("--keep", action="store_true",
                        help="keep earlier records of systems not rerun in results/vs_baseline.json")
    args = parser.parse_args()

    tree = unpack(args.rev)
    base_env = dict(os.environ, PYTHONPATH=str(tree))
    vers = versions("e3nn", "openmm", "openmmtorch", "openmmml")
    baseline = f"mlff at {tree.name[len('.baseline-'):]}"
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        systems = write_systems(tmp, args.water_atoms)
        models = write_models(tmp, peer_python=None)
        for name, (path, n_atoms) in systems.items():
            if args.systems is not None and name not in args.systems:
                continue
            steps = args.steps_small if n_atoms < 100 else args.steps_large
            warmup = 5 if n_atoms < 100 else 2
            for route in ("torch", "python"):
                ours, theirs = [], []
                for k in range(args.repeats):
                    pair = [lambda: ours.append(run_route(
                                sys.executable, route, path, models["ours"], steps, warmup,
                                args.threads)["steps_per_s"]),
                            lambda: theirs.append(run_route(
                                sys.executable, f"baseline-{route}", path, models["ours"], steps,
                                warmup, args.threads, str(tree))["steps_per_s"])]
                    for run in (pair if k % 2 == 0 else pair[::-1]):  # alternate who goes first
                        run()
                o, t = statistics.median(ours), statistics.median(theirs)
                print(f"{name} {route}: {o:.3f} vs {t:.3f} steps/s ({o / t:.3f}x)", file=sys.stderr)
                records.append(record("vs_baseline_openmm_md", name, n_atoms, "steps_per_s", o, baseline, t,
                                      dtype="float32", threads=args.threads, lower_is_better=False,
                                      vers=vers, route=route, repeats=args.repeats, runs=ours, baseline_runs=theirs))
        if args.demo_steps:
            ours, theirs = [], []
            for k in range(args.repeats):
                pair = [lambda: ours.append(demo_seconds(
                            [str(Path(sys.executable).parent / "mlff")], dict(os.environ),
                            tmp / f"demo_new_{k}", args.demo_steps)),
                        lambda: theirs.append(demo_seconds(
                            [sys.executable, "-m", "md_workflows.cli"], base_env,
                            tmp / f"demo_old_{k}", args.demo_steps))]
                for run in (pair if k % 2 == 0 else pair[::-1]):
                    run()
            o, t = statistics.median(ours), statistics.median(theirs)
            print(f"demo ({args.demo_steps} steps): {o:.1f} vs {t:.1f} s ({t / o:.3f}x)", file=sys.stderr)
            records.append(record("vs_baseline_demo", "alanine_dipeptide_vacuum", 22, "md_wall_s", o, baseline,
                                  t, dtype="float32", threads=1, vers=vers, steps=args.demo_steps,
                                  repeats=args.repeats, runs=ours, baseline_runs=theirs))
    path = write_results("vs_baseline", records,
                         keep_previous_by=("benchmark", "system", "route") if args.keep else ())
    print(f"results: {path}")
    print(f"| what | system | this tree | {baseline} | ratio (>1: this tree faster) |")
    print("|---|---|---:|---:|---:|")
    for r in records:
        label = r.get("route", "demo")
        print(f"| {label} | {r['system']} | {r['ours']:.3f} {r['metric']} | {r['peer_value']:.3f} | {r['speedup']:.3f}x |")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        t0 = time.time()
        main()
        print(f"wall {time.time() - t0:.0f} s", file=sys.stderr)
