"""The model file format: a versioned dict of plain data, read with ``weights_only=True``.

``{"format": "mlff-model", "version": 2, "model_type": str, "config": dict, "state_dict": dict,
"std_scale": float, "metadata": dict, "sha256": str}`` (``std_scale``: the recalibration factor
of ensemble standard deviations, 1.0 for single models). No pickled modules, so loading a model
file can never run code. Metadata records elements, E0s, units and training provenance. Older
versions are upgraded on load by the migrations of :mod:`mlff.model_migrations` (1 -> 2); a file
that is not a model, cannot be read or is newer than this mlff is a
:class:`~mlff.errors.ModelFileError`.

Checksum: ``sha256`` (:func:`model_checksum`) covers the model type, the config, ``std_scale``
and every tensor of the state dict (name, dtype, shape and bytes); the metadata (provenance) is
not covered. A file whose content does not match it (flipped bytes in a weight, an edited
config) is a :class:`~mlff.errors.ModelFileError`; a file written before model files had a
checksum loads with a :class:`~mlff.errors.ModelFileWarning` (save it again to add one).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Type, Union

import torch

from mlff.atomic import atomic_path
from mlff.dtypes import DTypeLike, dtype_name, parse_dtype
from mlff.errors import InputError, MLFFError, ModelFileError, ModelFileWarning
from mlff.model_migrations import MIGRATIONS
from mlff.structure_files import first_line
from mlff.models.potential import Potential

def build_model(model_type: str, config: Dict[str, object]) -> torch.nn.Module:
    """:func:`mlff.models.registry.build_model`, imported when first needed: the registry
    imports e3nn, which a command that fails on a bad file never has to load."""
    from mlff.models.registry import build_model as build

    return build(model_type, config)


def model_type_of(model: torch.nn.Module) -> str:
    """:func:`mlff.models.registry.model_type_of` (imported when first needed)."""
    from mlff.models.registry import model_type_of as type_of

    return type_of(model)


#: The shipped default model, relative to the assets directory (:mod:`mlff.assets_path`).
DEFAULT_MODEL = "models/mace_organic_gfn2_ensemble.pt"

#: What every adapter accepts as a model: a model file path, ``"default"`` or a Potential.
ModelLike = Union[str, os.PathLike, Potential]

FORMAT = "mlff-model"
VERSION = 2
#: The file's entry holding :func:`model_checksum` (hex).
CHECKSUM = "sha256"


def model_checksum(data: Mapping[str, object]) -> str:
    """SHA-256 (hex) of a model file dict's model type, config, ``std_scale`` and tensors (each
    by name, dtype, shape and bytes, in name order); metadata is not covered."""
    import hashlib
    import json

    digest = hashlib.sha256()
    head = {"model_type": data["model_type"], "config": data["config"],
            "std_scale": float(data.get("std_scale", 1.0))}  # type: ignore[arg-type]
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    state: Mapping[str, torch.Tensor] = data["state_dict"]  # type: ignore[assignment]
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"\n{name} {t.dtype} {list(state[name].shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checksum_status(data: Mapping[str, object]) -> str:
    """``"ok"``, ``"missing"`` (a file from before checksums) or ``"mismatch"`` (corrupted)."""
    stored = data.get(CHECKSUM)
    if stored is None:
        return "missing"
    return "ok" if stored == model_checksum(data) else "mismatch"


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
            "supported_charges": list(potential.supported_charges),
            "supported_spins": list(potential.supported_spins),
            **(metadata or {}),
        },
    }
    data[CHECKSUM] = model_checksum(data)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_model(path: Union[str, os.PathLike], device: str = "cpu") -> Potential:
    """Read a model file (``weights_only=True``) and return its :class:`Potential` in eval mode."""
    return load_model_with_metadata(path, device)[0]


def load_model_with_metadata(
    path: Union[str, os.PathLike], device: str = "cpu"
) -> Tuple[Potential, Dict[str, object]]:
    """Like :func:`load_model`, also returning the file's metadata dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ModelFileError: not an mlff model file (foreign, truncated, pickled code), content that
            does not match its checksum (corrupted), a version with no migration, or a version
            newer than this mlff; the message says what to do.

    Warns:
        ModelFileWarning: the file has no checksum (written before model files had one).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    data = _read_file(path, device)
    verify_checksum(path, data)
    version = int(data.get("version", 0))
    if version > VERSION:
        raise ModelFileError(
            f"{path} has model file version {version}, newer than this mlff ({VERSION}); upgrade mlff"
        )
    while version < VERSION:
        if version not in MIGRATIONS:
            raise ModelFileError(
                f"{path} has model file version {version}, which this mlff cannot upgrade "
                f"(migrations exist from versions {sorted(MIGRATIONS)}); load it with the mlff "
                "that wrote it and save it again, or retrain it with `mlff train`"
            )
        try:
            data = MIGRATIONS[version](data)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, ModelFileError):
                raise ModelFileError(f"{path}: {exc}") from exc
            raise ModelFileError(
                f"{path}: upgrading model file version {version} failed ({type(exc).__name__}: "
                f"{exc}); the file is damaged or was not written by a released mlff"
            ) from exc
        version = int(data["version"])
    try:
        model = build_model(data["model_type"], data["config"])
        model.load_state_dict(data["state_dict"], strict=True)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelFileError(
            f"{path}: its config and weights do not make a {data.get('model_type')!r} model "
            f"({first_line(exc)}); the file is damaged or was not written by mlff: {_MODEL_FIX}"
        ) from exc
    metadata = dict(data.get("metadata", {}))
    # files from before the domain was recorded: every mlff model so far was neutral singlet
    potential = Potential(model, std_scale=float(data.get("std_scale", 1.0)),
                          supported_charges=metadata.get("supported_charges", (0,)),
                          supported_spins=metadata.get("supported_spins", (1,))).to(device)
    potential.eval()
    return potential, metadata


