"""The peer side of the TensorNet benchmark: torchmd-net's TensorNet in its own virtual
environment, benchmarks/.tensornet-peer-venv (made here on first use).

``ensure_peer()`` makes the venv and installs ``torch==2.9.1`` (the same torch as the project
venv) and torchmd-net 3.1.0. 3.1.0 is an sdist, but pure Python (setuptools + setuptools-scm,
no C++/CUDA extension to compile); its kernels (neighbour list, TensorNet message passing) are
NVIDIA Warp kernels from the ``warp-lang`` wheel, JIT-compiled for the CPU by Warp's bundled
clang on first use. If 3.1.0 cannot be installed or cannot run a tiny TensorNet energy+forces
call here, the venv falls back to the ``torchmd-net-cpu==2.4.14`` wheel, which pins
``torch==2.7.1`` (its compiled extension is built against that torch), so the peer then runs on
another torch than ours. What was installed, and why 3.1.0 failed if it did (the real error
lines), is in ``PEER_VENV/peer_info.json``; the driver should put it in the results.

``run_peer()`` runs benchmarks/_tensornet_peer_side.py in that venv, one process per call, and
returns its JSON line.

Only the standard library is imported at module level: this module is imported from the
project venv, where torchmd-net is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_VENV = Path(__file__).parent / ".tensornet-peer-venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_INFO = PEER_VENV / "peer_info.json"
SIDE_SCRIPT = HERE / "_tensornet_peer_side.py"
#: Warp's kernel cache for the peer, kept inside the peer venv (default would be ~/.cache/warp)
WARP_CACHE = PEER_VENV / "warp-cache"

TORCH = "torch==2.9.1"
SDIST = ("torchmd-net", "3.1.0")
WHEEL = ("torchmd-net-cpu", "2.4.14")
#: torchmd-net-cpu 2.4.14 requires torch==2.7.1 (its torchmdnet_extensions.so is built for it)
WHEEL_TORCH = "torch==2.7.1"
#: give up on the sdist install (download + build + dependencies) after this long
SDIST_TIMEOUT_S = 1800
PIP_TIMEOUT_S = 3600
_READY = False  # ensure_peer() succeeded in this process


def _pip(*args: str, timeout: float = PIP_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", "--quiet", *args],
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(text: str, limit: int = 40) -> list:
    """The lines of pip/Python output that say what went wrong (errors, tracebacks' last
    lines), at most ``limit``, else the last lines."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    keys = ("error", "Error", "ERROR", "failed", "Failed", "No matching", "Could not",
            "requires", "conflict", "nvcc", "CUDA")
    hits = [ln for ln in lines if any(k in ln for k in keys)]
    return (hits or lines)[-limit:]


def _peer_env(threads: int | None = None) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", WARP_CACHE_PATH=str(WARP_CACHE))
    env.pop("PYTHONPATH", None)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _smoke() -> subprocess.CompletedProcess:
    """A tiny TensorNet energy + forces call in the peer venv (exercises the build, the
    imports and, for 3.1.0, the Warp CPU kernels)."""
    return subprocess.run([str(PEER_PYTHON), str(SIDE_SCRIPT), "--smoke"], capture_output=True,
                          text=True, env=_peer_env(1), timeout=1800)


