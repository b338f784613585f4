"""glibc malloc settings that keep large CPU tensors from page-faulting on every call.

glibc serves allocations above its mmap threshold (adaptive, at most 32 MiB) with a fresh
``mmap`` and returns them to the kernel on free, so every such tensor is faulted in again page
by page (4 KiB at a time) on the next call. Per-edge tensors of a water box or of an ensemble
are that large: ``[4, 10428, 672]`` float32 is 112 MB. Measured on the 192-water box with the
default model's architecture (1 thread): a 4-member ensemble cost 5.8 single calls, and 4.0
with the settings below; one gather of that size went from 66 ms to 7 ms.

:func:`tune_glibc_malloc` raises the mmap and trim thresholds to 1 GiB, so freed blocks stay in
the heap and are reused (a process keeps its peak heap instead of returning it). It runs once
per process, when the first model is built or loaded (:func:`tune_once`, called by
:class:`mlff.models.potential.Potential`), never at ``import mlff``; set
``MLFF_MALLOC_TUNING=0`` to leave malloc alone. Written with ctypes because no library exposes
``mallopt``; on other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

#: mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: the thresholds set by :func:`tune_glibc_malloc` (bytes)
DEFAULT_THRESHOLD = 1 << 30

_applied = False
_attempted = False


def tune_glibc_malloc(threshold_bytes: int = DEFAULT_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds to ``threshold_bytes``.

    Returns True when glibc accepted both, False elsewhere (not Linux, not glibc, or
    ``MLFF_MALLOC_TUNING=0``). Idempotent.
    """
    global _applied
    if os.environ.get("MLFF_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    if not 0 < threshold_bytes < 2**31:
        raise ValueError(f"threshold_bytes must be in (0, 2 GiB), got {threshold_bytes}")
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has no such symbol): AttributeError
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_THRESHOLD, threshold_bytes) == 1
          and mallopt(_M_TRIM_THRESHOLD, threshold_bytes) == 1)
    _applied = _applied or ok
    return ok


def tune_once() -> bool:
    """:func:`tune_glibc_malloc` with the default threshold on the first call in this process
    (logged at debug level); later calls only return whether it succeeded."""
    global _attempted
    if not _attempted:
        _attempted = True
        ok = tune_glibc_malloc()
        logger.debug("glibc malloc mmap/trim thresholds %s (%d bytes; MLFF_MALLOC_TUNING=0 "
                     "opts out)", "raised" if ok else "left alone", DEFAULT_THRESHOLD)
    return _applied


#: the thresholds while calls are chunked, per 4 bytes of the model's float type
#: (:func:`bound_for_chunks`, bytes: 64 MiB for float32, 128 MiB for float64)
CHUNKED_THRESHOLD = 64 << 20
_bounded = 0  # the threshold applied for chunked calls (0: none yet)


def bound_for_chunks(itemsize: int = 4) -> bool:
    """Lower the thresholds to :data:`CHUNKED_THRESHOLD` x ``itemsize`` / 4 once a call is
    chunked (:mod:`mlff.nn.edge_chunks`; ``itemsize``: bytes per element of the model's float
    type), for the rest of the process (a later call with a larger type raises them to its own).

    With 1 GiB thresholds glibc serves every tensor from the heap and cannot give back the holes
    that the chunks' tensors leave between longer-lived ones. At these thresholds the chunks' own
    tensors (edge chunks of 16,384 edges and atom chunks of 2,048 atoms: a few to a few tens of
    MB, twice that in float64) stay in the heap and are reused, while every whole-system tensor
    is mapped and unmapped. Measured with benchmarks/scale.py's MACE (2 threads, those chunk
    sizes), s per call / peak resident memory: float32, 12,288 water atoms: 256 MiB 16 s /
    6.6 GB, 64 MiB 21 s / 4.4 GB, 32 MiB 25 s / 4.2 GB, 8 MiB 36 s / 3.7 GB; 49,152 atoms:
    256 MiB 101 s / 20.7 GB, 64 MiB 89 s / 10.2 GB (the 256 MiB heap pushed the machine's
    memory, and 98,304 atoms ran out of it). Float64, 12,288 atoms: 1 GiB 24 s / 12.7 GB,
    256 MiB 44 s / 8.5 GB, 128 MiB 45 s / 7.8 GB, 64 MiB 63 s / 7.5 GB (its per-edge radial
    weights of one chunk pass 64 MiB). A budget is a bound on memory first. Only where
    :func:`tune_once` raised them.
    """
    global _bounded
    threshold = CHUNKED_THRESHOLD * max(int(itemsize), 1) // 4
    if not _applied or threshold <= _bounded:
        return _bounded > 0
    if tune_glibc_malloc(threshold):
        _bounded = threshold
    logger.debug("glibc malloc thresholds lowered to %d bytes for chunked calls", threshold)
    return _bounded > 0


def malloc_tuned() -> bool:
    """Whether :func:`tune_glibc_malloc` has succeeded in this process."""
    return _applied
