"""Shared fixtures: the one small-model factory of the test suite.

Every test that needs a model builds it here, never downloads one, so the tests do not depend on
the shipped model. Fixtures hand out the factories (``small_potential(...)``,
``saved_model(directory, ...)``) rather than models, so each test picks its options; directory
conftest files build on them (``tests/md_workflows/conftest.py``: ``model_paths``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest
import torch

from mlff.dtypes import DTypeLike, dtype_name, parse_dtype
from mlff.io import save_model
from mlff.models.potential import Potential
from mlff.models.registry import MODELS

def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers) each worker uses one torch thread, so
    two workers share two cores instead of four threads competing for them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


#: GFN2-xTB isolated-atom energies (eV) of H, C, N, O: realistic E0s for the random models.
E0_EV: Dict[int, float] = {1: -10.7, 6: -48.8, 7: -70.9, 8: -102.5}

#: The small MACE: H C N O, 8 channels, l <= 2 harmonics, r_cut 4 A, cheap enough for any test.
SMALL_MACE: Dict[str, object] = dict(
    elements=(1, 6, 7, 8), channels=8, max_L=1, max_ell=2, correlation=2, r_cut=4.0,
    num_interactions=2, num_bessel=6, radial_mlp=(16, 16), readout_mlp=8, avg_num_neighbors=6.0,
)

#: The small TensorNet: H C N O, 16 channels, 2 layers, 8 radial functions, r_cut 4 A.
SMALL_TENSORNET: Dict[str, object] = dict(
    elements=(1, 6, 7, 8), channels=16, num_layers=2, num_rbf=8, r_cut=4.0,
)

#: small-model options per model type
SMALL_MODELS: Dict[str, Dict[str, object]] = {"mace": SMALL_MACE, "tensornet": SMALL_TENSORNET}


def make_small_potential(
    ensemble_size: int = 1, dtype: DTypeLike = "float64", seed: int = 0, model_type: str = "mace",
    **config: object,
) -> Potential:
    """A small :class:`Potential` with random weights (seeded), in eval mode.

    Args:
        ensemble_size: members M (1: a single model).
        dtype: ``"float32"``/``"float64"`` or a torch dtype.
        seed: ``torch.manual_seed`` before the weights are drawn.
        model_type: a registered model type (``mace``, ``tensornet``).
        **config: config fields replacing those of the type's small model
            (:data:`SMALL_MODELS`; ``e0s`` defaults to :data:`E0_EV` of the elements; ``scale``
            in eV, 1.0 by default).
    """
    options = {**SMALL_MODELS[model_type], **config}
    options.setdefault("e0s", tuple(E0_EV[int(z)] for z in options["elements"]))
    torch.manual_seed(seed)
    config_cls, model_cls = MODELS[model_type]
    cfg = config_cls(**options, dtype=dtype_name(parse_dtype(dtype)), ensemble_size=ensemble_size)
    return Potential(model_cls(cfg)).eval()


def write_small_model(
    directory: Path, ensemble_size: int = 1, dtype: DTypeLike = "float64",
    name: Optional[str] = None, **options: object,
) -> Path:
    """Save :func:`make_small_potential` ``(ensemble_size, dtype, **options)`` as a model file
    in ``directory`` and return its path."""
    path = Path(directory) / (name or f"model_m{ensemble_size}_{dtype_name(parse_dtype(dtype))}.pt")
    save_model(make_small_potential(ensemble_size, dtype, **options), path)
    return path


@pytest.fixture(scope="session")
def small_potential() -> Callable[..., Potential]:
    """The factory :func:`make_small_potential`."""
    return make_small_potential


@pytest.fixture(scope="session")
def saved_model() -> Callable[..., Path]:
    """The factory :func:`write_small_model` ``(directory, ensemble_size=1, dtype="float64",
    name=None, **options) -> path``."""
    return write_small_model
