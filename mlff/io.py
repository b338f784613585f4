"""The model file format: a versioned dict of plain data, read with ``weights_only=True``.

``{"format": "mlff-model", "version": 2, "model_type": str, "config": dict, "state_dict": dict,
"std_scale": float, "metadata": dict}`` (``std_scale``: the recalibration factor of ensemble
standard deviations, 1.0 for single models). No pickled modules, so loading a model file can never run code. Metadata
records elements, E0s, units and training provenance. Older versions get explicit migrations in
:data:`MIGRATIONS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch
from mlff.models.potential import Potential
from mlff.models.registry import build_model, model_type_of

FORMAT = "mlff-model"
VERSION = 2
#: version -> function upgrading a file dict of that version to version + 1.
MIGRATIONS: Dict[int, Callable[[dict], dict]] = {}


def save_model(
    potential: Potential, path: Union[str, os.PathLike], metadata: Optional[Dict[str, object]] = None
) -> None:
    """Write ``potential`` to ``path`` atomically (temporary file + rename)."""
    model = potential.model
    config = model.config.to_dict()
    data = {
        "format": FORMAT,
        "version": VERSION,
        "model_type": model_type_of(model),
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "std_scale": float(potential.std_scale),
        "metadata": {
            "elements": list(config["elements"]),
            "e0s_eV": list(config["e0s"]),
            "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
            **(metadata or {}),
        },
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    torch.save(data, tmp)
    os.replace(tmp, path)


def load_model(path: Union[str, os.PathLike], device: str = "cpu") -> Potential:
    """Read a model file (``weights_only=True``) and return its :class:`Potential` in eval mode."""
    return load_model_with_metadata(path, device)[0]


def load_model_with_metadata(
    path: Union[str, os.PathLike], device: str = "cpu"
) -> Tuple[Potential, Dict[str, object]]:
    """Like :func:`load_model`, also returning the file's metadata dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    data = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mlff model file (no 'format: {FORMAT}' entry)")
    version = int(data.get("version", 0))
    while version < VERSION:
        if version not in MIGRATIONS:
            raise ValueError(f"{path}: no migration from model file version {version}")
        data = MIGRATIONS[version](data)
        version = int(data["version"])
    if version > VERSION:
        raise ValueError(
            f"{path} has model file version {version}, newer than this mlff ({VERSION}); upgrade mlff"
        )
    model = build_model(data["model_type"], data["config"])
    model.load_state_dict(data["state_dict"], strict=True)
    potential = Potential(model, std_scale=float(data.get("std_scale", 1.0))).to(device)
    potential.eval()
    return potential, dict(data.get("metadata", {}))
