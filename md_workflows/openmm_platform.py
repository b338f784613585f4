"""The OpenMM platform and its properties for a thread count, in one place.

OpenMM's CPU platform honours the ``Threads`` property only for the Context it is given to:
the CPU PME kernel and the inner Contexts of an ``ATMForce`` (created lazily, at the first
force evaluation) take their thread count from ``OPENMM_CPU_THREADS`` or else use every core.
With more than one thread their sums run in a varying order, so the same start minimised to
structures 0.2 nm apart and an ATM window blew up in one run but not in the next (the RBFE
test's intermittent CI failure); parallel windows also oversubscribed the cores. Setting the
variable in this process (read when those objects are created) makes runs repeat bit for bit.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple


def platform_and_properties(name: str, threads: Optional[int] = None,
                            precision: Optional[str] = None) -> Tuple[object, Dict[str, str]]:
    """(``openmm.Platform``, properties) for platform ``name``.

    Args:
        name: ``CPU``, ``CUDA``, ``OpenCL`` or ``Reference``.
        threads: CPU threads (``Threads`` and, for the PME kernel and ATMForce inner contexts,
            ``OPENMM_CPU_THREADS`` of this process); None: OpenMM's default.
        precision: ``Precision`` on CUDA / OpenCL (e.g. ``mixed``); ignored elsewhere.
    """
    import openmm

    platform = openmm.Platform.getPlatformByName(name)
    props: Dict[str, str] = {}
    if name == "CPU" and threads is not None:
        props["Threads"] = str(int(threads))
        os.environ["OPENMM_CPU_THREADS"] = str(int(threads))
    if name in ("CUDA", "OpenCL") and precision is not None:
        props["Precision"] = precision
    return platform, props
