"""Training checkpoints: written atomically (temporary file, fsync, rename), so a kill at any
moment leaves either the previous checkpoint or the new one, never a torn file; they hold model,
optimiser, scheduler and EMA states, the step/epoch counters and every RNG state, so a resumed
run continues exactly where an uninterrupted one would be.

Files hold only tensors and plain Python data and are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from mlff.atomic import atomic_path


def rng_state() -> Dict[str, object]:
    """Python, NumPy and torch (CPU, and CUDA when present) RNG states as plain data."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: Dict[str, object] = {
        # the Mersenne state plus the cached Gaussian (-1 when absent) as one list of numbers
        "python": list(py_internal) + [py_gauss if py_gauss is not None else -1],
        "python_version": py_version,
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, object]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = list(state["python"])  # type: ignore[arg-type]
    gauss = py.pop()
    random.setstate((int(state["python_version"]), tuple(int(x) for x in py),  # type: ignore[arg-type]
                     None if gauss == -1 else gauss))
    npst = state["numpy"]
    assert isinstance(npst, dict)
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # type: ignore[arg-type]


def save_checkpoint(path: Union[str, os.PathLike], state: Dict[str, object]) -> None:
    """Write ``state`` (plus RNG states) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(state)
    payload["rng"] = rng_state()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Union[str, os.PathLike], restore_rng: bool = True,
                    map_location: Optional[str] = "cpu") -> Dict[str, object]:
    """Read a checkpoint (``weights_only=True``) and, by default, restore the RNG states.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: a truncated or damaged file (or one holding pickled objects), with
            the fix.
    """
    from mlff.errors import CheckpointError
    from mlff.io import load_plain

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; nothing to resume from")
    state = load_plain(path, map_location, CheckpointError, "checkpoint",
                       f"start again without --resume into a new 'out' (or move {path.parent} away)")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an mlff training checkpoint (it holds a "
                              f"{type(state).__name__}); start again without --resume")
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state
