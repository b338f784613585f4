"""openmm-torch's platform plugins, loaded explicitly (never as a side effect of an import).

``import openmm`` loads every plugin library once. openmm-torch's libraries link against CUDA
libraries (libnvrtc) that become loadable only once torch is imported, so when openmm was
imported before torch they failed to load, and no platform can then run a TorchForce ("does not
support all required kernels"). :func:`load_torch_plugins` loads those that failed; every
builder of a TorchForce calls it first.
"""

from __future__ import annotations

import logging
from typing import Set

log = logging.getLogger(__name__)

_LOADED: Set[str] = set()
#: how often :func:`load_torch_plugins` ran in this process (importing this module: never)
_CALLS = 0
_PREFIX = "Error loading library "


def load_torch_plugins() -> int:
    """Load openmm-torch plugin libraries that failed to load with ``import openmm``.

    Libraries that still fail (for example OpenCL without a driver) are skipped and logged at
    debug level. Idempotent. Returns the number of libraries loaded by this call.
    """
    global _CALLS
    import torch  # noqa: F401 - makes the CUDA runtime libraries loadable first

    import openmm

    _CALLS += 1
    loaded = 0
    for failure in openmm.Platform.getPluginLoadFailures():
        if not failure.startswith(_PREFIX) or "OpenMMTorch" not in failure:
            continue
        path = failure[len(_PREFIX):].split(": ")[0]
        if path in _LOADED:
            continue
        _LOADED.add(path)
        try:
            openmm.Platform.loadPluginLibrary(path)
            loaded += 1
        except Exception as exc:  # noqa: BLE001 - a platform this machine cannot run
            log.debug("openmm-torch plugin %s not loaded: %s", path, exc)
    return loaded