def _installed(dist: str) -> str | None:
    res = subprocess.run([str(PEER_PYTHON), "-c", "import importlib.metadata as m, sys; "
                          f"print(m.version({dist!r}))"], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def _probe(info: dict) -> bool:
    if not PEER_PYTHON.exists() or info.get("version") is None:
        return False
    if _installed(info["package"]) != info["version"]:
        return False
    res = subprocess.run([str(PEER_PYTHON), "-c", "import torchmdnet, ase"],
                         capture_output=True, text=True, env=_peer_env(1))
    return res.returncode == 0


def peer_info() -> dict:
    """The contents of ``PEER_VENV/peer_info.json`` ({} before ``ensure_peer()``)."""
    try:
        return json.loads(PEER_INFO.read_text())
    except (OSError, ValueError):
        return {}


def ensure_peer() -> Path:
    """Make the peer venv if needed (idempotent: a working install is probed and kept) and
    return its python. Writes ``PEER_VENV/peer_info.json``::

        {"package": "torchmd-net" | "torchmd-net-cpu", "version": ..., "torch": ...,
         "warp": ... | null, "sdist_attempt": {"package", "version", "ok", "seconds",
         "stage": "pip install" | "smoke run" | "timeout" | null, "reason", "error_lines"}}
    """
    global _READY
    if _READY or _probe(peer_info()):
        _READY = True
        return PEER_PYTHON
    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    # benchmarks/.gitignore patterns do not cover this folder: make it ignore itself
    (PEER_VENV / ".gitignore").write_text("*\n")
    res = _pip(TORCH, "ase")
    if res.returncode != 0:
        raise RuntimeError(f"peer venv: pip install {TORCH} ase failed:\n{res.stderr[-3000:]}")

    name, ver = SDIST
    attempt = {"package": name, "version": ver, "ok": False, "stage": None, "reason": None,
               "error_lines": []}
    t0 = time.perf_counter()
    try:
        res = _pip(f"{name}=={ver}", TORCH, timeout=SDIST_TIMEOUT_S)
        if res.returncode != 0:
            attempt.update(stage="pip install", error_lines=_error_lines(res.stdout + res.stderr))
        else:
            smoke = _smoke()
            if smoke.returncode != 0:
                attempt.update(stage="smoke run",
                               error_lines=_error_lines(smoke.stdout + smoke.stderr))
            else:
                attempt.update(ok=True, smoke=json.loads(smoke.stdout.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired as exc:
        attempt.update(stage="timeout",
                       error_lines=[f"gave up after {exc.timeout:.0f} s: {' '.join(exc.cmd[-4:])}"])
    attempt["seconds"] = round(time.perf_counter() - t0, 1)
    if not attempt["ok"]:
        attempt["reason"] = (f"{name} {ver} failed at {attempt['stage']}: "
                             + (attempt["error_lines"][-1] if attempt["error_lines"] else "?"))

    if attempt["ok"]:
        package, version = SDIST
    else:
        package, version = WHEEL
        subprocess.run([str(PEER_PYTHON), "-m", "pip", "uninstall", "--quiet", "--yes",
                        name, "warp-lang"], capture_output=True, text=True)
        res = _pip(WHEEL_TORCH, f"{package}=={version}", "ase")
        if res.returncode != 0:
            raise RuntimeError(f"peer venv: {name} {ver} failed ({attempt['reason']}) and the "
                               f"fallback {package}=={version} failed too:\n{res.stderr[-3000:]}")
        smoke = _smoke()
        if smoke.returncode != 0:
            raise RuntimeError(f"peer venv: {package} {version} installed but cannot run "
                               f"TensorNet:\n{smoke.stderr[-3000:]}")
    _READY = True
    info = {"package": package, "version": _installed(package), "torch": _installed("torch"),
            "warp": _installed("warp-lang"), "sdist_attempt": attempt}
    PEER_INFO.write_text(json.dumps(info, indent=1))
    return PEER_PYTHON


class PeerOutOfMemory(RuntimeError):
    """The peer process went over its memory limit and was stopped."""


def _mem_available_kB() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_kB(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_peer(xyz_path: Path, dtype: str, threads: int, repeats: int, hparams: dict,
             *, max_rss_GB: float | None = None) -> dict:
    """Time torchmd-net's TensorNet (energy + forces, its own neighbour search included) on
    the structure in ``xyz_path`` in a fresh process of the peer venv.

    ``hparams``: hidden_channels, num_layers, num_rbf, cutoff_upper (A) and optionally
    rbf_type ("expnorm"), activation ("silu"), cutoff_lower (0.0),
    equivariance_invariance_group ("O(3)"), max_num_neighbors (default: 1.25 x the largest
    count torchmd-net's own search finds, at least 64), seed (0).

    ``max_rss_GB``: the peer process is stopped (``PeerOutOfMemory``) when its resident
    memory goes over this; default 80 % of the memory available when it starts, so a system
    too large for the machine fails cleanly instead of waking the OOM killer.

    Returns {"ms_per_call": median ms (wall), "ms_all": [...], "warmup_ms": [...],
    "cpu_ms_per_call" (median process CPU time), "n_params", "energy" (eV, sum),
    "force_abs_max", "n_atoms", "n_pairs" (directed, with N self-loops), "max_num_neighbors",
    "max_rss_MB", "dtype", "threads", "hparams", "versions" (with "peer_install": peer_info())}.
    Raises RuntimeError with the stderr tail on failure.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    python = ensure_peer()
    if max_rss_GB is None:
        avail = _mem_available_kB()
        limit_kB = int(0.8 * avail) if avail else None
    else:
        limit_kB = int(max_rss_GB * 1024 ** 2)
    proc = subprocess.Popen([str(python), str(SIDE_SCRIPT), str(xyz_path), dtype, str(threads),
                             str(repeats), json.dumps(hparams)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_peer_env(threads))
    peak = 0
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            peak = max(peak, _rss_kB(proc.pid))
            if limit_kB is not None and peak > limit_kB:
                proc.kill()
                stdout, stderr = proc.communicate()
                raise PeerOutOfMemory(
                    f"torchmd-net TensorNet on {Path(xyz_path).name} {dtype} went over "
                    f"{limit_kB / 1024 ** 2:.1f} GB resident memory and was stopped")
    if proc.returncode != 0:
        raise RuntimeError(f"torchmd-net TensorNet failed on {Path(xyz_path).name} {dtype} "
                           f"(exit {proc.returncode}):\n{stderr[-3000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    out["versions"]["peer_install"] = peer_info()
    return out
