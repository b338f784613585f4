"""Scale: energy + forces time and peak memory of water boxes from 192 to 98,304 atoms, mlff's
MACE with and without edge chunking (mlff/nn/edge_chunks.py) next to mace-torch 0.3.16 where it
fits, identical hyperparameters (benchmarks/_mace_side.py), float32, 2 threads.

Every measurement runs in its own process (benchmarks/_scale_side.py); a watcher stops any that
passes ``--rss-limit-gb`` of resident memory and records "out of memory" with the size it
reached; larger boxes of that variant are then not tried. Results go to results/scale.json
after each measurement (a rerun skips what is there: resumable; ``--force`` remeasures) and a
plot of time per atom and peak memory against atoms to results/scale.png.

Bars (issue 21): the 98,304-atom box runs within 24 GB; time per atom from 1,536 to 98,304
atoms within 25 %; at 12,288 atoms peak memory <= 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, benchmark_lock, record, versions, write_results  # noqa: E402
from mace_vs_peer import ensure_peer  # noqa: E402

SIZES = (192, 1536, 12288, 49152, 98304)
#: the chunked variant's MLFF_MEMORY_GB by size (the per-atom tensors of 98,304 atoms alone
#: take about 12 GB, so the largest boxes get more; 6 GB elsewhere)
BUDGET_GB = {49152: "12", 98304: "14"}
#: variant -> (side, MLFF_MEMORY_GB)
VARIANTS = {"mlff_chunked": ("mlff", None), "mlff_one_piece": ("mlff", "0"), "mace-torch": ("mace-torch", None)}


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def run_one(python: str, side: str, n: int, dtype: str, threads: int, repeats: int,
            memory_gb: str | None, rss_limit_gb: float) -> dict:
    """One side in its own process; ``{"out_of_memory_gb": X}`` if the watcher stopped it."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    if memory_gb is not None:
        env["MLFF_MEMORY_GB"] = memory_gb
    structure = str(n)
    if side != "mlff":  # the peer's venv has no mlff to build the box: hand it a file
        import ase.io
        from ase import Atoms
        from neighbors import water_box

        pos, cell = water_box(n, seed=1)
        structure = str(Path(tempfile.mkdtemp()) / f"water_{n}.xyz")
        ase.io.write(structure, Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True),
                     format="extxyz")
    proc = subprocess.Popen([python, str(HERE / "_scale_side.py"), side, structure, dtype, str(threads),
                             str(repeats)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = {"gb": 0.0, "killed": False}

    def watch() -> None:
        while proc.poll() is None:
            rss = _rss_gb(proc.pid)
            peak["gb"] = max(peak["gb"], rss)
            if rss > rss_limit_gb:
                peak["killed"] = True
                proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    if peak["killed"] or proc.returncode in (-9, 137):
        return {"out_of_memory_gb": round(max(peak["gb"], rss_limit_gb if peak["killed"] else 0), 1)}
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed at {n} atoms:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def plot(records: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for variant in VARIANTS:
        rows = sorted((r for r in records if r["variant"] == variant and r.get("ours")), key=lambda r: r["n_atoms"])
        if not rows:
            continue
        n = [r["n_atoms"] for r in rows]
        ax_t.plot(n, [1e3 * r["ours"] / r["n_atoms"] for r in rows], "o-", label=variant)
        ax_m.plot(n, [r["max_rss_MB"] / 1e3 for r in rows], "o-", label=variant)
        for r in records:
            if r["variant"] == variant and r.get("out_of_memory_gb"):
                ax_m.plot([r["n_atoms"]], [r["out_of_memory_gb"]], "x", color=ax_m.lines[-1].get_color(),
                          markersize=10)
    ax_m.axhline(24, color="grey", ls="--", lw=0.8)
    for ax, label in ((ax_t, "ms per atom (energy + forces)"), (ax_m, "peak memory (GB); x: stopped")):
        ax.set_xscale("log")
        ax.set_xlabel("atoms (water)")
        ax.set_ylabel(label)
        ax.legend()
    ax_m.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-gb", default=None,
                        help="MLFF_MEMORY_GB of the chunked variant (default: 6, and BUDGET_GB for the largest boxes)")
    parser.add_argument("--rss-limit-gb", type=float, default=23.5)
    parser.add_argument("--force", action="store_true", help="remeasure what results/scale.json has")
    args = parser.parse_args()
    path = RESULTS / "scale.json"
    done = json.loads(path.read_text()) if path.exists() else []
    vers = versions("e3nn")
    for variant in args.variants:
        side, memory = VARIANTS[variant]
        python = str(ensure_peer()) if side == "mace-torch" else sys.executable
        for n in sorted(args.sizes):
            if variant == "mlff_chunked":
                memory = args.memory_gb or BUDGET_GB.get(n, "6")
            key = dict(system=f"water_box_{n}", variant=variant, dtype=args.dtype)
            previous = [r for r in done if all(r.get(k) == v for k, v in key.items())]
            if previous and not args.force:
                if previous[0].get("out_of_memory_gb"):
                    break
                continue
            repeats = 3 if n <= 1536 else 1
            res = run_one(python, side, n, args.dtype, args.threads, repeats, memory, args.rss_limit_gb)
            extra = dict(variant=variant, memory_budget_gb=memory, rss_limit_gb=args.rss_limit_gb)
            if "out_of_memory_gb" in res:
                rec = record("scale", key["system"], n, "s_per_call", None, None, None, dtype=args.dtype,
                             threads=args.threads, vers=vers, out_of_memory_gb=res["out_of_memory_gb"], **extra)
            else:
                rec = record("scale", key["system"], res["n_atoms"], "s_per_call", res["s_per_call"], None,
                             None, dtype=args.dtype, threads=args.threads, vers=vers,
                             max_rss_MB=res["max_rss_MB"], graph_s=res["graph_s"],
                             edge_chunk=res.get("edge_chunk"), **extra)
            print(f"{variant} {n}: {res}", file=sys.stderr, flush=True)
            write_results("scale", [rec], keep_previous_by=("system", "variant", "dtype"))
            done = json.loads(path.read_text())
            if "out_of_memory_gb" in res:
                break
    plot(done, RESULTS / "scale.png")
    print("| atoms | variant | s per call | ms per atom | peak memory (GB) | edges per chunk |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in sorted(done, key=lambda r: (r["n_atoms"], r["variant"])):
        if r.get("out_of_memory_gb"):
            print(f"| {r['n_atoms']:,} | {r['variant']} | out of memory (stopped at {r['out_of_memory_gb']} GB) | | | |")
        else:
            print(f"| {r['n_atoms']:,} | {r['variant']} | {r['ours']:.2f} | {1e3 * r['ours'] / r['n_atoms']:.3f} | "
                  f"{r['max_rss_MB'] / 1e3:.2f} | {r.get('edge_chunk') or '-'} |")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
