"""Model registry: model type name -> (config dataclass, module class)."""

from __future__ import annotations

from typing import Dict, Tuple, Type

from torch import nn

from mlff.models.mace import MACE, MACEConfig
from mlff.models.tensornet import TensorNet, TensorNetConfig

MODELS: Dict[str, Tuple[type, Type[nn.Module]]] = {
    "mace": (MACEConfig, MACE),
    "tensornet": (TensorNetConfig, TensorNet),
}


def build_model(model_type: str, config: Dict[str, object]) -> nn.Module:
    """Build an energy model from its type name and config dict (validated by the dataclass)."""
    if model_type not in MODELS:
        raise ValueError(f"unknown model type {model_type!r}; valid types: {sorted(MODELS)}")
    config_cls, model_cls = MODELS[model_type]
    return model_cls(config_cls.from_dict(dict(config)))


def model_type_of(model: nn.Module) -> str:
    for name, (_, cls) in MODELS.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered model; known: {sorted(MODELS)}")