def verify_checksum(path: Path, data: Mapping[str, object]) -> None:
    """Check a model file dict against its checksum (see the module docstring).

    Raises:
        ModelFileError: the content does not match the checksum it was saved with.
    """
    status = checksum_status(data)
    if status == "missing":
        warnings.warn(f"{path} has no checksum (written by an mlff from before model files had "
                      "one), so corruption cannot be detected; save it again with "
                      "mlff.io.save_model to add one", ModelFileWarning, stacklevel=3)
    elif status == "mismatch":
        raise ModelFileError(
            f"{path} is corrupted: its weights or config do not match the checksum it was saved "
            f"with ({CHECKSUM} {str(data[CHECKSUM])[:16]}..., now {model_checksum(data)[:16]}...); "
            "copy the model file again from its source, or retrain it")


def read_model_file(path: Union[str, os.PathLike]) -> Dict[str, object]:
    """The raw dict of a model file (no migration, no model built, checksum not verified; see
    :func:`checksum_status`), for inspection (``mlff info``).

    Raises:
        FileNotFoundError, ModelFileError: as :func:`load_model_with_metadata`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return _read_file(path)


#: The first bytes of every torch.save file (a zip archive).
_ZIP_MAGIC = b"PK\x03\x04"
#: What a message about a bad model file suggests.
_MODEL_FIX = "use a model file written by `mlff train`, `mlff import` or mlff.io.save_model"
#: The entries every model file has, whatever its version.
_REQUIRED = ("model_type", "config", "state_dict")


def load_plain(path: Path, map_location: Optional[str], error: Type[MLFFError], what: str,
               fix: str) -> object:
    """``torch.load(path, weights_only=True)`` of a file mlff wrote (a model or checkpoint),
    every failure turned into ``error`` with ``fix``: not a torch file (a text file named .pt,
    ...), a truncated or damaged archive, or pickled Python objects (refused, never run, and never
    a suggestion to load them anyway: such a file is not a trusted mlff file)."""
    import pickle
    import re
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise error(f"{path} is not an mlff {what}: it is not a torch.save archive (it starts "
                    f"with {head!r}); {fix}")
    if not zipfile.is_zipfile(path):
        raise error(f"{path} is truncated or damaged (its zip archive is incomplete); {fix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # a global that is not plain data: refused, not run
        names = re.findall(r"GLOBAL ([\w.]+)", str(exc))
        named = f" (it names {names[0]})" if names else ""
        raise error(
            f"{path} cannot be read as an mlff {what}: it is not a trusted mlff {what}. It holds "
            f"pickled Python objects{named}, which could run code when loaded, and mlff never "
            f"loads those; its files hold only tensors and plain data; {fix}") from None
    except Exception as exc:  # torch: RuntimeError (PytorchStreamReader), EOFError, ...
        raise error(f"{path} is damaged and cannot be read as an mlff {what} "
                    f"({first_line(exc)}); {fix}") from None


def _read_file(path: Path, device: str = "cpu") -> Dict[str, object]:
    """The dict in a model file, with its required entries (:func:`load_plain`).

    Raises:
        ModelFileError: not a torch file, truncated or damaged, pickled Python objects, or a
            dict that is not an mlff model; each message says what to do instead.
    """
    data = load_plain(path, device, ModelFileError, "model file", _MODEL_FIX)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is not an mlff model file (no 'format: {FORMAT}' entry); {_MODEL_FIX}")
    missing = [k for k in _REQUIRED if not isinstance(data.get(k), (str, dict))]
    if missing:
        raise ModelFileError(
            f"{path} is damaged or was not written by mlff: it has no {missing} entry; "
            f"{_MODEL_FIX}")
    return data


# --------------------------------------------------------------------------------------------
# a model argument (path, "default" or Potential) -> Potential; used by every adapter
# --------------------------------------------------------------------------------------------


def default_model_path() -> Path:
    """Path of the shipped default model.

    Raises:
        FileNotFoundError: when this installation does not ship it (with the fix).
    """
    from mlff.assets_path import asset

    try:
        return asset(DEFAULT_MODEL)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} is not shipped with this installation of mlff; "
            "pass the path of a model file instead (for example one written by `mlff train`)"
        ) from None


def model_path(model: Union[str, os.PathLike]) -> Path:
    """``"default"`` -> the shipped default model's path; any other path unchanged."""
    return default_model_path() if str(model) == "default" else Path(model)


