"""Shared by the ASE and OpenMM adapters: resolve a model argument to a :class:`Potential` on
a device and in a dtype, and map atomic numbers to the model's species indices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from ase.data import chemical_symbols

from mlff.graph import InputError
from mlff.models.potential import Potential

#: The shipped default model, relative to the assets directory (``mlff.assets_path``).
DEFAULT_MODEL = "models/mace_organic_gfn2_ensemble.pt"

ModelLike = Union[str, os.PathLike, Potential]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


def parse_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """``None``, ``"float32"``/``"float64"`` or a torch dtype -> torch dtype (or None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)} or None, got {dtype!r}")
    return _DTYPES[dtype]


def clone_potential(potential: Potential, dtype: Optional[torch.dtype] = None) -> Potential:
    """A fresh Potential rebuilt from ``potential``'s config and weights (optionally in another
    dtype), on the same device and in eval mode.

    Rebuilding (rather than ``copy.deepcopy``, which fails on TorchScript functions inside e3nn
    modules, or ``.to(dtype)``) computes e3nn's constants in the target dtype: casting a float32
    model to float64 would keep constants rounded to 1e-7.
    """
    from mlff.models.registry import build_model, model_type_of

    model = potential.model
    config = dict(model.config.to_dict())
    if dtype is not None:
        config["dtype"] = {v: k for k, v in _DTYPES.items()}[dtype]
    new_model = build_model(model_type_of(model), config)
    new_model.load_state_dict(model.state_dict(), strict=True)
    new = Potential(new_model, std_scale=float(potential.std_scale))
    return new.to(next(model.parameters()).device).eval()


def with_dtype(potential: Potential, dtype: torch.dtype) -> Potential:
    """``potential`` itself when already in ``dtype``, else a rebuilt copy in ``dtype``."""
    if potential.model_dtype == dtype:
        return potential
    return clone_potential(potential, dtype)


def resolve_model(
    model: ModelLike,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
) -> Potential:
    """A model argument -> :class:`Potential` in eval mode on ``device``.

    Args:
        model: a model file path, ``"default"`` (the shipped model) or a :class:`Potential`
            (used as is, not copied, when device and dtype already match).
        device: torch device. dtype: ``None`` keeps the model's dtype.
    """
    if isinstance(model, Potential):
        potential = model
    elif isinstance(model, (str, os.PathLike)):
        from mlff.io import load_model

        path = default_model_path() if str(model) == "default" else Path(model)
        potential = load_model(path)
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


def model_elements(potential: Potential) -> List[int]:
    """The model's atomic numbers in species-index order."""
    return [int(z) for z in potential.model.config.elements]


def species_of(numbers: Sequence[int], potential: Potential) -> torch.Tensor:
    """Species indices ``[N]`` int64 of atomic numbers ``numbers``.

    Raises:
        InputError: naming the unknown element(s) and listing the model's elements.
    """
    elements = model_elements(potential)
    lookup = {z: k for k, z in enumerate(elements)}
    unknown = sorted({int(z) for z in numbers if int(z) not in lookup})
    if unknown:
        raise InputError(
            f"element(s) {[chemical_symbols[z] for z in unknown]} not in the model, which knows "
            f"{[chemical_symbols[z] for z in elements]}; use a model trained on these elements"
        )
    return torch.tensor([lookup[int(z)] for z in numbers], dtype=torch.long)
