"""Keyword-argument checks shared by the adapters (unknown options are errors, never ignored)."""

from __future__ import annotations

from typing import Mapping, Sequence


def check_kwargs(given: Mapping[str, object], valid: Sequence[str], where: str) -> None:
    """Raise ValueError naming unknown keyword arguments and listing the valid ones."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown keyword argument(s) {unknown}; valid: {sorted(valid)}")