def clone_potential(potential: Potential, dtype: Optional[torch.dtype] = None) -> Potential:
    """A fresh Potential rebuilt from ``potential``'s config and weights (optionally in another
    dtype), on the same device and in eval mode.

    Rebuilding (rather than ``copy.deepcopy``, which fails on TorchScript functions inside e3nn
    modules, or ``.to(dtype)``) computes e3nn's constants in the target dtype: casting a float32
    model to float64 would keep constants rounded to 1e-7.
    """
    model = potential.model
    config = dict(model.config.to_dict())
    if dtype is not None:
        config["dtype"] = dtype_name(dtype)
    new_model = build_model(model_type_of(model), config)
    new_model.load_state_dict(model.state_dict(), strict=True)
    new = Potential(new_model, std_scale=float(potential.std_scale),
                    supported_charges=potential.supported_charges, supported_spins=potential.supported_spins)
    return new.to(next(model.parameters()).device).eval()


def with_dtype(potential: Potential, dtype: torch.dtype) -> Potential:
    """``potential`` itself when already in ``dtype``, else a rebuilt copy in ``dtype``."""
    if potential.model_dtype == dtype:
        return potential
    return clone_potential(potential, dtype)


def resolve_model(
    model: ModelLike, device: Union[str, torch.device] = "cpu", dtype: DTypeLike = None
) -> Potential:
    """A model argument -> :class:`Potential` in eval mode on ``device``.

    Args:
        model: a model file path, ``"default"`` (the shipped model) or a :class:`Potential`
            (used as is, not copied, when device and dtype already match); a ``.pt2`` package
            from ``mlff export --aot`` gives an :class:`~mlff.export.ExportedPotential`.
        device: torch device. dtype: ``None`` keeps the model's dtype.
    """
    from mlff.export import ExportedPotential, is_exported

    if isinstance(model, ExportedPotential) or (isinstance(model, (str, os.PathLike)) and is_exported(str(model))):
        exported = model if isinstance(model, ExportedPotential) else ExportedPotential(model)
        if parse_dtype(dtype) not in (None, exported.model_dtype):
            raise InputError(f"{exported.path.name} was compiled in {dtype_name(exported.model_dtype)}, not "
                             f"{dtype_name(parse_dtype(dtype))}: export the model again in that dtype "
                             "(mlff export MODEL --aot OUT.pt2 --dtype ...)")
        return exported.to(device)
    if isinstance(model, Potential):
        potential = model
    elif isinstance(model, (str, os.PathLike)):
        potential = load_model(model_path(model))
    else:
        raise TypeError(
            f"model must be a model file path, 'default' or an mlff Potential, got {type(model).__name__}"
        )
    target = parse_dtype(dtype)
    if target is not None:
        potential = with_dtype(potential, target)
    potential = potential.to(torch.device(device))
    potential.eval()
    return potential
