"""Shared helpers for benchmarks: timing, versions, and the result-record schema of
shared/DESIGN.md (benchmark, system, n_atoms, dtype, threads, device, metric, ours, peer,
peer_value, speedup, date, versions)."""

from __future__ import annotations

import datetime as _dt
import signal
from contextlib import contextmanager
import json
import os
import platform
import statistics
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def versions(*packages: str) -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("mlff", "torch", *packages):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}"


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def record(
    benchmark: str,
    system: str,
    n_atoms: int,
    metric: str,
    ours: float,
    peer: Optional[str],
    peer_value: Optional[float],
    *,
    dtype: str,
    threads: int,
    device: str = "cpu",
    lower_is_better: bool = True,
    vers: Optional[Dict[str, str]] = None,
    **extra: object,
) -> Dict[str, object]:
    """One result record; ``speedup`` > 1 means ours is better than the peer."""
    speedup = None
    if peer_value is not None and ours:
        speedup = peer_value / ours if lower_is_better else ours / peer_value
    rec = {
        "benchmark": benchmark,
        "system": system,
        "n_atoms": n_atoms,
        "dtype": dtype,
        "threads": threads,
        "device": device,
        "metric": metric,
        "ours": ours,
        "peer": peer,
        "peer_value": peer_value,
        "speedup": speedup,
        "date": _dt.date.today().isoformat(),
        "versions": vers or versions(),
        "machine": machine(),
    }
    rec.update(extra)
    return rec


def write_results(name: str, records: List[Dict[str, object]],
                  keep_previous_by: Sequence[str] = ()) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically.

    ``keep_previous_by``: record fields that identify a measurement (e.g. ``("system",
    "dtype")``); previous records whose identity is not among ``records`` are kept, so a run
    over a subset of systems does not drop the others.
    """
    from mlff.atomic import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    if keep_previous_by and path.exists():
        def identity(r):
            return tuple(r.get(k) for k in keep_previous_by)

        rerun = {identity(r) for r in records}
        records = [r for r in json.loads(path.read_text()) if identity(r) not in rerun] + list(records)
    atomic_write_text(path, json.dumps(records, indent=1))
    return path


@contextmanager
def paused(pids):
    """SIGSTOP the process groups of ``pids`` while timing, SIGCONT afterwards."""
    groups = []
    for pid in pids:
        try:
            groups.append(os.getpgid(pid))
            os.killpg(groups[-1], signal.SIGSTOP)
        except ProcessLookupError:
            pass
    try:
        yield
    finally:
        for g in groups:
            try:
                os.killpg(g, signal.SIGCONT)
            except ProcessLookupError:
                pass


def benchmark_lock(script: str):
    """Hold the run lock of this benchmark command for the block: the same script with the
    same arguments cannot run twice at once (the second stops at once naming the first, as
    ``mlff md`` does), while different stages or subsets of one benchmark may run side by side
    (``water_longrange.py train --kinds none`` next to ``--kinds both``). Lock files live in
    ``benchmarks/results/.locks/`` (not committed); a killed run's lock is taken over."""
    import hashlib
    import sys

    from mlff.run_lock import run_lock

    stem = Path(script).stem
    args = " ".join(sys.argv[1:])
    digest = hashlib.sha256(args.encode()).hexdigest()[:12]
    return run_lock(RESULTS / ".locks", f"benchmarks/{stem}.py {args}".strip(), lock_name=f"{stem}-{digest}.lock")

