"""TensorNet speed: mlff's TensorNet against torchmd-net's TensorNet with identical
hyperparameters (128 channels, 2 layers, 32 exp-normal radial functions, 5 A cutoff, SiLU, O(3)),
and against this project's MACE at its default sizes, energy + forces per call on ethanol and
water boxes of 192, 1,536 and 12,288 atoms, float32 and float64, each side in its own process
(torchmd-net in benchmarks/.tensornet-peer-venv, made by tensornet_peer.ensure_peer()).
Every call includes the side's own neighbour search.

Resumable: each measurement is written to benchmarks/results/tensornet.json as soon as it is
made and skipped on the next run (``--force`` remeasures). Do not run anything else CPU-heavy
at the same time (``--pause PID`` stops a background job's process group while timing).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import RESULTS, benchmark_lock, paused, record, versions, write_results  # noqa: E402
from mace_vs_peer import systems  # noqa: E402
from neighbors import water_box  # noqa: E402
from tensornet_peer import PeerOutOfMemory, peer_info, run_peer  # noqa: E402

NAME = "tensornet"
HPARAMS = dict(hidden_channels=128, num_layers=2, num_rbf=32, rbf_type="expnorm", activation="silu",
               cutoff_upper=5.0)
REPEATS = {"ethanol": 20, "water_box_192": 10, "water_box_1536": 5, "water_box_12288": 3}


def structures(tmp: Path):
    import ase.io
    from ase import Atoms

    atoms, paths = systems(tmp)
    pos, cell = water_box(12288, seed=1)
    atoms["water_box_12288"] = Atoms("OH2" * (len(pos) // 3), positions=pos, cell=cell, pbc=True)
    paths["water_box_12288"] = tmp / "water_box_12288.xyz"
    ase.io.write(paths["water_box_12288"], atoms["water_box_12288"], format="extxyz")
    return atoms, paths


def run_ours(kind: str, path: Path, dtype: str, threads: int, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, str(HERE / "_tensornet_side.py"), kind, str(path), dtype,
                          str(threads), str(repeats), json.dumps(HPARAMS)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"mlff {kind} failed on {path.name} {dtype}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def previous():
    path = RESULTS / f"{NAME}.json"
    return json.loads(path.read_text()) if path.exists() else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--systems", nargs="*", default=list(REPEATS))
    p.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    p.add_argument("--peers", nargs="*", default=["torchmd-net", "mlff-mace"],
                   help="which comparisons: torchmd-net's TensorNet, and/or this project's MACE")
    p.add_argument("--ours", choices=["tensornet", "tensornet_aot"], default="tensornet",
                   help="our side: the model as the ASE calculator runs it, or its mlff export --aot package")
    p.add_argument("--force", action="store_true", help="remeasure what the results already hold")
    p.add_argument("--pause", type=int, nargs="*", default=[],
                   help="PIDs whose process groups are stopped while timing (a background job)")
    args = p.parse_args()
    vers = versions("e3nn")
    ours_kind = None if args.ours == "tensornet" else args.ours  # None: the rows from before --ours
    done = {(r["system"], r["dtype"], r["peer_kind"], r.get("ours_kind")) for r in previous()}
    with tempfile.TemporaryDirectory() as tmp:
        atoms, paths = structures(Path(tmp))
        for name in args.systems:
            for dtype in args.dtypes:
                for kind in args.peers:
                    if (name, dtype, kind, ours_kind) in done and not args.force:
                        print(f"{name} {dtype} vs {kind}: already measured", file=sys.stderr)
                        continue
                    repeats = REPEATS[name]
                    with paused(args.pause):
                        try:
                            ours = run_ours(args.ours, paths[name], dtype, args.threads, repeats)
                        except RuntimeError as exc:  # killed for memory, for example
                            ours = {"ms_per_call": None, "n_params": None, "n_edges": None,
                                    "max_rss_MB": None, "ms_all": None, "error": str(exc)[-500:]}
                        try:
                            if kind == "torchmd-net":
                                peer = run_peer(paths[name], dtype, args.threads, repeats, HPARAMS)
                                inst = peer_info()
                                peer_name = f"{inst.get('package', 'torchmd-net')} {inst.get('version', '')}".strip()
                            else:
                                peer = run_ours("mace", paths[name], dtype, args.threads, repeats)
                                peer_name = "mlff MACE (default sizes: 64x0e+64x1o, max_ell 3, correlation 3)"
                            error = None
                        except (PeerOutOfMemory, RuntimeError) as exc:
                            peer, error = None, str(exc)[-500:]
                            peer_name = kind
                    rec = record(NAME, name, len(atoms[name]), "ms_per_call", ours["ms_per_call"], peer_name,
                                 peer["ms_per_call"] if peer else None, dtype=dtype, threads=args.threads,
                                 vers=vers, peer_kind=kind, hparams=HPARAMS, n_params=ours["n_params"],
                                 peer_n_params=peer["n_params"] if peer else None,
                                 n_edges=ours["n_edges"], max_rss_MB=ours["max_rss_MB"],
                                 peer_max_rss_MB=peer.get("max_rss_MB") if peer else None,
                                 ms_all=ours["ms_all"], peer_ms_all=peer.get("ms_all") if peer else None,
                                 peer_error=error, ours_error=ours.get("error"),
                                 peer_install=peer_info() if kind == "torchmd-net" else None,
                                 ours_kind=ours_kind)
                    write_results(NAME, [rec], keep_previous_by=("system", "dtype", "peer_kind", "ours_kind"))
                    speed = f"{rec['speedup']:.2f}x" if rec["speedup"] else f"failed: {ours.get('error') or error}"
                    print(f"{name} {dtype}: mlff TensorNet {ours['ms_per_call'] or float('nan'):.1f} ms, {kind} "
                          f"{peer['ms_per_call'] if peer else float('nan'):.1f} ms -> {speed}", file=sys.stderr)
    table()


def table() -> None:
    """The markdown table of benchmarks/README.md from the results."""
    rows = sorted(previous(), key=lambda r: (r.get("ours_kind") or "", r["peer_kind"], r["n_atoms"], r["dtype"]))
    print("| system | atoms | dtype | mlff | vs | mlff TensorNet (ms) | peer (ms) | speedup | params ours / peer |")
    print("|---|---:|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        peer = f"{r['peer_value']:.1f}" if r["peer_value"] else "failed"
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        pp = f"{r['peer_n_params']:,}" if r.get("peer_n_params") else "-"
        ours = f"{r['ours']:.1f}" if r["ours"] else "failed"
        params = f"{r['n_params']:,}" if r.get("n_params") else "-"
        print(f"| {r['system']} | {r['n_atoms']} | {r['dtype']} | {r.get('ours_kind') or 'tensornet'} | "
              f"{r['peer_kind']} | {ours} | "
              f"{peer} | {speed} | {params} / {pp} |")


if __name__ == "__main__":
    with benchmark_lock(__file__):
        main()
