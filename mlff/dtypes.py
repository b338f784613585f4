"""The one map between dtype names (as in configs, YAML and the CLI) and torch dtypes."""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch

#: dtype name -> torch dtype; the only dtypes a model may have.
DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

DTypeLike = Union[None, str, torch.dtype]


def parse_dtype(dtype: DTypeLike) -> Optional[torch.dtype]:
    """``None``, ``"float32"``/``"float64"`` or a torch dtype -> torch dtype (or None).

    Raises:
        ValueError: any other dtype, naming the valid ones.
    """
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)} or None, got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """torch dtype -> its name in :data:`DTYPES` (``torch.float32`` -> ``"float32"``)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype}")
